"""What a study runs and where: its experiments, the data and models they share, each trial's resources.

`plan_experiments` builds one sampled configuration per branch of every space into a `TrialConfig`, so a
bad `--space` fails before anything loads; `prepare_inputs` loads data and checks models once in the
driver, so a missing one stops the study before Ray starts.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from search_spaces import (
    coverage_points,
    define_by_run,
    setting_keys,
    space_domains,
    space_upper,
)
from search_spaces.overrides import Override, route
from study.config import StudyConfig, experiment_name
from study.dashboard import ClusterInfo
from study.prepare import Prepared, prepare
from trainables.methods import get_strategy


@dataclass
class Experiment:
    """One (method, config) search."""

    method: str
    data_config: str
    base: dict[str, Any]
    """The flat fixed part of every trial's config."""
    overrides: tuple[Override, ...]
    points: list[dict[str, Any]]
    """Enqueued before TPE samples: one trial per group (f, prompt style)."""
    trials: int
    max_iterations: int
    """The most evaluations (reports) a trial can make: ASHA's max_t."""

    @property
    def name(self) -> str:
        return experiment_name(self.method, self.data_config)


def upper_value(overrides: Sequence[Override], key: str, default: int) -> int:
    """The largest value `key` can take under the overrides."""
    for o in overrides:
        if o.key == key:
            return int(o.value if o.kind == "fixed" else max(o.choices) if o.kind == "choices" else o.high)
    return int(default)


def _pinned_variants(overrides: tuple[Override, ...]):
    """The overrides, then copies with one choice or one end of one range pinned: so every value a user
    put in a `--space` is built into a trial config before the study starts, not only a sampled one."""
    yield overrides
    for i, o in enumerate(overrides):
        values = o.choices if o.kind == "choices" else (o.low, o.high) if o.kind == "range" else ()
        for value in values:
            yield (*overrides[:i], dataclasses.replace(o, kind="fixed", value=value), *overrides[i + 1 :])


def _every_branch(method: str, overrides: tuple[Override, ...]) -> list[dict[str, Any]]:
    """One point per branch of the space, even a branch the overrides leave no enqueued point on: with
    `--space strategy/f=[nope]` no coverage point survives, yet the stacked branch must still be built with
    f=nope (and refused) before Ray starts. The overrides answer the keys they name."""
    named = {o.key for o in overrides}
    branches = [{k: v for k, v in point.items() if k not in named} for point in coverage_points(method)]
    return [dict(b) for b in dict.fromkeys(tuple(sorted(b.items())) for b in branches) if b]


def plan_experiments(config: StudyConfig) -> list[Experiment]:
    """Every experiment's base config, overrides and coverage; each branch is sampled once and validated.

    Raises:
        ValueError: naming the method, for an override or setting its trial config rejects.
    """
    from trainables.trial_config import TrialConfig

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # its studies are checks: "study created" is noise
    bases = {
        (m, c): base_trial(config, method=m, model="<model>", data_config=c) for m, c in config.experiments()
    }
    routed = route(
        study_overrides(config),
        {m: setting_keys(m, bases[(m, config.data.configs[0])]) for m in config.search.methods},
    )
    experiments = []
    for (method, data_config), base in bases.items():
        overrides = routed[method]
        points = coverage_points(method, overrides)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=config.search.seed))
        for variant in _pinned_variants(overrides):
            for point in [{}, *_every_branch(method, overrides)]:
                if point:
                    study.enqueue_trial(point)
                flat = define_by_run(method, base, variant)(study.ask())
                try:
                    TrialConfig.from_dict(flat)
                except (ValueError, TypeError) as err:
                    raise ValueError(f"method {method}: {err}") from None
        epochs = largest(method, "train/epochs", base, overrides)
        evals = largest(method, "train/evals_per_epoch", base, overrides)
        trials = max(config.search.trials, len(points))
        experiments.append(Experiment(method, data_config, base, overrides, points, trials, epochs * evals))
    return experiments


def largest(method: str, key: str, base: dict[str, Any], overrides: Sequence[Override]) -> int:
    """The largest value a trial of `method` can have for the loop setting `key` (`train/epochs`): the
    overrides', else the top of the space's range, else `TrainConfig`'s default."""
    from trainables.training.train_config import TrainConfig

    default = space_upper(method, key, base) or TrainConfig.__dataclass_fields__[key.split("/")[1]].default
    return upper_value(overrides, key, default)


def base_trial(config: StudyConfig, *, method: str, model: str, data_config: str) -> dict[str, Any]:
    """The part of a trial's flat config no setting gives: its method, base model, data config and seed."""
    return {"method": method, "model": model, "data_config": data_config, "train/seed": config.search.seed}


def study_overrides(config: StudyConfig) -> tuple[Override, ...]:
    """The trials' settings of this study: the preset's (those that apply to its methods), the user's over
    them, with the search metric among those dev evaluations compute."""
    keys = {m: setting_keys(m, {"train/seed": config.search.seed}) for m in config.search.methods}
    overrides = with_preset_space(config.preset_overrides, config.overrides, keys=keys)
    return with_bounds(with_dev_metric(overrides, config.search.metric), methods=config.search.methods)


def default_overrides(config: StudyConfig) -> tuple[Override, ...]:
    """Every trial setting of every method of the study that no setting gives, as the code gives it (origin
    `default`): the search space's range or choices, else the trial dataclasses' value. With
    `study_overrides`, the whole space of the study (what `study.yaml` writes)."""
    from trainables.trial_config import default_settings

    domains = {m: space_domains(m, {"train/seed": config.search.seed}) for m in config.search.methods}
    given = route(
        study_overrides(config), {m: setting_keys(m, {"train/seed": config.search.seed}) for m in domains}
    )
    defaults = []
    for method in config.search.methods:
        fixed = {
            k: Override(k, "fixed", value=v)
            for k, v in default_settings(method).items()
            if k not in domains[method]
        }
        taken = {o.key for o in given[method]} | {"train/seed"}  # the seed is the study's (search/seed)
        for key, o in {**domains[method], **fixed}.items():
            if key not in taken:
                defaults.append(dataclasses.replace(o, method=method, origin="default"))
    return tuple(defaults)


def with_bounds(overrides: Sequence[Override], *, methods: Sequence[str]) -> tuple[Override, ...]:
    """A preset's value of a setting a method's record bounds (`Strategy.bounded_by`) at most the largest
    value its bound can take: stacked LoRA's stage 1 trains no more epochs than its trials can, so
    `--set train/epochs=1` cuts both. A value the user gives under the setting's own key stays."""
    out = list(overrides)
    for method in methods:
        for key, bound in get_strategy(method).bounded_by.items():
            limits = [o for o in out if o.key == bound and o.method in (None, method)]
            if not limits:
                continue
            limit = upper_value(sorted(limits, key=lambda o: o.method is None)[:1], bound, 0)
            for i, o in enumerate(out):
                mine = o.key == key and o.method in (None, method) and o.kind == "fixed"
                if mine and o.origin.startswith("preset") and o.value > limit:
                    out[i] = dataclasses.replace(o, value=limit, origin=f"{o.origin}, at most {bound}")
    return tuple(out)


def with_dev_metric(overrides: Sequence[Override], metric: str) -> tuple[Override, ...]:
    """`overrides` with the search metric among the metrics dev evaluations compute (a preset may compute
    accuracy alone on dev, as the tiny one does, to save time)."""
    name = metric.removeprefix("dev/")
    fixed = [o for o in overrides if o.key == "train/eval/metrics" and o.kind == "fixed"]
    for o in fixed:
        metrics = tuple(str(o.value).split(",")) if isinstance(o.value, str) else tuple(o.value)
        if metric.startswith("dev/") and name not in metrics:
            overrides = [
                dataclasses.replace(x, value=",".join((*metrics, name))) if x is o else x for x in overrides
            ]
    return tuple(overrides)


def with_preset_space(
    preset: Sequence[Override], overrides: Sequence[Override], *, keys: Mapping[str, set[str]]
) -> tuple[Override, ...]:
    """The preset's settings, then the user's, for the methods of `keys` (method -> the `strategy/...` keys
    it has, `search_spaces.setting_keys`). A preset's setting is a default, so it is dropped where it does
    not apply: one for a method not in the study, or an unprefixed `strategy/...` one for a key no method of
    the study has. A
    user's setting of the same key and method (or of the same key for every method) replaces the preset's."""
    sampled = set().union(*keys.values()) if keys else set()

    def applies(o: Override) -> bool:
        if o.method is not None:
            return o.method in keys
        return o.key in sampled or o.key.startswith("train/")

    given = {(o.key, o.method) for o in overrides}
    kept = [o for o in preset if applies(o) and (o.key, o.method) not in given and (o.key, None) not in given]
    return (*kept, *overrides)


def prepare_inputs(config: StudyConfig, *, data: Mapping[str, Any] | None = None) -> Prepared:
    """Data and base models, once, in the driver; a missing one is one line naming it and the tiny preset.

    `data` overrides DataConfig fields after the study's (`study.confirm` asks for the whole test
    split with `{"test_size": None}`).

    Raises:
        ValueError: when the data or a model cannot be had (hub, local cache, `--model`, `--data-dir`).
    """
    from trainables.training.models import ModelError, load_tokenizer

    hint = "" if config.preset == "tiny" else "; or run the tiny study: --preset tiny"
    try:
        prepared = prepare(config, data=data)
        for name in sorted(set(prepared.models.values())):
            load_tokenizer(name)  # a few kB: proves the model can be had before any trial needs it
    except (ValueError, OSError, ModelError) as err:
        message = str(err).strip().splitlines()[0]
        raise ValueError(message if "--preset tiny" in message else message + hint) from None
    return prepared


def trial_resources(config: StudyConfig, method: str, cluster: ClusterInfo) -> dict[str, float]:
    """CPUs and GPU share of one trial of `method` on `cluster`.

    Raises:
        ValueError: when a local cluster has no GPU for `--gpus-per-trial`, or a method with a quantised
            base (qlora) has neither a GPU nor a working bitsandbytes CPU path.
    """
    strategy = get_strategy(method)
    cluster_gpus = cluster.resources.get("GPU", 0)
    gpus = config.resources.gpus_per_trial
    if gpus is None:
        gpus = strategy.gpu_share if cluster_gpus > 0 else 0.0
    if gpus > 0 and cluster_gpus == 0 and cluster.started_here:
        raise ValueError(f"--gpus-per-trial {gpus:g} but this machine has no GPU Ray can use")
    if strategy.quantized_base and gpus == 0:
        _check_cpu_quantization(method)
    return {"cpu": config.resources.cpus_per_trial or 1.0, "gpu": gpus}


def _check_cpu_quantization(method: str) -> None:
    """A quantised base without a GPU needs bitsandbytes' CPU int8 path; try it on one small layer."""
    try:
        import bitsandbytes as bnb
        import torch

        layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        layer.load_state_dict(torch.nn.Linear(64, 64).state_dict())
        layer(torch.randn(2, 64, requires_grad=True)).sum().backward()
    except Exception as err:  # any failure means there is no CPU path
        raise ValueError(
            f"{method} needs a GPU (--gpus-per-trial > 0 on a cluster with GPUs) or bitsandbytes' CPU backend, "
            f"which failed here: {str(err).splitlines()[0] if str(err) else type(err).__name__}"
        ) from None


def concurrency(config: StudyConfig, resources: Mapping[str, float], cluster: ClusterInfo) -> int:
    """`--max-concurrent`, or as many trials as the cluster's CPUs (and GPUs) hold at once."""
    if config.resources.max_concurrent:
        return config.resources.max_concurrent
    fit = cluster.resources.get("CPU", 1) / resources["cpu"]
    if resources["gpu"]:
        fit = min(fit, cluster.resources.get("GPU", 0) / resources["gpu"])
    return max(1, math.floor(fit + 1e-9))

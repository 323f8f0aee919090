"""A trial's first steps at its real shapes, measured: peak memory and seconds of training and evaluation.

`probe_trial` builds the trial's model as `run_trial` does (a first stage is measured, not trained, and
nothing is cached), trains a few optimiser steps on the longest examples of the training split (so the
peak is the one the trial will meet) and generates and scores the evaluation batch holding the longest
dev inputs, every sequence to `max_new_tokens`. Its figures are upper bounds: the trial's other batches
are shorter, and its generations may stop early.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trainables.data.batching import collate, encode_pairs, token_budget_batches
from trainables.data.prompts import format_example, usable
from trainables.methods import StrategyContext, get_strategy
from trainables.scoring.metrics import perplexity
from trainables.training.loop import eval_settings, fit, seed_everything
from trainables.training.memory import PeakMemory, TrialMemory, free_memory
from trainables.training.models import load_model, load_tokenizer, pick_device
from trainables.training.train_config import TrainConfig
from trainables.trial_config import TrialConfig


@dataclass
class Probe:
    """What one phase of a trial measured (the trial's training, or a first stage's)."""

    phase: str
    """`trial`, or the name of a first stage (`stage 1`)."""
    batch_size: int
    """Examples per optimiser step measured (the largest the search can sample)."""
    micro_batch_size: int
    """Examples per forward / backward pass it ended at (smaller than planned only after an out-of-memory)."""
    steps_measured: int
    """Optimiser steps timed, on the longest examples."""
    train_peak_mb: float
    """Peak memory of those steps (GPU: the allocator's reserve; CPU: the process's resident memory)."""
    train_base_mb: float
    """Memory before them (the model, the process): the part that does not grow with the micro-batch."""
    s_per_step: float
    """Seconds per optimiser step (the median after the first, which pays for warming up)."""
    steps_per_epoch: int
    """Optimiser steps in one pass over the phase's training examples."""
    epochs: int
    """Passes over them."""
    eval_peak_mb: float | None = None
    """Peak memory of one evaluation batch (generation and perplexity); None for a first stage."""
    s_per_eval_batch: float | None = None
    """Seconds of that batch, every sequence generated to max_new_tokens."""
    dev_batches: int | None = None
    """Evaluation batches in the dev split (under the evaluation's token budget)."""
    test_batches: int | None = None
    """Evaluation batches in the test split."""


def probe_trial(
    trial: TrialConfig,
    *,
    splits: Sequence[Any],
    code_records: Sequence[Any] = (),
    steps: int = 3,
    evaluate: bool = True,
    device: torch.device | None = None,
    log: Callable[[str], None] = print,
) -> list[Probe]:
    """Measure `trial` (and its first stage, if its method has one): a `Probe` per phase, first stage first.

    Args:
        trial: the trial to measure, at the batch size it should be measured at.
        splits: the data (train / dev / test) of every GSM8K config the study runs: the longest examples
            of all are measured.
        code_records: the coding dataset of a method with a first stage.
        steps: optimiser steps per phase (the first is not timed when there are more).
        evaluate: also measure one evaluation batch.
    """
    device = device or pick_device()
    seed_everything(trial.train.seed)
    strategy = get_strategy(trial.method)
    tokenizer = load_tokenizer(trial.model)
    probes: list[Probe] = []
    free_memory(device)
    model = load_model(trial.model, device=device, **strategy.load_kwargs(trial.strategy))

    def measure_stage(stage_model: torch.nn.Module, pairs: Sequence[tuple[str, str]], config) -> dict:
        probes.append(_train_probe(stage_model, tokenizer, pairs, config, "stage 1", steps, log))
        return {"loss": float("nan"), "losses": []}

    context = StrategyContext(
        tokenizer=tokenizer,
        model_name=trial.model,
        train=trial.train,
        fit=measure_stage,
        code_records=list(code_records),
        cache_dir=None,  # a measured first stage is not a trained one: it must never reach the cache
        log=log,
    )
    try:
        model = strategy.apply(model, trial.strategy, context)
        style = trial.train.prompt_style
        train = [format_example(r, style) for s in splits for r in s.train if usable(r, style)]
        probe = _train_probe(model, tokenizer, train, trial.train, "trial", steps, log)
        if evaluate:
            free_memory(device)  # what the training steps held is not evaluation's peak
            _eval_probe(probe, model, tokenizer, splits, trial.train)
        probes.append(probe)
        return probes
    finally:
        del model, context
        free_memory(device)


def _longest(
    tokenizer, pairs: Sequence[tuple[str, str]], config: TrainConfig, n: int
) -> list[tuple[str, str]]:
    encoded = encode_pairs(
        tokenizer, pairs, max_input_tokens=config.max_input_tokens, max_target_tokens=config.max_target_tokens
    )
    order = sorted(
        range(len(pairs)), key=lambda i: -(len(encoded[i]["input_ids"]) + len(encoded[i]["labels"]))
    )
    return [pairs[i] for i in order[:n]]


def _train_probe(model, tokenizer, pairs, config: TrainConfig, phase: str, steps: int, log) -> Probe:
    """`steps` optimiser steps of the loop on the longest `steps x batch_size` examples, timed per step."""
    if not pairs:
        raise ValueError(f"{phase}: no training examples to measure")
    longest = _longest(tokenizer, pairs, config, steps * config.batch_size)
    measured = dataclasses.replace(
        config, epochs=1, evals_per_epoch=min(steps, len(longest)), group_by_length=False, warmup_ratio=0.0
    )
    marks = [time.perf_counter()]
    memory = TrialMemory(log=log)
    reports: list[dict] = []

    def on_eval(metrics: dict) -> None:
        marks.append(time.perf_counter())
        reports.append(metrics)

    device = next(model.parameters()).device
    free_memory(device)
    with PeakMemory(device) as peak:
        base_mb = peak.mb if device.type == "cpu" else torch.cuda.memory_reserved(device) / 2**20
        taken = fit(model, tokenizer, longest, measured, on_eval=on_eval, memory=memory, log=log)
    durations = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    timed = durations[1:] or durations
    micro = reports[-1]["train/micro_batch_size"] if reports else config.batch_size
    return Probe(
        phase=phase,
        batch_size=config.batch_size,
        micro_batch_size=micro,
        steps_measured=taken,
        train_peak_mb=peak.mb,
        train_base_mb=base_mb,
        s_per_step=statistics.median(timed) if timed else float("nan"),
        steps_per_epoch=-(-len(pairs) // config.batch_size),
        epochs=config.epochs,
    )


def _eval_batches(tokenizer, records, config: TrainConfig) -> list[list[str]]:
    """The inputs of each evaluation batch of `records`, as the trial's evaluation forms them."""
    settings = eval_settings(config)
    style = config.prompt_style
    inputs = [format_example(r, style)[0] for r in records if usable(r, style)]
    encoded = tokenizer(inputs, truncation=True, max_length=config.max_input_tokens)["input_ids"]
    groups = token_budget_batches(
        [(len(ids), settings.max_new_tokens) for ids in encoded],
        max_rows=settings.batch_size,
        max_tokens=settings.batch_tokens,
    )
    return [[inputs[i] for i in group] for group in groups]


@torch.no_grad()
def _eval_probe(probe: Probe, model, tokenizer, splits, config: TrainConfig) -> None:
    """Generate the batch of the longest dev inputs to max_new_tokens, then score its perplexity."""
    style, settings = config.prompt_style, eval_settings(config)
    dev = [r for s in splits for r in s.dev]
    batches = _eval_batches(tokenizer, dev, config)
    pair_of = {pair[0]: pair for pair in (format_example(r, style) for r in dev if usable(r, style))}
    longest = max(batches, key=lambda b: max(len(text) for text in b))
    device = next(model.parameters()).device
    model.eval()
    start = time.perf_counter()
    with PeakMemory(device) as peak:
        encoded = tokenizer(longest, truncation=True, max_length=config.max_input_tokens)["input_ids"]
        batch = collate(
            [{"input_ids": ids, "labels": [0]} for ids in encoded], tokenizer.pad_token_id, device
        )
        model.generate(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            max_new_tokens=settings.max_new_tokens,
            min_new_tokens=settings.max_new_tokens,  # the worst case: nothing stops early
            num_beams=settings.num_beams,
            do_sample=False,
        )
        pairs = [pair_of[text] for text in longest]
        examples = encode_pairs(
            tokenizer,
            pairs,
            max_input_tokens=config.max_input_tokens,
            max_target_tokens=config.max_target_tokens,
        )
        perplexity(model, [collate(examples, tokenizer.pad_token_id, device)])
    probe.eval_peak_mb = peak.mb
    probe.s_per_eval_batch = time.perf_counter() - start
    probe.dev_batches = len(batches)
    probe.test_batches = len(_eval_batches(tokenizer, [r for s in splits[:1] for r in s.test], config))

"""Presets: named lists of settings in the one override syntax (`docs/configuration.md`), nothing else.

A preset sets values in the study's config tree, exactly as `--set KEY=SPEC` lines would, under the values
a settings file or a flag gives: `data/...`, `model/...`, `scheduler/...` for the study, and `train/...`,
`train/eval/...`, `[method:]strategy/...` for its trials (a fixed value, or a searched range or list that
narrows the method's own search space). A key it leaves out keeps its one default: the search space's
range, the config dataclass's field. A preset entry that does not apply to a study (a method not in it, a
`strategy/` key no method of the study has) is dropped, and a user's value for the same key replaces it.

- `tiny`: the embedded generated problems and a small T5 built locally (its shape is `model/tiny_size`, a
  key of `trainables.training.models.TINY_SIZES`); minutes on a 2-core CPU.
- `small`: T5-small on a GSM8K subset; a quick check on one GPU.
- `paper`: T5-small (QLoRA's record moves it to T5-base) on the full GSM8K, as in the study reproduced.
"""

from __future__ import annotations

from typing import Any

TINY = (
    "model/name=tiny",
    "model/tiny_size=tiny",
    # For a locally built T5: prefix-LM pretraining (`problems` generated, TrainConfig fields). Not grouped
    # by length: batches of one task each (the drills are the short ones) left the base at loss 2.38
    # instead of 1.83, and the adapters on it did not learn.
    "model/pretrain/problems=2000",
    "model/pretrain/epochs=2",
    "model/pretrain/lr=3e-3",
    "model/pretrain/batch_size=64",
    "model/pretrain/max_input_tokens=128",
    "model/pretrain/max_target_tokens=128",
    "data/source=embedded",
    "data/train_size=2000",
    "data/dev_size=60",
    "data/test_size=300",
    "data/min_steps=1",
    "data/max_steps=2",
    "data/max_operand=9",
    # not gsm8k-programs: with every method on the code style that would be the math task itself
    "data/code_dataset=solution-programs",
    "scheduler/name=none",  # two trials per experiment leave ASHA nothing to choose; a stopped one has no test
    # The same budget rules for every method: four epochs (what the README study's ten minutes allow; a
    # fifth added 2-4 points of dev accuracy) and one batch size; full fine-tuning searches its own
    # learning rates, the adapters theirs.
    "train/epochs=4",
    "train/batch_size=32",  # 1.4x the examples/s of 16 on one core, and as accurate
    "train/max_input_tokens=128",
    "train/max_target_tokens=128",
    "train/group_by_length=true",  # 18% off a tiny trial's training time, less padding per batch
    # every method on the code style; LoRA + CoT keeps its search over the styles
    "train/prompt_style=code",
    "lora_cot:train/prompt_style=[answer_only,breakdown,no_breakdown,code]",
    "train/eval/batch_size=100",
    "train/eval/max_new_tokens=80",  # the longest target (breakdown, two steps) is 75 tokens
    "train/eval/metrics=accuracy",  # dev: what trials are compared on; every metric on test
    # no adapter dropout: dropout masks (T5's and the adapter's) took a quarter of a LoRA trial's CPU time
    "strategy/dropout=0",
    "full:train/lr=1e-3..3e-3",
    # Adapters: rank 4 on all six projections is 8.2% of the 0.28M base (rank 8 would be 16%, no longer
    # a low-rank update of it). Alpha 16 learned from 3e-3 to 1e-2 (best near 6e-3); 1.5e-2 collapsed, as
    # did alpha 32 at 1e-2.
    "train/lr=4e-3..1e-2",
    "strategy/target_modules=q,k,v,o,wi,wo",
    "strategy/r=4",
    "strategy/alpha=16",
    "strategy/r2=4",
    "strategy/alpha2=16",
    # One stage-1 setting for every stacked trial; f against the identity (the linear stacking baseline).
    "stacked:strategy/baseline=stacked",
    "stacked:strategy/f=[identity,relu]",
    # LoRA's variants: plain LoRA unless a study asks for them (`--set strategy/variant=[...]`: a variant
    # point per trial would triple the README study), with ranges that fit this base where one is asked for.
    # LoRA+ at ratio 16 would step B at 16x a learning rate that already collapses above 1e-2; PiSSA's
    # exact SVD of a 64 x 256 matrix takes milliseconds. sin's gain is 1 / sqrt(64..256) here, so omega 10..40
    # gives a slope at zero of 0.6..5; at omega 92 a sin trial collapsed (2% test, docs/running.md's sin study)
    # where 12 and 29 learned (44%, 49%).
    "strategy/variant=lora",
    "strategy/loraplus_lr_ratio=2..8",
    "strategy/pissa_niter=0",
    "stacked:strategy/omega=10..40",
    "stacked:strategy/r1=4",
    "stacked:strategy/alpha1=16",
    "stacked:strategy/stage1_lr=1e-2",
    "stacked:strategy/stage1_epochs=1",
    "stacked:strategy/stage1_batch_size=32",  # the batch every tiny trial trains with
)
"""The tiny preset, measured in BENCHMARKS.md."""

SMALL = (
    "model/name=t5-small",
    "data/train_size=2000",
    "data/dev_size=200",
    "data/test_size=300",
    "train/epochs=1..2",
    "train/max_input_tokens=256",
    "train/max_target_tokens=256",
    "train/eval/batch_size=64",
    "train/eval/max_new_tokens=192",
    "stacked:strategy/stage1_epochs=1",
)

PAPER = (
    "model/name=t5-small",
    "train/max_input_tokens=256",
    "train/max_target_tokens=256",
    "train/eval/batch_size=64",
    "train/eval/max_new_tokens=256",
    "stacked:strategy/stage1_epochs=3",
)
"""The study reproduced: full GSM8K (every size its default), the search spaces' own ranges."""

PRESETS: dict[str, tuple[str, ...]] = {"tiny": TINY, "small": SMALL, "paper": PAPER}
PRESET_NAMES = tuple(PRESETS)


def preset_settings(name: str) -> tuple[str, ...]:
    """The settings of the preset called `name`, in the override syntax.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    return PRESETS[name]


def preset_values(name: str, *, under: str = "") -> dict[str, Any]:
    """Key -> the fixed value the preset called `name` gives it, read as its type, for the keys under
    `under` (`data/`: `{"train_size": 2000, ...}`) or every key; searched values and a method's own
    settings are left out, as are keys it leaves to their defaults."""
    from search_spaces.overrides import is_search_spec, read_scalar

    values = {}
    for text in preset_settings(name):
        key, _, spec = text.partition("=")
        if key.startswith(under) and ":" not in key and not is_search_spec(spec):
            values[key.removeprefix(under)] = read_scalar(spec, source=f"preset {name} {key}")
    return values

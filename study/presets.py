"""Presets: the model, data and loop settings a study starts from before the search varies them.

- `tiny`: the embedded generated problems and a small T5 built locally (its shape is `tiny_size`, a key of
  `trainables.training.models.TINY_SIZES`, which gives the parameter counts); minutes on a 2-core CPU.
- `small`: T5-small on a GSM8K subset; a quick check on one GPU.
- `paper`: T5-small (T5-base for QLoRA) on the full GSM8K, as in the study being reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PRESET_NAMES = ("tiny", "small", "paper")


@dataclass(frozen=True)
class Preset:
    """Defaults of one preset."""

    name: str
    """tiny, small or paper."""
    model: str
    """Base model (hub name or path; `tiny` is built locally)."""
    qlora_model: str
    """Base model of the qlora method (the study uses T5-base in 8-bit)."""
    data_source: str
    """embedded, or auto (local data dir when given, else the hub)."""
    tiny_size: str = "tiny"
    """Shape of the locally built T5 when `model` is `tiny` (see `trainables.training.models.TINY_SIZES`)."""
    code_dataset: str = "mbpp"
    """Stacked LoRA's stage-1 coding dataset: mbpp, gsm8k-programs (question -> program) or
    solution-programs (solution -> program), both derived from the math train split."""
    pretrain: dict[str, Any] = field(default_factory=dict)
    """For a locally built T5: prefix-LM pretraining settings (`problems` generated, TrainConfig fields)."""
    data: dict[str, Any] = field(default_factory=dict)
    """DataConfig fields: subset sizes, generator difficulty."""
    train: dict[str, Any] = field(default_factory=dict)
    """TrainConfig fields the search does not vary."""
    eval: dict[str, Any] = field(default_factory=dict)
    """EvalSettings fields."""
    stacked: dict[str, Any] = field(default_factory=dict)
    """Stacked LoRA settings the search does not vary (stage-1 epochs)."""
    scheduler: str = "asha"
    """The study's default scheduler: asha (early stopping), or none (every trial runs to its end)."""
    space: tuple[str, ...] = ()
    """Search-space overrides in `--space` syntax that fit this preset's model (a user's `--space` for the
    same key and method wins); the real study's ranges live in `search_spaces`."""


TINY_SPACE = (
    # The same budget rules for every method: four epochs (what the README study's ten minutes allow; a
    # fifth added 2-4 points of dev accuracy) and one batch size; full fine-tuning searches its own
    # learning rates, the adapters theirs.
    "train/epochs=4",
    "train/batch_size=32",  # 1.4x the examples/s of 16 on one core, and as accurate
    # no adapter dropout: dropout masks (T5's and the adapter's) took a quarter of a LoRA trial's CPU time
    "strategy/dropout=0",
    "full:train/lr=1e-3..3e-3",
    # Adapters: rank 4 on all six projections is 8.2% of the 0.28M base (rank 8 would be 16%, no longer
    # a low-rank update of it). Alpha 16 learned from 3e-3 to 1e-2 (best near 6e-3); 1.5e-2 collapsed, as
    # did alpha 32 at 1e-2.
    # (A key without a method prefix reaches every method whose space samples it.)
    "train/lr=4e-3..1e-2",
    "strategy/target_modules=q,k,v,o,wi,wo",
    "strategy/r=4",
    "strategy/alpha=16",
    "strategy/r2=4",
    "strategy/alpha2=16",
    # One stage-1 setting for every stacked trial; f against the identity (the linear stacking baseline).
    "stacked:strategy/baseline=stacked",
    "stacked:strategy/f=[identity,relu]",
    # LoRA's variants: plain LoRA unless a study asks for them (`--space strategy/variant=[...]`: a variant
    # point per trial would triple the README study), with ranges that fit this base where one is asked for.
    # LoRA+ at ratio 16 would step B at 16x a learning rate that already collapses above 1e-2; PiSSA's
    # exact SVD of a 64 x 256 matrix takes milliseconds. sin's gain is 1 / sqrt(64..256) here, so omega 10..100
    # gives a slope at zero of 0.6..12 (BENCHMARKS.md, "LoRA variants and sin on the tiny base").
    "strategy/variant=lora",
    "strategy/loraplus_lr_ratio=2..8",
    "strategy/pissa_niter=0",
    "stacked:strategy/omega=10..100",
    "stacked:strategy/r1=4",
    "stacked:strategy/alpha1=16",
    "stacked:strategy/stage1_lr=1e-2",
)
"""The tiny preset's narrowing of the search spaces (`--space` syntax), measured in BENCHMARKS.md."""

PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        model="tiny",
        qlora_model="tiny",
        data_source="embedded",
        tiny_size="tiny",
        # not gsm8k-programs: with every method on the code style that would be the math task itself
        code_dataset="solution-programs",
        pretrain={
            "problems": 2000,
            "epochs": 2,
            "lr": 3e-3,
            "batch_size": 64,
            "max_input_tokens": 128,
            "max_target_tokens": 128,
            # not grouped by length: batches of one task each (the drills are the short ones) left the base
            # at loss 2.38 instead of 1.83, and the adapters on it did not learn
        },
        data={
            "train_size": 2000,
            "dev_size": 60,
            "test_size": 300,
            "min_steps": 1,
            "max_steps": 2,
            "max_operand": 9,
        },
        train={
            "epochs": 4,
            "batch_size": 32,
            "max_input_tokens": 128,
            "max_target_tokens": 128,
            "prompt_style": "code",
            "group_by_length": True,  # 18% off a tiny trial's training time, less padding per batch
        },
        eval={
            "batch_size": 100,
            "max_new_tokens": 80,  # the longest target (breakdown, two steps) is 75 tokens
            "metrics": ("accuracy",),  # dev: what trials are compared on; every metric on test
        },
        stacked={"stage1_epochs": 1},
        scheduler="none",  # two trials per experiment leave ASHA nothing to choose; a stopped one has no test
        space=TINY_SPACE,
    ),
    "small": Preset(
        name="small",
        model="t5-small",
        qlora_model="t5-base",
        data_source="auto",
        data={"train_size": 2000, "dev_size": 200, "test_size": 300},
        train={"epochs": 2, "batch_size": 16, "max_input_tokens": 256, "max_target_tokens": 256},
        eval={"batch_size": 64, "max_new_tokens": 192},
        stacked={"stage1_epochs": 1},
    ),
    "paper": Preset(
        name="paper",
        model="t5-small",
        qlora_model="t5-base",
        data_source="auto",
        data={"train_size": None, "dev_size": 500, "test_size": None},
        train={"epochs": 5, "batch_size": 16, "max_input_tokens": 256, "max_target_tokens": 256},
        eval={"batch_size": 64, "max_new_tokens": 256},
        stacked={"stage1_epochs": 3},
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`.

    Raises:
        ValueError: for an unknown name.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESET_NAMES)}")
    return PRESETS[name]

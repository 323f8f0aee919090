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
    """Stacked LoRA's stage-1 coding dataset: mbpp, or gsm8k-programs (derived from the math train split)."""
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


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        model="tiny",
        qlora_model="tiny",
        data_source="embedded",
        code_dataset="gsm8k-programs",
        pretrain={
            "problems": 2000,
            "epochs": 2,
            "lr": 3e-3,
            "batch_size": 64,
            "max_input_tokens": 96,
            "max_target_tokens": 96,
        },
        data={
            "train_size": 1500,
            "dev_size": 48,
            "test_size": 96,
            "min_steps": 1,
            "max_steps": 1,
            "max_operand": 9,
        },
        train={"epochs": 3, "batch_size": 32, "max_input_tokens": 128, "max_target_tokens": 96},
        eval={
            "batch_size": 48,
            "max_new_tokens": 72,
            "metrics": ("accuracy", "perplexity", "rouge1", "similarity"),
        },
        stacked={"stage1_epochs": 1},
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

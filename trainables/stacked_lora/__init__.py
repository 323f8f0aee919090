"""Stacked LoRA: W = W0 + s1 B1 A1 + f(s2 B2 A2), placeholder docstring."""

from trainables.stacked_lora.config import ACTIVATIONS, StackedLoraConfig
from trainables.stacked_lora.layer import StackedLoraLinear
from trainables.stacked_lora.model import (
    apply_stacked_lora,
    load_stacked_lora,
    merge_and_unload,
    merge_stacked_lora,
    read_stacked_lora_config,
    save_stacked_lora,
    stacked_layers,
    stacked_lora_state_dict,
    start_stage2,
    unmerge_stacked_lora,
)

__all__ = [
    "ACTIVATIONS",
    "StackedLoraConfig",
    "StackedLoraLinear",
    "apply_stacked_lora",
    "load_stacked_lora",
    "merge_and_unload",
    "merge_stacked_lora",
    "read_stacked_lora_config",
    "save_stacked_lora",
    "stacked_layers",
    "stacked_lora_state_dict",
    "start_stage2",
    "unmerge_stacked_lora",
]

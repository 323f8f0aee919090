"""Full fine-tuning: every weight of the model trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from trainables.methods.registry import StrategyContext, register_strategy

if TYPE_CHECKING:
    import torch


@dataclass
class FullStrategyConfig:
    """Full fine-tuning has no method-specific hyperparameters beyond the shared training ones."""

    freeze_embeddings: bool = False
    """Keep the shared token embedding fixed (a common stabiliser for small data)."""


def apply_full(
    model: torch.nn.Module, config: FullStrategyConfig, context: StrategyContext
) -> torch.nn.Module:
    """Unfreeze every parameter (optionally all but the shared embedding)."""
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    if config.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    return model


register_strategy(
    name="full",
    config_cls=FullStrategyConfig,
    apply=apply_full,
    display_name="Full fine-tuning",
    colour="#C44E52",
    description="full fine-tuning: every weight trained",
    gpu_share=0.5,
    order=30,
)

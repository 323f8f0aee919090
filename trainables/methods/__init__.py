"""Fine-tuning strategies. Importing this package registers every method in `STRATEGIES`."""

from trainables.methods import full, lora, lora_cot, qlora, stacked  # noqa: F401  (each registers itself)
from trainables.methods.registry import (
    STRATEGIES,
    Strategy,
    StrategyContext,
    get_strategy,
    register_strategy,
)

__all__ = ["STRATEGIES", "Strategy", "StrategyContext", "get_strategy", "register_strategy"]

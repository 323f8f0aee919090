"""Fine-tuning methods. Importing this package registers every method module in it in `STRATEGIES`.

Each module (or subpackage) of this folder is imported once, in name order, and a method module ends with
its `register_strategy(...)`; a module that registers nothing (the `stacked_lora` adapter) is a helper of
one that does. So a new method is a new file here, and no list of methods is kept anywhere.
"""

import importlib
import pkgutil

from trainables.methods.registry import (
    STRATEGIES,
    Grouping,
    Strategy,
    StrategyContext,
    get_strategy,
    load_plugins,
    method_names,
    register_strategy,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module != "registry":
        importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "STRATEGIES",
    "Grouping",
    "Strategy",
    "StrategyContext",
    "get_strategy",
    "load_plugins",
    "method_names",
    "register_strategy",
]

"""`--plugin MODULE`: methods from outside the repository, registered before any flag that names a method.

A plugin is an importable module that calls `trainables.methods.register_strategy(...)` (see
docs/adding-a-method.md). The commands read `--plugin` first, import the modules, and only then build
their full parser, so that `--method` accepts the plugin's methods and `--help` lists them. A study passes
the same modules to every trial, which imports them again in its Ray worker.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from trainables.methods import load_plugins

PLUGIN_HELP = (
    "import MODULE (on PYTHONPATH) before reading the other flags; it registers more methods "
    "(repeatable; see docs/adding-a-method.md)"
)


def add_plugin_argument(parser: argparse.ArgumentParser) -> None:
    """The `--plugin` flag, for `--help` and for the full parse."""
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE", help=PLUGIN_HELP)


def preload_plugins(argv: Sequence[str] | None) -> tuple[str, ...]:
    """Import the `--plugin` modules of `argv` (None: `sys.argv`); returns their names.

    Raises:
        ValueError: for a module that cannot be imported.
    """
    parser = argparse.ArgumentParser(add_help=False)
    add_plugin_argument(parser)
    known, _ = parser.parse_known_args(argv)
    load_plugins(known.plugin)
    return tuple(known.plugin)

"""How the analysis names and colours a method: the display name and colour of its registry record.

A method that is not registered here (a plugin's, read back from its results) keeps its own name and
is drawn in gray.
"""

from __future__ import annotations

from trainables.methods import STRATEGIES, method_names

METHOD_LABELS = {name: STRATEGIES[name].display_name for name in method_names()}
"""Method name -> how tables and charts name it."""
METHOD_COLORS = {name: STRATEGIES[name].colour for name in method_names()}
"""Method name -> its colour in charts."""

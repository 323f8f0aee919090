"""The numbers the study being reproduced published, keyed the way our results are grouped.

This is the one module outside a method's own files that names methods: the published tables are about
particular ones. Which rows our tables have is the registry's business, never this module's: a published
number is looked up by the group a row shows (`trainables.comparison.Group`: family, config, name), and is
shown beside ours only where our trial ran on the published data and base model
(`analysis.provenance.comparable`); otherwise the report shows it in its own reference table.

Similarity is the average cosine similarity between the sentence embeddings of the generated and the
reference solutions, published as a percentage (79.70% is a cosine of 0.7970); accuracy is in percent.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelRow:
    """One model row of the study's Table 1."""

    label: str
    """How the study names the model."""
    method: str
    """Our method name."""
    config: str
    """GSM8K config: main or socratic."""
    base: str = "T5-small"
    """The base model the study fine-tuned."""


@dataclass(frozen=True)
class TableOneValues:
    """Table 1's numbers for one model row."""

    rouge1: float
    """ROUGE-1 F-measure of the generated solutions, in [0, 1]."""
    perplexity: float
    """Perplexity of the reference solutions under the model."""
    similarity_pct: float
    """Average semantic similarity, in percent."""


MODEL_ROWS = (
    ModelRow("LoRA", "lora", "main"),
    ModelRow("QLoRA", "qlora", "main", "T5-base"),
    ModelRow("LoRA", "lora", "socratic"),
    ModelRow("QLoRA", "qlora", "socratic", "T5-base"),
    ModelRow("Full fine-tuning", "full", "main"),
    ModelRow("Full fine-tuning", "full", "socratic"),
    ModelRow("Stacked LoRA", "stacked", "main"),
)
"""Table 1's rows in the study's order."""

TABLE_ONE = {
    ("lora", "main"): TableOneValues(0.5084, 3.2633, 79.70),
    ("qlora", "main"): TableOneValues(0.5156, 2.4158, 79.99),
    ("lora", "socratic"): TableOneValues(0.4678, 3.2706, 80.42),
    ("qlora", "socratic"): TableOneValues(0.5262, 2.3754, 75.96),
    ("full", "main"): TableOneValues(0.4136, 2.2708, 62.81),
    ("full", "socratic"): TableOneValues(0.4778, 2.2353, 62.50),
    ("stacked", "main"): TableOneValues(0.3546, 2.2587, 61.38),
}
"""(method, config) -> Table 1's ROUGE-1, perplexity and similarity (%)."""

ACCURACY_PCT = {("stacked", "main"): 40.0, ("full", "main"): 45.0}
"""(method, config) -> the test accuracy (%) of the study's Figure 2 (the figure uses the main config)."""

COT_ACCURACY_PCT = {("code", "main"): 25.0, ("code", "socratic"): 18.2}
"""(prompt style, config) -> LoRA + chain-of-thought test accuracy (%): the Python code style."""

ACCURACY_BY_GROUP = {("method", config, method): pct for (method, config), pct in ACCURACY_PCT.items()}
ACCURACY_BY_GROUP |= {("cot", config, style): pct for (style, config), pct in COT_ACCURACY_PCT.items()}
"""(family, config, group) of `trainables.comparison.Group` -> the published test accuracy (%)."""


def published_accuracy(family: str, config: str, name: str) -> float | None:
    """The published test accuracy (%) of a group, or None where the study published none."""
    return ACCURACY_BY_GROUP.get((family, config, name))


def table_one(method: str, config: str) -> TableOneValues | None:
    """Table 1's numbers of a (method, config), or None where the study published none."""
    return TABLE_ONE.get((method, config))

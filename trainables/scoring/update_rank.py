"""The rank of what a trial learned: singular values, numerical rank and effective rank of each layer's update.

An adapter adds an (out, in) update to each adapted weight W0. Plain LoRA's `s B A` has rank at most r; an
elementwise f (stacked LoRA's `f(s2 B2 A2)`, e.g. sin) or DoRA's column rescaling can raise it. Two
measures, both of the singular values s_1 >= s_2 >= ... of the update:

* numerical rank: how many s_i exceed `RANK_TOLERANCE * s_1`. The tolerance is relative, so the count does not
  depend on the update's size; 1e-3 sits far above float32 round-off (about 1e-7 * min(out, in)) and keeps a
  direction that carries a thousandth of the largest one's gain.
* effective rank (Roy and Vetterli, "The effective rank: a measure of effective dimensionality", EUSIPCO
  2007): exp(H(p)) with p_i = s_i / sum(s) and H the Shannon entropy. Real-valued, needs no tolerance:
  1 for a rank-one update, k for k equal singular values. A zero update has rank 0 on both measures.

A trial reports the median over its layers (`update/numerical_rank`, `update/effective_rank`; stacked LoRA
also `update/product_*` for `s2 B2 A2` before f) and writes every layer's singular values to
`update_rank.json` in its folder. Where the update depends on the input (stacked LoRA with a nonlinear f in
activation space) there is no matrix to measure: the trial reports `update/input_dependent` = 1 instead.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

RANK_TOLERANCE = 1e-3
"""A singular value counts towards the numerical rank above this fraction of the largest one."""
FILE_NAME = "update_rank.json"
"""Every layer's singular values and ranks, in the trial's folder."""


@dataclass
class Updates:
    """The learned updates of one model's adapted layers, each (out, in), keyed by module name."""

    update: dict[str, torch.Tensor] = field(default_factory=dict)
    """What each layer adds to W0 (stacked LoRA: f(s2 B2 A2); LoRA: s B A; DoRA: its whole update)."""
    product: dict[str, torch.Tensor] = field(default_factory=dict)
    """Stacked LoRA only: s2 B2 A2, the low-rank product before f."""
    input_dependent: bool = False
    """True where the update depends on the input, so `update` is empty (f_space=activation, f nonlinear)."""


def singular_values(matrix: torch.Tensor) -> torch.Tensor:
    """The singular values of a matrix, largest first, computed in float64 on the CPU."""
    return torch.linalg.svdvals(matrix.detach().to("cpu", torch.float64))


def numerical_rank(values: torch.Tensor, *, tolerance: float = RANK_TOLERANCE) -> int:
    """How many singular values exceed `tolerance` times the largest (0 for a zero matrix)."""
    if values.numel() == 0 or values[0] <= 0:
        return 0
    return int((values > tolerance * values[0]).sum())


def effective_rank(values: torch.Tensor) -> float:
    """Roy and Vetterli's effective rank, exp of the entropy of the normalised singular values."""
    total = values.sum()
    if values.numel() == 0 or total <= 0:
        return 0.0
    p = values[values > 0] / total
    return math.exp(float(-(p * p.log()).sum()))


def layer_ranks(matrix: torch.Tensor) -> dict:
    """One layer's singular values (a list, largest first), numerical rank and effective rank."""
    values = singular_values(matrix)
    return {
        "shape": list(matrix.shape),
        "numerical_rank": numerical_rank(values),
        "effective_rank": effective_rank(values),
        "singular_values": values.tolist(),
    }


def _median(per_layer: Mapping[str, dict], key: str) -> float:
    return float(statistics.median(layer[key] for layer in per_layer.values()))


def update_rank_metrics(updates: Updates) -> tuple[dict[str, float], dict]:
    """(the trial's `update/...` metrics, every layer's ranks) for `updates`.

    The metrics are medians over layers; the second value is what `write_update_ranks` stores.
    """
    if updates.input_dependent:
        metrics = {"update/input_dependent": 1.0}
    else:
        metrics = {}
    details: dict = {"tolerance": RANK_TOLERANCE, "input_dependent": updates.input_dependent}
    for kind, prefix in (("update", "update/"), ("product", "update/product_")):
        per_layer = {name: layer_ranks(matrix) for name, matrix in getattr(updates, kind).items()}
        details[kind] = per_layer
        if per_layer:
            metrics[f"{prefix}numerical_rank"] = _median(per_layer, "numerical_rank")
            metrics[f"{prefix}effective_rank"] = _median(per_layer, "effective_rank")
    return metrics, details


def write_update_ranks(path: Path, details: Mapping) -> None:
    """Store `update_rank_metrics`' per-layer details as JSON at `path`."""
    path.write_text(json.dumps(details, indent=1) + "\n")

"""Every comparison the report makes, tested on the confirmation runs, and the published claims as tests.

One table (`tables/pairwise.csv` / `.tex`) holds every pair `analysis.groups.comparisons` names, with the
difference A - B in points, its paired bootstrap 95% interval, McNemar's exact p-value and Holm's adjusted
one over the whole table (one family), and whether the difference is significant. The claims of the study
being reproduced are then read off that table, each with a one-sentence verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import significance as sig
from analysis.confirm import Confirmation, paired
from analysis.groups import Group, comparisons
from analysis.plots import new_figure, save_figure
from analysis.table import Table

COLUMNS = ("group_a", "group_b", "config", "family", "diff_points", "ci_low", "ci_high", "p_value")
COLUMNS += ("p_holm", "significant", "n_examples", "n_seeds", "a_better", "b_better")


def pairwise_frame(confirmation: Confirmation, *, samples: int = sig.BOOTSTRAP_SAMPLES) -> pd.DataFrame:
    """One row per compared pair with confirmation runs on both sides; Holm over all rows."""
    groups = {gid: confirmation.group(gid) for gid in confirmation.manifest["groups"]}
    experiment = {gid: g["experiment"] for gid, g in confirmation.manifest["groups"].items()}
    rows = []
    for a, b in comparisons(list(groups.values())):
        runs_a, runs_b = confirmation.runs.get(experiment[a.id]), confirmation.runs.get(experiment[b.id])
        if runs_a is None or runs_b is None:
            continue
        matrix_a, matrix_b = paired(runs_a, runs_b)
        if matrix_a.size == 0:
            continue
        result = sig.compare(matrix_a, matrix_b, samples=samples)
        rows.append(
            {
                "group_a": a.label,
                "group_b": b.label,
                "config": a.config,
                "family": a.family,
                "id_a": a.id,
                "id_b": b.id,
                **{k: getattr(result, k) for k in ("diff_points", "ci_low", "ci_high", "p_value")},
                "n_examples": result.n_examples,
                "n_seeds": result.n_seeds,
                "a_better": result.a_better,
                "b_better": result.b_better,
            }
        )
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "id_a", "id_b"])
    frame["p_holm"] = sig.holm(frame["p_value"].to_numpy()) if len(frame) else []
    frame["significant"] = [
        sig.significant(p, lo, hi)
        for p, lo, hi in zip(frame["p_holm"], frame["ci_low"], frame["ci_high"], strict=True)
    ]
    return frame


def pairwise_table(frame: pd.DataFrame) -> Table:
    """The report's table of every comparison (the CSV keeps these exact column names)."""
    note = (
        "A - B test accuracy in points on the test examples both were scored on, over the seeds both ran. "
        "Interval: paired bootstrap (examples and seeds resampled together, 10,000 draws). p_value: McNemar's "
        "exact test on per-example correctness (discordant examples: one group right more often over the seeds). "
        f"p_holm: Holm's correction over all {len(frame)} comparisons of this table. Significant: p_holm < "
        f"{sig.ALPHA} and the interval excludes 0. a_better / b_better: the discordant examples each way."
    )
    table = Table(
        key="pairwise",
        title="Pairwise comparisons on the confirmation runs",
        frame=frame[list(COLUMNS)].copy(),
        note=note,
    )
    table.formats |= {k: "{:+.1f}" for k in ("diff_points", "ci_low", "ci_high")}
    table.formats |= {"p_value": "{:.3g}", "p_holm": "{:.3g}"}
    table.formats |= {k: "{:.0f}" for k in ("n_examples", "n_seeds", "a_better", "b_better")}
    return table


@dataclass(frozen=True)
class Claim:
    """A published claim restated as comparisons of our groups."""

    claim: str
    published: str
    a: tuple[str, str]
    """(family, name) of the group the claim says is at least as good."""
    b: tuple[tuple[str, str], ...]
    """The groups it is compared with."""
    kind: str
    """equivalent (the claim is "about as good") or better (the claim is "better")."""
    published_diff: float | None = None
    """The published accuracy difference A - B in points, where the study gives both numbers."""


CLAIMS = (
    Claim(
        "Stacked LoRA vs full fine-tuning",
        "stacked LoRA 40% vs full 45%: near-equivalent",
        ("method", "stacked"),
        (("method", "full"),),
        "equivalent",
        published_diff=-5.0,
    ),
    Claim(
        "Code style vs the other CoT styles",
        "code best: 25% main, 18.2% socratic",
        ("cot", "code"),
        (("cot", "breakdown"), ("cot", "no_breakdown")),
        "better",
    ),
    Claim(
        "QLoRA on T5-base vs LoRA on T5-small",
        "QLoRA (T5-base) scores higher than LoRA (T5-small)",
        ("method", "qlora"),
        (("method", "lora"),),
        "better",
    ),
)


def _lookup(frame: pd.DataFrame, a: str, b: str) -> Mapping | None:
    """The row of A - B, flipped from B - A where the table has it that way round."""
    hit = frame[(frame["id_a"] == a) & (frame["id_b"] == b)]
    if len(hit):
        return hit.iloc[0].to_dict()
    hit = frame[(frame["id_a"] == b) & (frame["id_b"] == a)]
    if not len(hit):
        return None
    row = hit.iloc[0].to_dict()
    return {
        **row,
        "group_a": row["group_b"],
        "group_b": row["group_a"],
        "diff_points": -row["diff_points"],
        "ci_low": -row["ci_high"],
        "ci_high": -row["ci_low"],
        "a_better": row["b_better"],
        "b_better": row["a_better"],
    }


def _points(value: float) -> str:
    return f"{round(value, 1) + 0.0:+.1f}"  # + 0.0: no "-0.0"


def _numbers(row: Mapping) -> str:
    interval = f"[{_points(row['ci_low'])}, {_points(row['ci_high'])}]"
    return f"{_points(row['diff_points'])} points, 95% CI {interval}, Holm p = {row['p_holm']:.3g}"


def verdict(claim: Claim, rows: list[Mapping]) -> str:
    """One sentence: what our runs say about `claim`, given its rows (A - B, one per B)."""
    a = rows[0]["group_a"]
    if claim.kind == "equivalent":
        row = rows[0]
        gap = ""
        if claim.published_diff is not None:
            inside = row["ci_low"] <= claim.published_diff <= row["ci_high"]
            gap = f"; the published {_points(claim.published_diff)} is {'inside' if inside else 'outside'} our interval"
        if not row["significant"]:
            width = max(abs(row["ci_low"]), abs(row["ci_high"]))
            return (
                f"Supported as far as our runs can tell: {a} - {row['group_b']} = {_numbers(row)}, no significant "
                f"difference, though differences up to {width:.1f} points are not ruled out{gap}."
            )
        side = "better" if row["diff_points"] > 0 else "worse"
        return f"Not supported: {a} is significantly {side} than {row['group_b']} ({_numbers(row)}{gap})."
    wins = [r for r in rows if r["significant"] and r["diff_points"] > 0]
    losses = [r for r in rows if r["significant"] and r["diff_points"] < 0]
    detail = "; ".join(f"vs {r['group_b']}: {_numbers(r)}" for r in rows)
    if len(wins) == len(rows):
        return f"Supported: {a} is significantly better than {' and '.join(r['group_b'] for r in rows)} ({detail})."
    if losses:
        return f"Contradicted: {a} is significantly worse than {' and '.join(r['group_b'] for r in losses)} ({detail})."
    others = [r for r in rows if r not in wins]
    lower = " (it scored lower, not significantly)" if all(r["diff_points"] < 0 for r in others) else ""
    names = " and ".join(r["group_b"] for r in others)
    return f"Not shown: {a} is not significantly better than {names}{lower} ({detail})."


def claims_table(frame: pd.DataFrame, configs: list[str]) -> Table:
    """Each published claim, per config where both sides were confirmed, with our verdict."""
    rows = []
    for claim in CLAIMS:
        for config in configs:
            a = Group(claim.a[0], config, claim.a[1], "").id
            found = [_lookup(frame, a, Group(f, config, n, "").id) for f, n in claim.b]
            found = [r for r in found if r is not None]
            text = (
                verdict(claim, found) if found else "Not tested: our confirmation runs lack one side of it."
            )
            rows.append(
                {"Claim": claim.claim, "Published": claim.published, "Config": config, "Our verdict": text}
            )
    note = "Each claim of the study being reproduced, tested on our confirmation runs (rows of the pairwise table)."
    return Table(key="claims", title="The published claims, tested", frame=pd.DataFrame(rows), note=note)


def plot_pairwise(frame: pd.DataFrame, path: Path) -> Path:
    """Every difference with its interval, one row per pair; filled markers are significant after Holm."""
    n = max(len(frame), 1)
    figure, axes = new_figure(7.5, 1.2 + 0.32 * n)
    ax = axes[0, 0]
    y = np.arange(len(frame))[::-1]
    for yi, (_, row) in zip(y, frame.iterrows(), strict=True):
        color = "#C44E52" if row["significant"] else "#4C72B0"
        ax.errorbar(
            row["diff_points"],
            yi,
            xerr=[[row["diff_points"] - row["ci_low"]], [row["ci_high"] - row["diff_points"]]],
            fmt="o",
            color=color,
            mfc=color if row["significant"] else "white",
            capsize=3,
        )
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(y, [f"{r.group_a} - {r.group_b} ({r.config})" for r in frame.itertuples()] or [])
    ax.set_xlabel("test accuracy difference A - B (points), paired bootstrap 95% interval")
    ax.set_title("Pairwise differences on the confirmation runs")
    if not len(frame):
        ax.text(
            0.5, 0.5, "no comparison: fewer than two confirmed groups", ha="center", transform=ax.transAxes
        )
    handles = [
        ax.errorbar([], [], fmt="o", color="#C44E52", label="significant (Holm)"),
        ax.errorbar([], [], fmt="o", color="#4C72B0", mfc="white", label="not significant"),
    ]
    ax.legend(handles=handles, loc="best", fontsize=8)
    return save_figure(figure, path)


def confirmation_tables(
    confirmation: Confirmation, labels: Mapping[str, str] | None = None
) -> tuple[dict[str, Table], pd.DataFrame]:
    """The confirmation part of the report: per-group table, pairwise table, claims table (and the frame).

    `labels`: trial folder -> the report's label of that trial (for links to the search trials).
    """
    from analysis.confirm import groups_table

    frame = pairwise_frame(confirmation)
    configs = sorted({g["config"] for g in confirmation.manifest["groups"].values()})
    tables = {
        "confirm_groups": groups_table(confirmation, labels),
        "pairwise": pairwise_table(frame),
        "claims": claims_table(frame, configs),
    }
    return tables, frame

"""Is group A really better than group B? Paired statistics on per-example correctness over seeds.

Each group is re-run with the same N seeds on the same test examples (`study.confirm`), so its results are
a 0/1 matrix `(seeds, examples)`. Two groups are compared on the examples both were scored on, paired by
example and by seed:

- the accuracy difference, in points, with a **paired bootstrap** 95% interval that resamples examples
  and seeds together (two-way: test-set sampling and training randomness both move the difference);
- **McNemar's exact test** on per-example correctness: the examples where one group was right more often
  (over the seeds) than the other are the discordant pairs, and under "no difference" each is a fair coin
  (`scipy.stats.binomtest`). With one seed this is McNemar's exact test as written; with N seeds it keeps
  the example as the unit, so N runs over the same example are not counted as N independent pairs;
- **Holm's** step-down correction over the whole family of comparisons in one table.

A difference is called significant only when its Holm-adjusted p-value is below `alpha` and its bootstrap
interval excludes 0, so a verdict holds against both sources of noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
BOOTSTRAP_SAMPLES = 10_000
_CHUNK_CELLS = 4_000_000
"""Bootstrap samples are drawn in chunks of at most this many (sample x example) cells (32 MB)."""


@dataclass(frozen=True)
class Comparison:
    """A minus B on their shared examples."""

    diff_points: float
    """Mean accuracy of A minus that of B, in percentage points."""
    ci_low: float
    """Paired bootstrap 2.5% quantile of the difference, in points."""
    ci_high: float
    """Paired bootstrap 97.5% quantile, in points."""
    p_value: float
    """McNemar's exact two-sided p-value (before any correction)."""
    a_better: int
    """Examples where A was right more often than B (over the seeds)."""
    b_better: int
    """Examples where B was right more often than A."""
    n_examples: int
    """Examples compared."""
    n_seeds: int
    """Seeds paired."""


def as_matrix(correct: Sequence[Sequence[bool]] | np.ndarray) -> np.ndarray:
    """A `(seeds, examples)` float matrix of 0/1; one run may be given as a flat sequence.

    Raises:
        ValueError: for an empty matrix or values other than 0/1.
    """
    matrix = np.asarray(correct, dtype=float)
    matrix = matrix[None, :] if matrix.ndim == 1 else matrix
    if matrix.ndim != 2 or matrix.size == 0:
        raise ValueError(f"per-example correctness must be (seeds, examples), got shape {matrix.shape}")
    if not np.isin(matrix, (0.0, 1.0)).all():
        raise ValueError("per-example correctness must be 0/1 (or True/False)")
    return matrix


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """The `level` interval of mean(a) - mean(b), resampling examples and seeds with replacement.

    `a` and `b` are `(seeds, examples)` with row s of both from seed s and column i of both the same
    example. A resample draws seed counts `v` (multinomial over the S seeds) and example counts `w`
    (multinomial over the n examples); its difference is `v @ D @ w / (S n)` with `D = a - b`.
    """
    a, b = as_matrix(a), as_matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"paired results must have one shape (seeds, examples), got {a.shape} and {b.shape}")
    diff = a - b  # (seeds, examples)
    seeds, n = diff.shape
    rng = np.random.default_rng(seed)
    values = np.empty(samples)
    chunk = max(1, _CHUNK_CELLS // n)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        v = rng.multinomial(seeds, np.full(seeds, 1 / seeds), size=size)  # (size, S)
        w = rng.multinomial(n, np.full(n, 1 / n), size=size)  # (size, n)
        values[start : start + size] = ((v @ diff) * w).sum(axis=1) / (seeds * n)
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def mcnemar_exact(a: np.ndarray, b: np.ndarray) -> tuple[float, int, int]:
    """McNemar's exact two-sided p-value of paired correctness, and the two discordant counts.

    An example is discordant when one group's correctness rate over the seeds is higher than the other's.
    With no discordant example the groups agree everywhere: p = 1.
    """
    rate_a, rate_b = as_matrix(a).mean(axis=0), as_matrix(b).mean(axis=0)
    a_better, b_better = int((rate_a > rate_b).sum()), int((rate_b > rate_a).sum())
    if a_better + b_better == 0:
        return 1.0, 0, 0
    test = stats.binomtest(a_better, a_better + b_better, 0.5, alternative="two-sided")
    return float(test.pvalue), a_better, b_better


def compare(a: np.ndarray, b: np.ndarray, *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Comparison:
    """A against B: the difference in points, its paired bootstrap interval and McNemar's p-value."""
    a, b = as_matrix(a), as_matrix(b)
    low, high = paired_bootstrap(a, b, samples=samples, seed=seed)
    p, a_better, b_better = mcnemar_exact(a, b)
    return Comparison(
        diff_points=100 * float(a.mean() - b.mean()),
        ci_low=100 * low,
        ci_high=100 * high,
        p_value=p,
        a_better=a_better,
        b_better=b_better,
        n_examples=a.shape[1],
        n_seeds=a.shape[0],
    )


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order.

    Sorted ascending, the k-th smallest (from 0) of m is multiplied by m - k; the running maximum keeps the
    adjusted values in the same order as the raw ones, and they are capped at 1.
    """
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    scaled = p[order] * (p.size - np.arange(p.size))
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out = np.empty_like(adjusted)
    out[order] = adjusted
    return out


def significant(p_holm: float, ci_low: float, ci_high: float, *, alpha: float = ALPHA) -> bool:
    """Holm-adjusted p below `alpha` and a bootstrap interval that excludes 0."""
    return bool(p_holm < alpha and (ci_low > 0 or ci_high < 0))


def mean_interval(values: Sequence[float], *, level: float = 0.95) -> tuple[float, float, float, float]:
    """Mean, sample standard deviation and the Student-t `level` interval of the mean of `values`.

    Raises:
        ValueError: for fewer than two values (no spread can be estimated from one run).
    """
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        raise ValueError(f"an interval of the mean needs at least 2 seeds, got {x.size}")
    mean, std = float(x.mean()), float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1)) * std / np.sqrt(x.size)
    return mean, std, mean - half, mean + half

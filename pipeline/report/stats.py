"""Paired statistics for comparing student variants run with the same seeds.

* :func:`paired_difference`: mean paired difference of a per-seed score (e.g. dev accuracy) against a reference
  variant, with a Student-t confidence interval and a two-sided paired t-test.
* :func:`mcnemar`: exact McNemar test on the per-example correctness of two models on the same examples.
* :func:`pooled_mcnemar`: McNemar over several seeds, the discordant counts summed over seeds.
* :class:`Stat`: mean and sample standard deviation over seeds; :func:`mean_interval`: a mean with its Student-t
  interval (a retention over seeds).

Sign convention everywhere: ``values - reference`` (``a`` against ``b``), so a positive difference means the
variant under test did better than the reference.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "McNemarResult",
    "PairedDifference",
    "PooledMcNemar",
    "Stat",
    "mcnemar",
    "mean_interval",
    "paired_difference",
    "pooled_mcnemar",
]


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (0 for a single run) of ``n`` values."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float | None]) -> Stat | None:
        present = [v for v in values if v is not None and math.isfinite(v)]
        if not present:
            return None
        mean = sum(present) / len(present)
        var = sum((v - mean) ** 2 for v in present) / (len(present) - 1) if len(present) > 1 else 0.0
        return cls(mean, math.sqrt(var), len(present))

    def to_json(self) -> dict[str, float]:
        return {"mean": round(self.mean, 6), "std": round(self.std, 6)}


def _rounded(x: float | None) -> float | None:
    return None if x is None else round(x, 6) + 0.0  # + 0.0 turns -0.0 into 0.0


@dataclass(frozen=True, kw_only=True)
class PairedDifference:
    """Mean of ``values[i] - reference[i]`` over ``n`` seeds.

    ``std`` (sample, ddof=1), ``t``, ``low``/``high`` and ``p_value`` are ``None`` when ``n == 1``. When every
    difference is equal (``std == 0``) the interval collapses to ``[mean, mean]``, ``t`` is ``±inf`` and
    ``p_value`` is ``0.0`` if ``mean != 0``, else ``t`` is ``0.0`` and ``p_value`` is ``1.0``.
    """

    mean: float
    std: float | None
    n: int
    t: float | None
    low: float | None
    high: float | None
    p_value: float | None
    confidence: float

    def signed(self, digits: int = 4) -> str:
        """``+0.0061 [-0.0123, +0.0245]``: the mean and its interval (the mean alone for one seed)."""
        if self.low is None or self.high is None:
            return f"{self.mean:+.{digits}f}"
        return f"{self.mean:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

    def as_json(self) -> dict[str, float | int | None]:
        """``{"mean", "ci95_low", "ci95_high", "seeds"}``, floats rounded to 6 decimals (the metrics-file format)."""
        if self.confidence != 0.95:
            raise ValueError(f"the ci95_* keys need confidence 0.95, not {self.confidence}")
        return {
            "mean": _rounded(self.mean),
            "ci95_low": _rounded(self.low),
            "ci95_high": _rounded(self.high),
            "seeds": self.n,
        }


def paired_difference(
    values: Sequence[float], reference: Sequence[float], confidence: float = 0.95
) -> PairedDifference:
    """Paired comparison of ``values`` against ``reference``, both of length ``n``, paired by position (seed).

    The interval is ``mean ± t_{(1+confidence)/2, n-1} * std / sqrt(n)``; the p-value is the two-sided paired
    t-test's. Raises ``ValueError`` on lengths that differ, ``n == 0``, non-finite values or a confidence outside
    ``(0, 1)``.
    """
    x, ref = np.asarray(values, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if x.ndim != 1 or x.shape != ref.shape:
        raise ValueError(f"values and reference must be 1-D of the same length, got {x.shape} and {ref.shape}")
    if x.size == 0:
        raise ValueError("no pairs to compare")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(ref))):
        raise ValueError("values and reference must be finite")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    diffs = x - ref
    n, mean = int(diffs.size), float(diffs.mean())
    if n == 1:
        return PairedDifference(
            mean=mean, std=None, n=1, t=None, low=None, high=None, p_value=None, confidence=confidence
        )
    std = float(diffs.std(ddof=1))
    if std == 0.0:
        t = math.copysign(math.inf, mean) if mean != 0.0 else 0.0
        return PairedDifference(
            mean=mean,
            std=0.0,
            n=n,
            t=t,
            low=mean,
            high=mean,
            p_value=0.0 if mean != 0.0 else 1.0,
            confidence=confidence,
        )
    from scipy import stats  # here, not at the top: scipy takes most of a second to import

    se = std / math.sqrt(n)
    t = mean / se
    half = float(stats.t.ppf((1.0 + confidence) / 2.0, n - 1)) * se
    p = float(2.0 * stats.t.sf(abs(t), n - 1))
    return PairedDifference(
        mean=mean, std=std, n=n, t=t, low=mean - half, high=mean + half, p_value=p, confidence=confidence
    )


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> PairedDifference:
    """The mean of ``values`` with its Student-t interval (as :func:`paired_difference` gives it against zero)."""
    return paired_difference(values, [0.0] * len(values), confidence)


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired correctness.

    ``b``: examples model A gets right and model B wrong; ``c``: the reverse. ``p_value`` is the exact two-sided
    binomial p-value of ``min(b, c)`` in ``b + c`` trials at 0.5 (``1.0`` when ``b + c == 0``). ``chi2`` is the
    continuity-corrected ``(|b - c| - 1)^2 / (b + c)``, unclamped as R's ``mcnemar.test`` and statsmodels compute
    it (so ``b == c > 0`` gives ``1 / (b + c)``), and ``0.0`` when ``b + c == 0``; it is for reference only.
    """

    b: int
    c: int
    p_value: float
    chi2: float


def _from_counts(b: int, c: int) -> McNemarResult:
    m = b + c
    if m == 0:
        return McNemarResult(0, 0, 1.0, 0.0)
    from scipy import stats

    p = float(stats.binomtest(min(b, c), m, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(b, c, min(p, 1.0), (abs(b - c) - 1) ** 2 / m)


def _counts(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int]:
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.dtype != np.bool_ or b.dtype != np.bool_:
        raise TypeError(f"correctness arrays must be bool, got {a.dtype} and {b.dtype}")
    if a.shape != b.shape:
        raise ValueError(f"correctness arrays must have the same shape, got {a.shape} and {b.shape}")
    return int(np.count_nonzero(a & ~b)), int(np.count_nonzero(~a & b))


def mcnemar(correct_a: np.ndarray, correct_b: np.ndarray) -> McNemarResult:
    """McNemar's test of model A against model B; both bool arrays of shape ``(examples,)``, same examples in the
    same order. Raises ``ValueError`` when the shapes differ and ``TypeError`` when an array is not bool."""
    return _from_counts(*_counts(correct_a, correct_b))


@dataclass(frozen=True)
class PooledMcNemar:
    """McNemar over seeds: ``pooled`` from ``b`` and ``c`` summed over seeds, and each seed's own result."""

    pooled: McNemarResult
    per_seed: tuple[McNemarResult, ...]


def pooled_mcnemar(pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> PooledMcNemar:
    """McNemar on ``(correct_a, correct_b)`` pairs, one per seed, every array of the same shape ``(examples,)``
    (the same dev examples each seed).

    The pooled p-value is the exact binomial test on the summed counts: it treats every discordant
    (seed, example) as an independent trial. Discordances on the same example tend to recur across seeds, so
    read it as a summary beside the per-seed results, not as a test that accounts for that dependence.
    Raises ``ValueError`` when there are no pairs or the shapes differ.
    """
    if not pairs:
        raise ValueError("no seeds to pool")
    shape = np.shape(pairs[0][0])
    if any(np.shape(a) != shape or np.shape(b) != shape for a, b in pairs):
        raise ValueError("every seed must cover the same examples (arrays of one shape)")
    per_seed = tuple(mcnemar(a, b) for a, b in pairs)
    pooled = _from_counts(sum(r.b for r in per_seed), sum(r.c for r in per_seed))
    return PooledMcNemar(pooled, per_seed)

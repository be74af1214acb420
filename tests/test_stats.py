"""Paired statistics against published values: Student's sleep data (R's ``t.test``), exact McNemar p-values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from pipeline.report.stats import McNemarResult, mcnemar, paired_difference, pooled_mcnemar

# R's ``sleep``: extra hours of sleep of 10 patients on drug 1 and drug 2 (Student 1908, Cushny & Peebles).
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
# R: t.test(extra ~ group, data = sleep, paired = TRUE) -> group 1 minus group 2:
#   t = -4.0621, df = 9, p-value = 0.002833, 95% CI -2.4598858 -0.7001142, mean of the differences -1.58
# and sd(SLEEP_2 - SLEEP_1) = 1.229995.


def test_sleep_data_matches_r_t_test() -> None:
    result = paired_difference(SLEEP_2, SLEEP_1)  # drug 2 minus drug 1: differences 1.2, 2.4, 1.3, ..., 1.4
    assert result.n == 10
    assert result.mean == pytest.approx(1.58, abs=1e-12)
    assert result.std == pytest.approx(1.229995, abs=5e-7)
    assert result.t == pytest.approx(4.0621, abs=5e-5)
    assert result.p_value == pytest.approx(0.002833, abs=5e-7)
    assert result.low == pytest.approx(0.7001142, abs=5e-8)
    assert result.high == pytest.approx(2.4598858, abs=5e-8)
    assert result.confidence == 0.95


def test_sign_convention_is_values_minus_reference() -> None:
    result = paired_difference(SLEEP_1, SLEEP_2)  # R's own orientation: group 1 minus group 2
    assert result.mean == pytest.approx(-1.58, abs=1e-12)
    assert result.t == pytest.approx(-4.0621, abs=5e-5)
    assert (result.low, result.high) == (pytest.approx(-2.4598858, abs=5e-8), pytest.approx(-0.7001142, abs=5e-8))
    assert result.p_value == pytest.approx(0.002833, abs=5e-7)


def test_other_confidence_level_uses_the_t_table_quantile() -> None:
    # Printed t tables: t_{0.95, 9} = 1.833113 (a 90% two-sided interval with 9 degrees of freedom).
    half = 1.833113 * 1.229995 / math.sqrt(10)
    result = paired_difference(SLEEP_2, SLEEP_1, confidence=0.90)
    assert result.low == pytest.approx(1.58 - half, abs=1e-6)
    assert result.high == pytest.approx(1.58 + half, abs=1e-6)
    assert result.p_value == pytest.approx(0.002833, abs=5e-7)  # the test does not depend on the level


def test_agrees_with_scipy_ttest_rel() -> None:
    rng = np.random.default_rng(0)
    reference = rng.uniform(0.85, 0.90, size=7)
    values = reference + rng.normal(0.004, 0.01, size=7)
    expected = scipy_stats.ttest_rel(values, reference)
    interval = expected.confidence_interval(0.95)
    result = paired_difference(list(values), list(reference))
    assert result.t == pytest.approx(expected.statistic, rel=1e-10)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-10)
    assert result.low == pytest.approx(interval.low, rel=1e-10)
    assert result.high == pytest.approx(interval.high, rel=1e-10)


def test_as_json_has_the_metrics_file_format() -> None:
    out = paired_difference(SLEEP_2, SLEEP_1).as_json()
    assert out == {"mean": 1.58, "ci95_low": 0.700114, "ci95_high": 2.459886, "seeds": 10}
    assert list(out) == ["mean", "ci95_low", "ci95_high", "seeds"]
    assert json.loads(json.dumps(out)) == out
    with pytest.raises(ValueError, match="0.95"):
        paired_difference(SLEEP_2, SLEEP_1, confidence=0.9).as_json()


def test_single_seed_has_a_mean_and_no_interval() -> None:
    result = paired_difference([0.875], [0.75])
    assert (result.mean, result.n) == (0.125, 1)
    assert (result.std, result.t, result.low, result.high, result.p_value) == (None, None, None, None, None)
    assert result.as_json() == {"mean": 0.125, "ci95_low": None, "ci95_high": None, "seeds": 1}
    assert json.dumps(result.as_json()) == '{"mean": 0.125, "ci95_low": null, "ci95_high": null, "seeds": 1}'


def test_identical_differences_collapse_the_interval() -> None:
    result = paired_difference([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])  # every difference exactly 0.5
    assert (result.mean, result.std, result.low, result.high, result.p_value) == (0.5, 0.0, 0.5, 0.5, 0.0)
    assert result.t == math.inf
    negative = paired_difference([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert (negative.mean, negative.low, negative.high, negative.p_value) == (-0.5, -0.5, -0.5, 0.0)
    assert negative.t == -math.inf
    same = paired_difference([0.8, 0.9, 0.7], [0.8, 0.9, 0.7])
    assert (same.mean, same.std, same.t, same.low, same.high, same.p_value) == (0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    assert same.as_json() == {"mean": 0.0, "ci95_low": 0.0, "ci95_high": 0.0, "seeds": 3}


def test_as_json_rounds_to_six_decimals_without_negative_zero() -> None:
    out = paired_difference([0.1234564, 0.1234566, 0.0], [0.0, 0.0, 0.0]).as_json()
    assert out["mean"] == round((0.1234564 + 0.1234566) / 3, 6) == 0.082304
    tiny = paired_difference([0.5], [0.5 + 1e-9]).as_json()
    assert json.dumps(tiny["mean"]) == "0.0"  # not "-0.0"


@pytest.mark.parametrize(
    ("values", "reference", "message"),
    [
        ([0.8, 0.9], [0.8], "same length"),
        ([], [], "no pairs"),
        ([0.8, float("nan")], [0.8, 0.9], "finite"),
        ([[0.8, 0.9]], [[0.8, 0.9]], "1-D"),
    ],
)
def test_paired_difference_rejects_bad_input(values: list, reference: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_difference(values, reference)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 95.0])
def test_paired_difference_rejects_bad_confidence(confidence: float) -> None:
    with pytest.raises(ValueError, match="confidence"):
        paired_difference(SLEEP_2, SLEEP_1, confidence=confidence)


def _correctness(both: int, b: int, c: int, neither: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bool arrays of A's and B's correctness with the given cell counts, in a shuffled example order."""
    a = np.array([True] * both + [True] * b + [False] * c + [False] * neither)
    r = np.array([True] * both + [False] * b + [True] * c + [False] * neither)
    order = np.random.default_rng(seed).permutation(a.size)
    return a[order], r[order]


def _exact_two_sided(b: int, c: int) -> float:
    """Exact McNemar p-value by direct binomial sums (independent of scipy)."""
    m, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m)


def test_mcnemar_exact_p_value_b1_c9() -> None:
    result = mcnemar(*_correctness(both=40, b=1, c=9, neither=7))
    assert (result.b, result.c) == (1, 9)
    assert result.p_value == pytest.approx(22 / 1024, abs=1e-12)  # 2 * (1 + 10) / 2**10 = 0.021484375
    assert result.chi2 == pytest.approx(4.9, abs=1e-12)  # (|1 - 9| - 1)^2 / 10
    swapped = mcnemar(*reversed(_correctness(both=40, b=1, c=9, neither=7)))
    assert (swapped.b, swapped.c, swapped.p_value) == (9, 1, pytest.approx(22 / 1024, abs=1e-12))


@pytest.mark.parametrize(
    ("b", "c", "published"),
    [
        (11, 3, 0.057373046875),  # calcugator.com chi2_mcnemar example: two-tails probability 0.0573730468750
        (12, 5, 0.1435),  # stat-tools.xyz McNemar example: p (exact) = 0.1435, chi-square (cc) = 2.1176
    ],
)
def test_mcnemar_exact_p_value_published_examples(b: int, c: int, published: float) -> None:
    result = mcnemar(*_correctness(both=20, b=b, c=c, neither=20))
    assert result.p_value == pytest.approx(_exact_two_sided(b, c), rel=1e-12)
    assert result.p_value == pytest.approx(published, abs=5e-5)


def test_mcnemar_continuity_corrected_chi2() -> None:
    # Agresti (1990) p. 350, presidential approval (R's mcnemar.test example): b = 150, c = 86.
    # R reports McNemar's chi-squared = 16.818 with the correction (17.36 without).
    result = mcnemar(*_correctness(both=794, b=150, c=86, neither=570))
    assert (result.b, result.c) == (150, 86)
    assert result.chi2 == pytest.approx(63**2 / 236, rel=1e-12)
    assert result.chi2 == pytest.approx(16.818, abs=5e-4)
    assert mcnemar(*_correctness(both=0, b=12, c=5, neither=0)).chi2 == pytest.approx(2.1176, abs=5e-5)


def test_mcnemar_no_evidence_cases() -> None:
    assert mcnemar(*_correctness(both=5, b=3, c=3, neither=2)) == McNemarResult(3, 3, 1.0, 1 / 6)  # R's unclamped chi2
    assert mcnemar(*_correctness(both=5, b=0, c=0, neither=2)) == McNemarResult(0, 0, 1.0, 0.0)
    empty = np.zeros(0, dtype=bool)
    assert mcnemar(empty, empty) == McNemarResult(0, 0, 1.0, 0.0)


def test_mcnemar_ignores_concordant_examples() -> None:
    few = mcnemar(*_correctness(both=1, b=2, c=8, neither=0))
    many = mcnemar(*_correctness(both=900, b=2, c=8, neither=300, seed=3))
    assert few == many
    assert few.p_value == pytest.approx(_exact_two_sided(2, 8), rel=1e-12)  # 2 * 56 / 1024 = 0.109375
    assert few.p_value == pytest.approx(0.109375, abs=1e-12)


def test_mcnemar_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="same shape"):
        mcnemar(np.ones(5, dtype=bool), np.ones(4, dtype=bool))
    with pytest.raises(TypeError, match="bool"):
        mcnemar(np.array([1, 0, 2]), np.array([1, 1, 0]))  # class predictions, not correctness


def test_pooled_mcnemar_sums_counts_over_seeds() -> None:
    pairs = [_correctness(20, 1, 4, 5, seed=0), _correctness(21, 0, 3, 6, seed=1), _correctness(22, 0, 2, 6, seed=2)]
    result = pooled_mcnemar(pairs)
    assert [(r.b, r.c) for r in result.per_seed] == [(1, 4), (0, 3), (0, 2)]
    assert [r.p_value for r in result.per_seed] == [pytest.approx(0.375), pytest.approx(0.25), pytest.approx(0.5)]
    assert (result.pooled.b, result.pooled.c) == (1, 9)
    assert result.pooled.p_value == pytest.approx(22 / 1024, abs=1e-12)
    assert result.pooled.chi2 == pytest.approx(4.9, abs=1e-12)


def test_pooled_mcnemar_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="no seeds"):
        pooled_mcnemar([])
    with pytest.raises(ValueError, match="same examples"):
        pooled_mcnemar([_correctness(5, 1, 1, 1), _correctness(6, 1, 1, 1)])
    with pytest.raises(ValueError, match="same examples"):
        pooled_mcnemar([(np.ones(3, dtype=bool), np.ones(2, dtype=bool))])

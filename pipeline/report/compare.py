"""Every student variant against a reference variant (vanilla KD, ``kd``), paired by seed.

Runs of two variants with the same seed share the seed's data order and head initialisation, so their
difference is measured per seed and the seed-to-seed noise cancels:

* the dev metric's mean difference over the seeds both variants ran, with a 95 % Student-t interval
  (:func:`pipeline.report.stats.paired_difference`);
* McNemar's exact test on the dev predictions, example by example, pooled over those seeds, with each seed's
  own result beside it (:func:`pipeline.report.stats.pooled_mcnemar`); it needs the per-example predictions
  that ``egkd evaluate --out`` records.

Signs: variant minus reference, so a positive difference means the variant did better.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.errors import EgkdError
from pipeline.report.stats import McNemarResult, PairedDifference, PooledMcNemar, paired_difference, pooled_mcnemar

DEFAULT_REFERENCE = "kd"  # the variant every other one is compared with


@dataclass(frozen=True)
class RunPredictions:
    """One run's dev predictions (ids, predicted class, gold label), as ``egkd evaluate`` recorded them."""

    example_ids: tuple[str, ...]
    classes: tuple[int, ...]
    labels: tuple[int, ...]

    def correct(self) -> np.ndarray:
        """(N,) bool, in ``example_ids`` order."""
        return np.asarray(self.classes) == np.asarray(self.labels)


@dataclass(frozen=True)
class SeedRun:
    """What the comparison needs of one run: its seed, its dev metric and, when recorded, its predictions."""

    name: str
    seed: int
    main: float
    predictions: RunPredictions | None


@dataclass(frozen=True)
class Comparison:
    """A variant against the reference over the seeds both ran."""

    reference: str
    seeds: tuple[int, ...]
    difference: PairedDifference  # of the dev metric, variant - reference
    mcnemar: PooledMcNemar | None  # None when a paired run recorded no predictions (regression, older reports)

    def mcnemar_json(self) -> dict | None:
        if self.mcnemar is None:
            return None

        def one(result: McNemarResult) -> dict:
            return {"b": result.b, "c": result.c, "p_value": round(result.p_value, 6)}

        per_seed = [{"seed": s, **one(r)} for s, r in zip(self.seeds, self.mcnemar.per_seed, strict=True)]
        return {**one(self.mcnemar.pooled), "per_seed": per_seed}


def compare(variant: Sequence[SeedRun], reference: Sequence[SeedRun], reference_name: str) -> Comparison | None:
    """``variant`` against ``reference`` on the seeds both have; None when they share none.

    McNemar's ``b`` counts the dev examples the variant gets right and the reference wrong, ``c`` the reverse.
    Runs of one seed must have been evaluated on the same examples (an :class:`EgkdError` otherwise).
    """
    mine = {r.seed: r for r in variant}
    theirs = {r.seed: r for r in reference}
    seeds = tuple(sorted(set(mine) & set(theirs)))
    if not seeds:
        return None
    difference = paired_difference([mine[s].main for s in seeds], [theirs[s].main for s in seeds])
    pairs = []
    for seed in seeds:
        a, b = mine[seed].predictions, theirs[seed].predictions
        if a is None or b is None:
            return Comparison(reference_name, seeds, difference, None)
        if a.example_ids != b.example_ids:
            raise EgkdError(
                f"{mine[seed].name} and {theirs[seed].name} were evaluated on different examples; "
                "evaluate them on the same split to compare them"
            )
        pairs.append((a.correct(), b.correct()))
    return Comparison(reference_name, seeds, difference, pooled_mcnemar(pairs))

"""Every student variant against a reference variant (vanilla KD, ``kd``), paired by seed.

Runs of two variants with the same seed share the seed's data order and head initialisation, so their
difference is measured per seed and the seed-to-seed noise cancels:

* the dev metric's mean difference over the seeds both variants ran, with a 95 % Student-t interval
  (:func:`pipeline.report.stats.paired_difference`);
* McNemar's exact test on the dev predictions, example by example, pooled over those seeds, with each seed's
  own result beside it (:func:`pipeline.report.stats.pooled_mcnemar`); it needs the per-example predictions
  that ``egkd evaluate --out`` records;
* for a variant guided by an explanation family, the mean difference in agreement (Spearman) with the
  teacher's maps of that family, over the seeds both runs were evaluated against it, with its 95 % interval.

Signs: variant minus reference, so a positive difference means the variant did better.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.errors import EgkdError
from pipeline.report.stats import McNemarResult, PairedDifference, PooledMcNemar, paired_difference, pooled_mcnemar

DEFAULT_REFERENCE = "kd"  # the variant every other one is compared with


@dataclass(frozen=True)
class RunPredictions:
    """One run's dev predictions (ids, predicted class, gold label), as ``egkd evaluate`` recorded them; on an
    evaluation set the ids are recorded as their digest alone (``example_ids`` empty)."""

    example_ids: tuple[str, ...]
    classes: tuple[int, ...]
    labels: tuple[int, ...]
    ids_sha256: str | None = None

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
    spearman: Mapping[str, float] = field(default_factory=dict)  # agreement with the teacher, by family


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """A variant against the reference over the seeds both ran."""

    reference: str
    seeds: tuple[int, ...]
    difference: PairedDifference  # of the dev metric, variant - reference
    mcnemar: PooledMcNemar | None  # None when a paired run recorded no predictions (regression, older reports)
    family: str | None = None  # the variant's explanation family, whose agreement is compared
    agreement: PairedDifference | None = None  # of Spearman with that family's maps; None: no seed has both

    def mcnemar_json(self) -> dict | None:
        if self.mcnemar is None:
            return None

        def one(result: McNemarResult) -> dict:
            return {"b": result.b, "c": result.c, "p_value": round(result.p_value, 6)}

        per_seed = [{"seed": s, **one(r)} for s, r in zip(self.seeds, self.mcnemar.per_seed, strict=True)]
        return {**one(self.mcnemar.pooled), "per_seed": per_seed}


def compare(
    variant: Sequence[SeedRun], reference: Sequence[SeedRun], reference_name: str, family: str | None = None
) -> Comparison | None:
    """``variant`` against ``reference`` on the seeds both have; None when they share none.

    ``family``: the explanation family the variant is guided by; its agreement with that family's maps is
    compared over the seeds where both runs have it.

    McNemar's ``b`` counts the dev examples the variant gets right and the reference wrong, ``c`` the reverse.
    Runs of one seed must have been evaluated on the same examples (an :class:`EgkdError` otherwise).
    """
    mine = {r.seed: r for r in variant}
    theirs = {r.seed: r for r in reference}
    seeds = tuple(sorted(set(mine) & set(theirs)))
    if not seeds:
        return None
    difference = paired_difference([mine[s].main for s in seeds], [theirs[s].main for s in seeds])
    agreement = _agreement([mine[s] for s in seeds], [theirs[s] for s in seeds], family)
    pairs = []
    for seed in seeds:
        a, b = mine[seed].predictions, theirs[seed].predictions
        if a is None or b is None:
            return Comparison(
                reference=reference_name,
                seeds=seeds,
                difference=difference,
                mcnemar=None,
                family=family,
                agreement=agreement,
            )
        if (a.example_ids, a.ids_sha256) != (b.example_ids, b.ids_sha256):
            raise EgkdError(
                f"{mine[seed].name} and {theirs[seed].name} were evaluated on different examples; "
                "evaluate them on the same split to compare them"
            )
        pairs.append((a.correct(), b.correct()))
    return Comparison(
        reference=reference_name,
        seeds=seeds,
        difference=difference,
        mcnemar=pooled_mcnemar(pairs),
        family=family,
        agreement=agreement,
    )


def _agreement(mine: Sequence[SeedRun], theirs: Sequence[SeedRun], family: str | None) -> PairedDifference | None:
    """The paired difference in Spearman on ``family`` over the seed pairs where both runs have it."""
    if family is None:
        return None
    pairs = [
        (a.spearman[family], b.spearman[family])
        for a, b in zip(mine, theirs, strict=True)
        if family in a.spearman and family in b.spearman
    ]
    if not pairs:
        return None
    return paired_difference([a for a, _ in pairs], [b for _, b in pairs])

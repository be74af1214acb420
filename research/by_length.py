"""Each variant against a reference variant on one evaluation set, by the inputs' length in words.

Reads a finished run (its params.yaml, metrics/eval/<variant>-s<seed>.json and data/sets/), the set's examples as
`egkd evaluate` read them, and each student's predictions on the set. For every length bucket it prints the
reference's accuracy and each variant's paired difference to it over the seeds (points, 95% t-interval), the
same statistic the report gives for the whole set. Used for the medium profile's evaluation-set study
(docs/results.md):

    python -m research.by_length RUN_DIR --set mpqa --reference kd-random
    egkd profile medium --out /tmp/medium.yaml && python -m research.by_length . --params /tmp/medium.yaml \
        --evals metrics/medium/eval --set mpqa   # the committed medium run
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import load_params
from pipeline.evaluate.sets import open_set
from pipeline.report.data import read_evaluation
from pipeline.report.stats import PairedDifference, paired_difference
from pipeline.sources import open_source

BUCKETS = ((1, 1), (2, 2), (3, 4), (5, 9), (10, 10**6))  # words, inclusive
EVERY = (1, 10**6)


@dataclass(frozen=True)
class Bucket:
    """The examples of one length range: the reference's mean accuracy, each variant's paired difference (points)."""

    label: str
    count: int
    reference_accuracy: float
    differences: dict[str, PairedDifference]


def bucket_name(low: int, high: int) -> str:
    if (low, high) == EVERY:
        return "all"
    return str(low) if low == high else (f"{low}+" if high >= 10**6 else f"{low}-{high}")


def by_length(words: np.ndarray, hits: Mapping[str, Sequence[np.ndarray]], reference: str) -> list[Bucket]:
    """Per bucket of ``(N,)`` word counts (and over all), from each variant's ``(N,)`` bool hits per seed (the
    seeds in the same order for every variant): the reference's accuracy and the others' paired differences."""
    out = []
    for low, high in (*BUCKETS, EVERY):
        rows = (words >= low) & (words <= high)
        if not rows.any():
            continue
        acc = {v: [100.0 * float(h[rows].mean()) for h in seeds] for v, seeds in hits.items()}
        differences = {v: paired_difference(a, acc[reference]) for v, a in acc.items() if v != reference}
        out.append(Bucket(bucket_name(low, high), int(rows.sum()), float(np.mean(acc[reference])) / 100, differences))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a run's folder (params.yaml, metrics/eval/, data/sets/)")
    parser.add_argument("--params", type=Path, help="its params file (default: RUN/params.yaml)")
    parser.add_argument("--evals", type=Path, help="its evaluations (default: RUN/metrics/eval)")
    parser.add_argument("--set", dest="set_name", required=True)
    parser.add_argument("--reference", default="kd-random")
    args = parser.parse_args()

    params = load_params(args.params or args.run / "params.yaml")
    evals = args.evals or args.run / "metrics" / "eval"
    data = open_source(args.run / "data" / "sets" / params.data.task, params.data)
    chosen = params.experiment.eval_sets[args.set_name]
    examples = open_set(args.set_name, chosen, data, params.data, args.run / "data" / "sets").load().examples
    words = np.array([len(e.text_a.split()) + len((e.text_b or "").split()) for e in examples])

    def correct(variant: str, seed: int) -> np.ndarray:
        predictions = read_evaluation(evals / f"{variant}-s{seed}.json").sets[args.set_name].predictions
        if predictions is None or len(predictions.classes) != words.size:
            raise SystemExit(f"{variant}-s{seed}: no predictions for the {words.size} examples of {args.set_name}")
        return predictions.correct()

    seeds = params.experiment.seeds
    names = [v.name for v in params.experiment.variants]
    buckets = by_length(words, {v: [correct(v, s) for s in seeds] for v in names}, args.reference)
    print(f"{args.set_name}: {words.size} examples; paired differences to {args.reference}, points [95% CI]")
    others = [v for v in names if v != args.reference]
    header = ["words", "examples", f"{args.reference} accuracy", *others]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for b in buckets:
        cells = [b.label, str(b.count), f"{b.reference_accuracy:.4f}", *(b.differences[v].signed(2) for v in others)]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

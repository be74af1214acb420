"""Which evaluation sentences hold words the students' training sentences never show, and how students do there.

    python -m research.coverage --data ../shared/data/glue --train-limit 2000 --evals eval/ [--reference kd]

A view of a training sentence replaces some of its tokens by ``[MASK]``: whatever the explanation picks, the
views hold no word their sentences lack. This prints how much of the evaluation split's vocabulary the first
``--train-limit`` training examples cover, and, for every variant in the evaluation files, its accuracy on
the evaluation sentences grouped by how many of their words the training examples lack (0, 1-2, 3 or
more), averaged over seeds; with ``--reference``, each variant's mean difference to the reference in each
group, paired by seed. It places a gain: more training sentences bring new words, views of the same
sentences do not (docs/pipeline.md, "How far accuracy can go").

Words are the lower-cased runs of letters, digits and apostrophes of both segments of an example: a
tokenizer-free count, so that the figures do not depend on a student's vocabulary.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data import Example
from pipeline.errors import EgkdError
from pipeline.report.data import StudentRun

_WORD = re.compile(r"[\w']+")


def words(example: Example) -> list[str]:
    """The example's words, both segments, lower-cased, in order (repeats kept)."""
    text = example.text_a if example.text_b is None else f"{example.text_a} {example.text_b}"
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class Coverage:
    train_examples: int
    train_words: int  # distinct words in the training examples
    tokens: float  # share of the evaluation split's word occurrences seen in training
    types: float  # share of its distinct words seen in training
    sentences: float  # share of its examples whose every word was seen


def coverage(train: Sequence[Example], evaluation: Sequence[Example]) -> tuple[Coverage, dict[str, int]]:
    """The evaluation split's coverage by ``train``'s words, and per evaluation example id its unseen words."""
    vocabulary = {word for example in train for word in words(example)}
    occurrences = [word for example in evaluation for word in words(example)]
    unseen = {example.example_id: sum(word not in vocabulary for word in words(example)) for example in evaluation}
    return (
        Coverage(
            len(train),
            len(vocabulary),
            _share(word in vocabulary for word in occurrences),
            _share(word in vocabulary for word in set(occurrences)),
            _share(count == 0 for count in unseen.values()),
        ),
        unseen,
    )


BINS: tuple[tuple[int, int | None], ...] = ((0, 0), (1, 2), (3, None))  # unseen words per example, inclusive


def bin_label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else str(low) if low == high else f"{low}-{high}"


def bin_of(count: int) -> int:
    """The index in :data:`BINS` of an example with ``count`` unseen words."""
    return next(i for i, (low, high) in enumerate(BINS) if count >= low and (high is None or count <= high))


@dataclass(frozen=True)
class GroupAccuracy:
    variant: str
    seeds: int
    accuracy: tuple[float, ...]  # per bin of :data:`BINS`: mean over seeds of the accuracy on its examples
    vs_reference: tuple[float, ...] | None  # per bin: mean paired difference in points over the seeds both ran


def group_accuracy(
    runs: Sequence[StudentRun], unseen: dict[str, int], reference: str | None = None
) -> list[GroupAccuracy]:
    """Per variant (sorted by name), accuracy per bin of unseen words; runs without predictions are skipped."""
    by_variant: dict[str, dict[int | None, np.ndarray]] = {}
    for run in runs:
        if run.predictions is None:
            continue
        missing = next((i for i in run.predictions.example_ids if i not in unseen), None)
        if missing is not None:
            raise EgkdError(f"{run.name}: its example {missing} is not in the split the coverage was measured on")
        correct = run.predictions.correct()
        bins = np.asarray([bin_of(unseen[example_id]) for example_id in run.predictions.example_ids])
        by_variant.setdefault(run.variant, {})[run.seed] = np.asarray(
            [correct[bins == i].mean() if (bins == i).any() else np.nan for i in range(len(BINS))]
        )
    base = by_variant.get(reference) if reference is not None else None
    out = []
    for variant, per_seed in sorted(by_variant.items()):
        mean = np.mean(list(per_seed.values()), axis=0)
        paired = [seed for seed in per_seed if base is not None and variant != reference and seed in base]
        vs = None
        if paired and base is not None:
            vs = tuple(float(d) for d in 100 * np.mean([per_seed[s] - base[s] for s in paired], axis=0))
        out.append(GroupAccuracy(variant, len(per_seed), tuple(float(a) for a in mean), vs))
    return out


def _share(flags: Iterable[bool]) -> float:
    values = list(flags)
    return sum(values) / len(values) if values else float("nan")


def table(groups: Sequence[GroupAccuracy], unseen: dict[str, int], reference: str | None) -> str:
    counts = np.bincount([bin_of(c) for c in unseen.values()], minlength=len(BINS))
    heads = [f"{bin_label(*b)} unseen ({n})" for b, n in zip(BINS, counts, strict=True)]
    if reference:
        heads += [f"{bin_label(*b)}: vs {reference}, points" for b in BINS]
    lines = ["| variant | seeds | " + " | ".join(heads) + " |", "|---|---:|" + "---:|" * len(heads)]
    for g in groups:
        cells = [f"{a:.4f}" for a in g.accuracy]
        if reference:
            cells += ["-"] * len(BINS) if g.vs_reference is None else [f"{d:+.2f}" for d in g.vs_reference]
        lines.append(f"| {g.variant} | {g.seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from pipeline.data import load_dataset
    from pipeline.report.data import evaluation_files, read_evaluation, student_runs
    from pipeline.tasks import get_task

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the GLUE folder (or 'hub')")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--train-limit", type=int, required=True, help="the students' first N training examples")
    parser.add_argument("--split", default="dev", help="the split the students were evaluated on")
    parser.add_argument("--evals", type=Path, nargs="*", default=[], help="egkd evaluate JSONs or folders of them")
    parser.add_argument("--reference", default=None, help="variant to pair the others with by seed (e.g. kd)")
    args = parser.parse_args(argv)
    try:
        task = get_task(args.task)
        train = load_dataset(args.data, task, "train", args.train_limit).examples
        evaluation = load_dataset(args.data, task, args.split).examples
        runs = student_runs([read_evaluation(path) for path in evaluation_files(args.evals)]) if args.evals else []
        summary, unseen = coverage(train, evaluation)
        groups = group_accuracy(runs, unseen, args.reference)
    except EgkdError as err:
        raise SystemExit(f"error: {err}") from None
    print(
        f"{args.task} {args.split}: the first {summary.train_examples} training examples hold {summary.train_words} "
        f"words; they cover {summary.tokens:.3f} of the {args.split} words' occurrences, {summary.types:.3f} of its "
        f"distinct words, and every word of {summary.sentences:.3f} of its examples"
    )
    if runs:
        print(table(groups, unseen, args.reference))


if __name__ == "__main__":
    main()

"""Every student variant on every evaluation set (``experiment.eval_sets``: held-out and shifted data), over seeds.

``egkd evaluate --sets-root`` scores each model on each set (its metrics and predictions, forwards only). Per set and
variant this module gives

* each metric's mean and sample standard deviation over the seeds (:class:`~pipeline.report.stats.Stat`);
* the retention of the teacher's main metric: each run's over the teacher's on the same set, their mean with its
  95 % Student-t interval over the runs (:func:`~pipeline.report.stats.mean_interval`); only with the teacher's
  evaluation (``egkd report --teacher-eval``);
* the paired comparisons, as on dev (:func:`pipeline.report.compare.compare`: the difference with its 95 % interval,
  McNemar's test on the set's predictions), to the reference variant (vanilla KD) and to KD on random views
  (:func:`random_views`). KD on random views is the augmentation without an explanation: what a guided variant
  gains over it is the explanation's share.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pipeline.config import DistillParams, VariantParams
from pipeline.errors import EgkdError
from pipeline.evaluate.metrics import OneClass, TaskMetrics
from pipeline.methods import NO_METHOD
from pipeline.report.compare import Comparison, RunPredictions, SeedRun, compare
from pipeline.report.stats import PairedDifference, Stat, mean_interval

RANDOM = "random"  # the name KD on random views goes by in the summary's keys (accuracy_vs_random)


@dataclass(frozen=True)
class SetScore:
    """One model on one set, as ``egkd evaluate`` recorded it."""

    metrics: TaskMetrics
    predictions: RunPredictions | None = None


class ScoredRun(Protocol):
    """What the sets' summary needs of a student run (:class:`pipeline.report.data.StudentRun`)."""

    @property
    def name(self) -> str: ...

    @property
    def seed(self) -> int | None: ...

    @property
    def sets(self) -> Mapping[str, SetScore]: ...


@dataclass(frozen=True, kw_only=True)
class SetVariant:
    """One variant on one set, over its runs."""

    set: str
    variant: str
    runs: int
    metrics: tuple[tuple[str, Stat], ...]  # every metric of the set over the runs, its main first
    retention: PairedDifference | None = None  # main metric / the teacher's; None without the teacher's scores
    versus: Comparison | None = None  # against the reference variant (None: it is the reference)
    versus_random: Comparison | None = None  # against KD on random views (None: it is that variant, or none ran)
    one_class: tuple[tuple[str, float], ...] = ()  # (run, share) of the runs that predict one class on the set

    @property
    def main_name(self) -> str:
        return self.metrics[0][0]

    @property
    def main(self) -> Stat:
        return self.metrics[0][1]

    def to_json(self, reference: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"runs": self.runs, **{name: stat.to_json() for name, stat in self.metrics}}
        if self.retention is not None:
            entry["retention"] = self.retention.as_json()
        for name, comparison in ((reference, self.versus), (RANDOM, self.versus_random)):
            if comparison is not None:
                entry[f"{self.main_name}_vs_{name}"] = comparison.difference.as_json()
                mcnemar = comparison.mcnemar_json()
                if mcnemar is not None:
                    entry[f"mcnemar_vs_{name}"] = mcnemar
        if self.one_class:
            entry["one_class"] = {run: round(share, 6) for run, share in self.one_class}
        return entry

    def headline(self, reference: str) -> dict[str, float]:
        """The set's DVC metrics of this variant: the main metric's mean and std over seeds (the names of the dev
        headline's), its retention of the teacher's, and the paired differences to the reference (``vs_kd``) and to
        KD on random views (``vs_random``); the intervals are in ``summary.json``."""
        entry = {self.main_name: self.main.mean, f"{self.main_name}_std": self.main.std}
        if self.retention is not None:
            entry["retention"] = self.retention.mean
        for name, comparison in ((reference, self.versus), (RANDOM, self.versus_random)):
            if comparison is not None:
                entry[f"vs_{name}"] = comparison.difference.mean
        return entry


@dataclass(frozen=True, kw_only=True)
class SetsSummary:
    """Every variant on every set, and the teacher's scores on them."""

    names: tuple[str, ...]  # the sets, in the order the evaluations list them
    rows: tuple[SetVariant, ...]  # set by set, the variants in the report's order
    reference: str
    random: str | None = None  # the variant of KD on random views (None: the experiment has none)
    teacher: Mapping[str, TaskMetrics] = field(default_factory=dict)  # by set; empty without its evaluation

    def of(self, variant: str) -> tuple[SetVariant, ...]:
        return tuple(row for row in self.rows if row.variant == variant)

    def student_json(self, variant: str) -> dict[str, Any]:
        return {row.set: row.to_json(self.reference) for row in self.of(variant)}

    def headlines(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per set, the DVC metrics of every variant (:meth:`SetVariant.headline`) and of the teacher."""
        out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in self.names}
        for row in self.rows:
            out[row.set][row.variant] = row.headline(self.reference)
        for name, metrics in self.teacher.items():
            out.setdefault(name, {})["teacher"] = {metrics.main_name: metrics.main}
        return out

    def teacher_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, metrics in self.teacher.items():
            entry: dict[str, Any] = {key: round(value, 6) for key, value in metrics.values}
            entry["count"] = metrics.count
            if metrics.one_class is not None:
                entry["one_class"] = round(metrics.one_class.share, 6)
            out[name] = entry
        return out


def random_views(variants: Iterable[VariantParams], distill: DistillParams) -> str | None:
    """The first variant that trains by KD on random views (method none, view_kind random, views on), ``distill``
    filling what its options leave out; None when there is none."""
    for variant in variants:
        chosen = variant.options.apply(distill)
        if chosen.method == NO_METHOD and chosen.view_kind == "random" and chosen.views > 0:
            return variant.name
    return None


def read_sets(raw: Any) -> dict[str, SetScore]:
    """The ``sets`` of an evaluation JSON (absent: none); a set's predictions name their examples by a digest."""
    scores = {}
    for name, entry in (raw or {}).items():
        metrics, recorded = read_metrics(entry["metrics"]), entry["predictions"]
        predictions = None
        if recorded is not None:
            classes, labels = tuple(map(int, recorded["classes"])), tuple(map(int, recorded["labels"]))
            if not len(classes) == len(labels) == metrics.count:
                raise ValueError(f"sets.{name}.predictions: {len(classes)} classes, {len(labels)} labels")
            predictions = RunPredictions((), classes, labels, str(recorded["ids_sha256"]))
        scores[str(name)] = SetScore(metrics, predictions)
    return scores


def read_metrics(raw: Mapping[str, Any]) -> TaskMetrics:
    """A :class:`TaskMetrics` as ``egkd evaluate`` writes it (``values`` absent: the main metric alone)."""
    flag = raw.get("one_class")
    main_name, main = str(raw["main_name"]), float(raw["main"])
    values = tuple((str(name), float(value)) for name, value in raw.get("values") or [(main_name, main)])
    one_class = None if flag is None else OneClass(int(flag["label"]), float(flag["share"]))
    return TaskMetrics(main_name, main, values, int(raw["count"]), one_class)


def summarise_sets(
    groups: Mapping[str, Sequence[ScoredRun]],
    reference: str,
    random: str | None = None,
    teacher: Mapping[str, SetScore] | None = None,
) -> SetsSummary | None:
    """The runs of each variant (``groups``, in the report's order) on every set they were scored on; None when no
    run has a set."""
    names = list(dict.fromkeys(name for group in groups.values() for run in group for name in run.sets))
    if not names:
        return None
    teacher_metrics = {name: score.metrics for name, score in (teacher or {}).items() if name in names}
    rows = []
    for name in names:
        seeded = {variant: _seed_runs(group, name) for variant, group in groups.items()}
        for variant, group in groups.items():
            scores = [(run.name, run.sets[name]) for run in group if name in run.sets]
            if not scores:
                continue
            rows.append(
                SetVariant(
                    set=name,
                    variant=variant,
                    runs=len(scores),
                    metrics=_metric_stats([score.metrics for _, score in scores]),
                    retention=_retention([score.metrics for _, score in scores], teacher_metrics.get(name)),
                    versus=_versus(name, seeded, variant, reference),
                    versus_random=_versus(name, seeded, variant, random),
                    one_class=tuple(
                        (run, score.metrics.one_class.share) for run, score in scores if score.metrics.one_class
                    ),
                )
            )
    return SetsSummary(
        names=tuple(names), rows=tuple(rows), reference=reference, random=random, teacher=teacher_metrics
    )


def _seed_runs(group: Sequence[ScoredRun], name: str) -> list[SeedRun]:
    return [
        SeedRun(run.name, run.seed, run.sets[name].metrics.main, run.sets[name].predictions)
        for run in group
        if run.seed is not None and name in run.sets
    ]


def _versus(name: str, seeded: Mapping[str, list[SeedRun]], variant: str, other: str | None) -> Comparison | None:
    if other is None or other == variant or not seeded.get(other):
        return None
    try:
        return compare(seeded[variant], seeded[other], other)
    except EgkdError as err:
        raise EgkdError(f"eval set {name!r}: {err}") from None


def _metric_stats(metrics: Sequence[TaskMetrics]) -> tuple[tuple[str, Stat], ...]:
    names = list(dict.fromkeys(key for m in metrics for key, _ in m.values))
    stats = ((key, Stat.of([m.get(key) for m in metrics if key in dict(m.values)])) for key in names)
    return tuple((key, stat) for key, stat in stats if stat is not None)


def _retention(metrics: Sequence[TaskMetrics], teacher: TaskMetrics | None) -> PairedDifference | None:
    if teacher is None or teacher.main <= 0 or any(m.main_name != teacher.main_name for m in metrics):
        return None
    return mean_interval([m.main / teacher.main for m in metrics])

"""The report's data: the students' evaluations and training logs, aggregated over seeds.

* :func:`read_evaluation` reads one JSON that ``egkd evaluate --out`` wrote; several JSONs
  of the same model (agreement with different methods' caches) merge into one
  :class:`StudentRun` (:func:`student_runs`).
* A student is named after its model folder, ``<variant>-s<seed>`` (the names dvc.yaml
  gives them); its ``train_log.jsonl`` gives the loss curve.
* :func:`summarise` aggregates the runs of each variant over seeds: mean and sample
  standard deviation (:class:`Stat`), and the paired comparison with the reference variant
  (:mod:`pipeline.report.compare`). :meth:`ExperimentSummary.to_json` is the detailed
  ``summary.json``; :meth:`ExperimentSummary.headline` the few figures per variant that DVC
  lists as metrics (one small file per variant, so ``dvc metrics show`` prints a row per variant).
* The evaluation sets (held-out and shifted data, ``egkd evaluate --sets-root``) are summarised by
  :mod:`pipeline.report.sets`, and appear in both, per variant under ``sets``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import EgkdError
from pipeline.evaluate.metrics import OneClass
from pipeline.methods import Method
from pipeline.report.compare import DEFAULT_REFERENCE, Comparison, RunPredictions, SeedRun, compare
from pipeline.report.sets import SetScore, SetsSummary, read_metrics, read_sets, summarise_sets
from pipeline.report.stats import PairedDifference, Stat
from pipeline.training import LOG_FILE

_STUDENT_NAME = re.compile(r"^(?P<variant>.+)-s(?P<seed>\d+)$")


@dataclass(frozen=True)
class Agreement:
    """A student's explanations against one method's teacher maps (``egkd evaluate --cache``)."""

    method: str
    spearman: float | None
    top_k_overlap: float
    comprehensiveness: float | None
    sufficiency: float | None


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """What the report uses from one evaluation JSON."""

    path: Path
    model: str
    task: str
    main_name: str
    main: float
    count: int
    agreements: tuple[Agreement, ...]  # one per method compared
    predictions: RunPredictions | None = None  # per dev example (absent in reports of older egkd versions)
    one_class: OneClass | None = None  # its predictions fall (almost) all into one class
    sets: dict[str, SetScore] = field(default_factory=dict)  # its scores on the evaluation sets, by name


@dataclass(frozen=True)
class LossPoint:
    step: int
    loss: float


@dataclass(frozen=True, kw_only=True)
class StudentRun:
    name: str  # the model folder's name, e.g. kd-s1
    variant: str
    seed: int | None
    model: Path
    main_name: str
    main: float
    agreements: dict[str, Agreement] = field(default_factory=dict)  # by method
    losses: tuple[LossPoint, ...] = ()
    predictions: RunPredictions | None = None
    one_class: OneClass | None = None
    sets: dict[str, SetScore] = field(default_factory=dict)  # by evaluation set


@dataclass(frozen=True, kw_only=True)
class VariantSummary:
    variant: str
    runs: tuple[StudentRun, ...]
    main: Stat
    spearman: dict[str, Stat]  # by agreement method
    top_k_overlap: dict[str, Stat]
    comprehensiveness: dict[str, Stat]
    sufficiency: dict[str, Stat]
    family: str | None = None  # the explanation family it is trained on (None: a baseline)
    versus: Comparison | None = None  # against the reference variant, paired by seed (None: it is the reference)

    @property
    def one_class(self) -> tuple[StudentRun, ...]:
        """Its runs whose dev predictions fall (almost) all into one class."""
        return tuple(r for r in self.runs if r.one_class is not None)

    def own_agreement(self, method: str | None) -> PairedDifference | None:
        """On the row of its own family, its paired difference in Spearman to the reference; else None."""
        if self.versus is None or method is None or method != self.versus.family:
            return None
        return self.versus.agreement

    def measures(self, method: str) -> tuple[Stat | None, ...]:
        """(Spearman, top-k overlap, AOPC comprehensiveness, AOPC sufficiency) against one method."""
        return tuple(
            stats.get(method) for stats in (self.spearman, self.top_k_overlap, self.comprehensiveness, self.sufficiency)
        )


@dataclass(frozen=True)
class TeacherSummary:
    main_name: str
    main: float
    train_examples: int | None


@dataclass(frozen=True, kw_only=True)
class ExperimentSummary:
    """Per variant, the dev metric and, per agreement method, the explanation measures over seeds."""

    task: str
    main_name: str
    methods: tuple[str, ...]  # agreement methods present, in a stable order
    variants: tuple[VariantSummary, ...]
    teacher: TeacherSummary | None
    reference: str = DEFAULT_REFERENCE
    sets: SetsSummary | None = None  # every variant on every evaluation set (None: none was scored)

    def to_json(self) -> dict:
        """Everything aggregated (``metrics/summary.json``): per variant the dev metric over seeds, the paired
        difference to the reference (``accuracy_vs_kd``: mean, ci95_low, ci95_high, seeds) and McNemar's test on
        the dev predictions (``mcnemar_vs_kd``: pooled over the seeds, and per seed), for a variant guided by a
        family the paired difference in Spearman agreement with that family's maps (``agreement_vs_kd``: method,
        mean, ci95_low, ci95_high, seeds), runs that predict one class, and every explanation measure against
        every family; with evaluation sets, per variant and set (``sets``) the metrics, the retention of the
        teacher's and the paired differences to the reference and to KD on random views (``random_variant``)."""
        students = {}
        for v in self.variants:
            entry: dict = {"runs": len(v.runs), self.main_name: v.main.to_json()}
            if v.versus is not None:
                entry[f"{self.main_name}_vs_{self.reference}"] = v.versus.difference.as_json()
                mcnemar = v.versus.mcnemar_json()
                if mcnemar is not None:
                    entry[f"mcnemar_vs_{self.reference}"] = mcnemar
                if v.versus.agreement is not None:
                    entry[f"agreement_vs_{self.reference}"] = {
                        "method": v.versus.family,
                        **v.versus.agreement.as_json(),
                    }
            if v.one_class:
                entry["one_class"] = {r.name: round(r.one_class.share, 6) for r in v.one_class if r.one_class}
            for name, stats in (
                ("spearman", v.spearman),
                ("top_k_overlap", v.top_k_overlap),
                ("comprehensiveness", v.comprehensiveness),
                ("sufficiency", v.sufficiency),
            ):
                if stats:
                    entry[name] = {method: stat.to_json() for method, stat in stats.items()}
            if self.sets is not None and self.sets.of(v.variant):
                entry["sets"] = self.sets.student_json(v.variant)
            students[v.variant] = entry
        out: dict = {"students": students}
        teacher: dict = {} if self.teacher is None else {self.teacher.main_name: round(self.teacher.main, 6)}
        if self.sets is not None and self.sets.teacher:
            teacher["sets"] = self.sets.teacher_json()
        if teacher:
            out["teacher"] = teacher
        if self.sets is not None and self.sets.random is not None:
            out["random_variant"] = self.sets.random
        return out

    def headline(self) -> dict[str, dict[str, float]]:
        """The figures compared across experiments, per variant (and ``teacher``): the dev metric's mean and
        std over seeds, the agreement (Spearman) with the teacher on its own family, and the paired difference
        to the reference with its 95 % interval (``vs_kd``, ``vs_kd_lo``, ``vs_kd_up``). DVC sorts a file's keys,
        and these names sort in that reading order; the figures are rounded to 4 decimals. The evaluation sets'
        figures are :meth:`set_headlines`."""
        main = self.main_name
        out: dict[str, dict[str, float]] = {}
        for v in self.variants:
            entry = {main: v.main.mean, f"{main}_std": v.main.std}
            own = v.spearman.get(v.family) if v.family else None
            if own is not None:
                entry["agreement"] = own.mean
            if v.versus is not None:
                d, key = v.versus.difference, f"vs_{self.reference}"
                entry[key] = d.mean
                if d.low is not None and d.high is not None:
                    entry[f"{key}_lo"], entry[f"{key}_up"] = d.low, d.high
            out[v.variant] = _rounded(entry)
        if self.teacher is not None:
            out["teacher"] = _rounded({main: self.teacher.main})
        return out

    def set_headlines(self) -> dict[str, dict[str, dict[str, float]]]:
        """Per evaluation set, per variant (and ``teacher``) its DVC metrics (``SetVariant.headline``), rounded to 4
        decimals; empty without evaluation sets."""
        if self.sets is None:
            return {}
        return {name: {v: _rounded(f) for v, f in rows.items()} for name, rows in self.sets.headlines().items()}

    def rows(self) -> list[tuple[VariantSummary, str | None]]:
        """The comparison table's rows: one per variant and agreement method (one row without any)."""
        return [
            (v, method)
            for v in self.variants
            for method in ([m for m in self.methods if m in v.spearman or m in v.top_k_overlap] or [None])  # type: ignore[list-item]
        ]


def split_name(name: str) -> tuple[str, int | None]:
    """``kd-s2`` -> (``kd``, 2); a name without ``-s<seed>`` is a variant of its own."""
    match = _STUDENT_NAME.match(name)
    return (match["variant"], int(match["seed"])) if match else (name, None)


def _load_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise EgkdError(f"{path}: not a readable JSON file ({err})") from None


def read_evaluation(path: Path) -> Evaluation:
    raw = _load_json(path)
    try:
        metrics = raw["metrics"]
        recorded = raw.get("predictions")
        predictions = (
            None
            if recorded is None
            else RunPredictions(
                tuple(map(str, recorded["example_ids"])),
                tuple(map(int, recorded["classes"])),
                tuple(map(int, recorded["labels"])),
            )
        )
        main = read_metrics(metrics)
        scores = tuple(
            Agreement(
                e["agreement"]["method"],
                e["agreement"].get("spearman"),
                e["agreement"]["top_k_overlap"],
                e["faithfulness"].get("comprehensiveness"),
                e["faithfulness"].get("sufficiency"),
            )
            for e in raw.get("explanations", ())
        )
        return Evaluation(
            path=path,
            model=raw["model"],
            task=raw["task"],
            main_name=main.main_name,
            main=main.main,
            count=main.count,
            agreements=scores,
            predictions=predictions,
            one_class=main.one_class,
            sets=read_sets(raw.get("sets")),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise EgkdError(f"{path}: not an egkd evaluation report (missing or bad field {err})") from None


def evaluation_files(sources: Sequence[Path]) -> list[Path]:
    """The JSON files among ``sources`` (files, or folders searched recursively), sorted."""
    files: set[Path] = set()
    for source in sources:
        if source.is_dir():
            files.update(source.rglob("*.json"))
        elif source.is_file():
            files.add(source)
        else:
            raise EgkdError(f"evaluation path not found: {source}")
    if not files:
        raise EgkdError(f"no evaluation JSON files in {', '.join(map(str, sources))} (run egkd evaluate --out)")
    return sorted(files)


def read_losses(model: Path) -> tuple[LossPoint, ...]:
    """The loss per step from a model's training log; lines that do not parse (a run killed while it
    wrote its last line) are skipped, as the trainer itself does when it resumes."""
    log = model / LOG_FILE
    if not log.is_file():
        return ()
    points = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            points.append(LossPoint(int(record["step"]), float(record["loss"])))
        except (ValueError, TypeError, KeyError):
            continue
    return tuple(points)


def student_runs(evaluations: Sequence[Evaluation]) -> list[StudentRun]:
    """One run per evaluated model, its evaluations merged (one agreement per method)."""
    by_model: dict[str, list[Evaluation]] = {}
    for evaluation in evaluations:
        by_model.setdefault(evaluation.model, []).append(evaluation)
    runs = []
    for model, group in by_model.items():
        path = Path(model)
        variant, seed = split_name(path.name)
        agreements = {a.method: a for e in group for a in e.agreements}
        first = group[0]
        predictions = next((e.predictions for e in group if e.predictions is not None), None)
        runs.append(
            StudentRun(
                name=path.name,
                variant=variant,
                seed=seed,
                model=path,
                main_name=first.main_name,
                main=first.main,
                agreements=agreements,
                losses=read_losses(path),
                predictions=predictions,
                one_class=first.one_class,
                sets=next((e.sets for e in group if e.sets), {}),
            )
        )
    return runs


def summarise(
    runs: Sequence[StudentRun],
    task: str,
    order: Sequence[str] = (),
    teacher: TeacherSummary | None = None,
    reference: str = DEFAULT_REFERENCE,
    families: Mapping[str, str] | None = None,
    random: str | None = None,
    teacher_sets: Mapping[str, SetScore] | None = None,
) -> ExperimentSummary:
    """Aggregate runs by variant; variants named in ``order`` come first, in that order.

    Every variant but ``reference`` is compared with it, paired by seed (none when no run of ``reference``
    is given). ``families`` maps a variant to the explanation family it trains on (its distill method);
    a variant it does not name and that is named like a family is taken to train on that family. On the evaluation
    sets every variant is also compared with ``random`` (KD on random views), and with ``teacher_sets`` (the teacher's
    scores on them) retains a share of the teacher's metric.
    """
    variants: dict[str, list[StudentRun]] = {}
    for run in sorted(runs, key=lambda r: (r.variant, r.seed if r.seed is not None else -1)):
        variants.setdefault(run.variant, []).append(run)
    rank = {name: i for i, name in enumerate(order)}
    names = sorted(variants, key=lambda n: (rank.get(n, len(rank)), n))
    all_methods = {m for run in runs for m in run.agreements}
    known = [m.value for m in Method]
    methods = tuple(m for m in known if m in all_methods) + tuple(sorted(all_methods - set(known)))

    def per_method(group: list[StudentRun], attribute: str) -> dict[str, Stat]:
        stats = {}
        for method in methods:
            stat = Stat.of([getattr(r.agreements[method], attribute) for r in group if method in r.agreements])
            if stat is not None:
                stats[method] = stat
        return stats

    def seeded(group: list[StudentRun]) -> list[SeedRun]:
        return [SeedRun(r.name, r.seed, r.main, r.predictions, _spearmans(r)) for r in group if r.seed is not None]

    baseline = seeded(variants.get(reference, []))
    named = dict(families or {})

    def family(name: str) -> str | None:
        chosen = named.get(name, name if name in known else None)
        return None if chosen in (None, "none") else chosen

    summaries = tuple(
        VariantSummary(
            variant=name,
            runs=tuple(group),
            main=Stat.of([r.main for r in group]),  # type: ignore[arg-type]  # every run has a main metric
            spearman=per_method(group, "spearman"),
            top_k_overlap=per_method(group, "top_k_overlap"),
            comprehensiveness=per_method(group, "comprehensiveness"),
            sufficiency=per_method(group, "sufficiency"),
            family=family(name),
            versus=compare(seeded(group), baseline, reference, family(name))
            if name != reference and baseline
            else None,
        )
        for name, group in ((n, variants[n]) for n in names)
    )
    main_name = runs[0].main_name if runs else "accuracy"
    sets = summarise_sets({name: variants[name] for name in names}, reference, random, teacher_sets)
    return ExperimentSummary(
        task=task,
        main_name=main_name,
        methods=methods,
        variants=summaries,
        teacher=teacher,
        reference=reference,
        sets=sets,
    )


def _spearmans(run: StudentRun) -> dict[str, float]:
    return {m: a.spearman for m, a in run.agreements.items() if a.spearman is not None}


def read_teacher(model: Path) -> TeacherSummary | None:
    """The teacher's dev metric from the ``metrics.json`` that ``egkd finetune`` saved beside it."""
    if not model.is_dir():
        raise EgkdError(f"teacher not found: {model} (the folder egkd finetune saved it to)")
    path = model / "metrics.json"
    if not path.is_file():
        return None  # a teacher fine-tuned elsewhere: the report says nothing of its dev metric
    raw = _load_json(path)
    if isinstance(raw, dict) and "dev" in raw and raw["dev"] is None:
        return None  # fine-tuned on data without a dev split
    try:
        return TeacherSummary(raw["dev"]["main_name"], float(raw["dev"]["main"]), raw.get("train_examples"))
    except (KeyError, TypeError, ValueError):
        raise EgkdError(f"{path}: not the metrics.json of egkd finetune") from None


def _rounded(figures: dict[str, float]) -> dict[str, float]:
    return {key: round(value, 4) + 0.0 for key, value in figures.items()}

"""``egkd report`` as one library call: evaluations, training logs and caches -> HTML, metrics, plot data.

:func:`build_report` reads the evaluation JSONs (:mod:`pipeline.report.data`),
aggregates the students over seeds, computes explanation heatmaps of a few dev
sentences for one student of each variant (:mod:`pipeline.report.heatmaps`) and
writes

* the self-contained HTML page (:mod:`pipeline.report.html`);
* ``summary.json``: everything aggregated, with every variant's paired difference to the
  reference variant (vanilla KD) and McNemar's test on the dev predictions (an output);
* the headline folder: ``<variant>.json`` and ``teacher.json``, a handful of figures each, the
  metrics ``dvc metrics show`` / ``dvc exp show`` compare across experiments;
* the CSVs behind ``dvc plots show`` (:mod:`pipeline.report.plots`).

With the students scored on evaluation sets (``egkd evaluate --sets-root``) each of them also has a section per set
(:mod:`pipeline.report.sets`); the teacher's evaluation (``teacher_eval``, left out of the students') gives the
retention of its metric.

Every output path is the caller's choice (dvc.yaml names them); nothing is written elsewhere.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline import versions
from pipeline.config import ExplainParams
from pipeline.errors import EgkdError
from pipeline.report.compare import DEFAULT_REFERENCE, Comparison
from pipeline.report.data import (
    Evaluation,
    ExperimentSummary,
    StudentRun,
    evaluation_files,
    read_evaluation,
    read_teacher,
    split_name,
    student_runs,
    summarise,
)
from pipeline.report.heatmaps import HeatmapStudent, build_heatmaps
from pipeline.report.html import render_page
from pipeline.report.plots import write_comparison_csv, write_loss_csv, write_retention_csv
from pipeline.report.sets import SetsSummary
from pipeline.report.stats import PairedDifference, Stat


@dataclass(frozen=True, kw_only=True)
class ReportRequest:
    evals: tuple[Path, ...]  # evaluation JSON files, or folders of them
    out: Path  # the HTML page
    summary: Path | None = None  # aggregated metrics JSON
    headline: Path | None = None  # folder of one small JSON per variant: the DVC metrics
    set_metrics: Path | None = None  # folder of one folder per evaluation set, one small JSON per variant in each
    loss_csv: Path | None = None
    comparison_csv: Path | None = None
    caches: tuple[Path, ...] = ()  # caches whose dev partitions give the heatmaps' teacher maps
    teacher: Path | None = None  # the teacher folder (its metrics.json)
    variant_order: tuple[str, ...] = ()  # table order; other variants follow by name
    examples: int = 4  # dev sentences shown as heatmaps
    explain: ExplainParams = field(default_factory=ExplainParams)
    reference: str = DEFAULT_REFERENCE  # the variant every other one is compared with, paired by seed
    families: Mapping[str, str] = field(default_factory=dict)  # variant -> the explanation family it trains on
    # listed_only: only the students of variant_order and seeds (what the experiment lists); the evaluations
    # of others, e.g. of a variant removed from params.yaml, are left out and named in a note
    listed_only: bool = False
    seeds: tuple[int, ...] = ()
    teacher_eval: Path | None = None  # the teacher's evaluation JSON (egkd evaluate --sets-root): retention
    random: str | None = None  # the variant of KD on random views, every variant's second comparison on the sets
    retention_csv: Path | None = None


@dataclass(frozen=True)
class ReportResult:
    summary: ExperimentSummary
    students: int
    sentences: int
    written: tuple[Path, ...]
    notes: tuple[str, ...] = ()


def representatives(runs: list[StudentRun], order: list[str]) -> list[HeatmapStudent]:
    """One student per variant for the heatmaps: the run with the lowest seed whose model folder exists."""
    chosen = []
    for variant in order:
        members = sorted(
            (r for r in runs if r.variant == variant and r.model.is_dir()), key=lambda r: (r.seed is None, r.seed)
        )
        if members:
            chosen.append(HeatmapStudent(members[0].name, members[0].model))
    return chosen


def listed(evaluations: list[Evaluation], request: ReportRequest) -> tuple[list[Evaluation], list[str]]:
    """With ``listed_only``, the evaluations of the listed variants and seeds, and the names of the rest's models
    (an experiment folder may hold another experiment's evaluations: another task's, left out before any check)."""
    if not request.listed_only:
        return evaluations, []
    names = {e.model: Path(e.model).name for e in evaluations}
    keep = [e for e in evaluations if _is_listed(names[e.model], request)]
    if not keep:
        raise EgkdError(
            f"none of the {len(set(names))} evaluated models is of a variant and seed that the experiment lists "
            f"(variants {', '.join(request.variant_order)}; seeds {', '.join(map(str, request.seeds))})"
        )
    kept = {e.model for e in keep}
    return keep, sorted({name for model, name in names.items() if model not in kept})


def _is_listed(name: str, request: ReportRequest) -> bool:
    variant, seed = split_name(name)
    return variant in request.variant_order and seed in request.seeds


def build_report(request: ReportRequest) -> ReportResult:
    teacher_eval = None if request.teacher_eval is None else read_evaluation(request.teacher_eval)
    files = [p for p in evaluation_files(request.evals) if teacher_eval is None or not p.samefile(teacher_eval.path)]
    evaluations, left_out = listed([read_evaluation(path) for path in files], request)
    tasks = sorted({e.task for e in evaluations} | ({teacher_eval.task} if teacher_eval else set()))
    if len(tasks) > 1:
        raise EgkdError(f"the evaluations are of different tasks ({', '.join(tasks)}); report one task at a time")
    if not evaluations:
        raise EgkdError(f"no student evaluations in {', '.join(map(str, request.evals))}, only the teacher's")
    runs = student_runs(evaluations)
    teacher = read_teacher(request.teacher) if request.teacher is not None else None
    summary = summarise(
        runs,
        tasks[0],
        request.variant_order,
        teacher,
        request.reference,
        request.families,
        request.random,
        None if teacher_eval is None else teacher_eval.sets,
    )
    notes = report_notes(summary)
    if summary.sets is not None and teacher_eval is None:
        notes.append("No teacher evaluation (egkd report --teacher-eval): the retention of its metric is left out.")
    if summary.sets is None and teacher_eval is not None and teacher_eval.sets:
        notes.append("The students were scored on no evaluation set (egkd evaluate --sets-root): no retention.")
    missing = [r.name for r in runs if not r.losses]
    if missing:
        notes.append(f"No training log for: {', '.join(missing)}.")
    unlisted = sorted({r.variant for r in runs} - set(request.variant_order)) if request.variant_order else []
    if unlisted:  # e.g. an old run's evaluations left in the folder after a variant was removed from params.yaml
        notes.append(f"Evaluations of variants that experiment.variants does not list: {', '.join(unlisted)}.")
    if left_out:
        notes.append(f"Left out, not listed by the experiment's variants and seeds: {', '.join(left_out)}.")
    sentences = []
    if request.caches and request.examples > 0:
        students = representatives(runs, [v.variant for v in summary.variants])
        sentences = build_heatmaps(request.caches, students, request.explain, request.examples)
    written = []
    request.out.parent.mkdir(parents=True, exist_ok=True)
    request.out.write_text(render_page(summary, runs, sentences, notes), encoding="utf-8")
    written.append(request.out)
    if request.summary is not None:
        request.summary.parent.mkdir(parents=True, exist_ok=True)
        recorded = {**summary.to_json(), "versions": versions.current().as_dict()}  # the libraries of this run
        request.summary.write_text(json.dumps(recorded, indent=2) + "\n", encoding="utf-8")
        written.append(request.summary)
    if request.headline is not None:
        written += write_headline(summary.headline(), request.headline, summary)
    if request.set_metrics is not None:
        for name, figures in summary.set_headlines().items():
            written += write_headline(figures, request.set_metrics / name, summary)
    if request.loss_csv is not None:
        write_loss_csv(runs, request.loss_csv)
        written.append(request.loss_csv)
    if request.comparison_csv is not None:
        write_comparison_csv(summary, request.comparison_csv)
        written.append(request.comparison_csv)
    if request.retention_csv is not None:
        write_retention_csv(summary, request.retention_csv)
        written.append(request.retention_csv)
    return ReportResult(summary, len(runs), len(sentences), tuple(written), tuple(notes))


def report_notes(summary: ExperimentSummary) -> list[str]:
    """What the reader must not miss: students that predict one class, a missing reference variant."""
    notes = []
    for v in summary.variants:
        for run in v.one_class:
            assert run.one_class is not None
            notes.append(
                f"{run.name} predicts one class for {run.one_class.share:.1%} of the dev examples "
                "(flagged at 95% or more): it has learnt next to nothing but the class balance."
            )
    for row in summary.sets.rows if summary.sets is not None else ():
        for name, share in row.one_class:
            notes.append(
                f"{name} predicts one class for {share:.1%} of the {row.set} examples (flagged at 95% or more)."
            )
    if not any(v.variant == summary.reference for v in summary.variants):
        notes.append(f"No run of the reference variant {summary.reference!r}: no paired differences.")
    elif not any(v.versus is not None and v.versus.mcnemar is not None for v in summary.variants):
        if any(v.versus is not None for v in summary.variants):
            notes.append("The evaluations record no per-example predictions: no McNemar test (rerun egkd evaluate).")
    return notes


def write_headline(figures: dict[str, dict[str, float]], folder: Path, summary: ExperimentSummary) -> list[Path]:
    """One ``<variant>.json`` per variant and ``teacher.json`` in ``folder`` (``dvc repro`` empties the folder,
    an output of the report stage, before the stage runs)."""
    if "teacher" in {v.variant for v in summary.variants}:
        raise EgkdError("a variant is named 'teacher', which the headline folder keeps for the teacher")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, values in figures.items():
        path = folder / f"{name}.json"
        path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    return written


def signed_interval(stat: PairedDifference | None, digits: int = 4) -> str:
    """``+0.0061 [-0.0123, +0.0245]``: the mean difference and its 95 % interval (the mean alone for one seed)."""
    return "–" if stat is None else stat.signed(digits)


def mcnemar_cell(comparison: Comparison | None) -> str:
    if comparison is None or comparison.mcnemar is None:
        return "–"
    pooled = comparison.mcnemar.pooled
    return f"{pooled.p_value:.3g} ({pooled.b}/{pooled.c})"


def stat_cell(stat: Stat | None) -> str:
    if stat is None:
        return "–"
    return f"{stat.mean:.4f} ± {stat.std:.4f}" if stat.n > 1 else f"{stat.mean:.4f}"


def format_table(summary: ExperimentSummary) -> list[str]:
    """The comparison as a Markdown table: mean ± std over seeds, and the paired difference to the reference
    variant with its 95 % interval and McNemar's p-value (b/c: examples only the variant / only the reference
    gets right); on a guided variant's own family, its Spearman's paired difference to the reference beside
    it; with evaluation sets, their table (:func:`sets_table`); then one line per flagged student."""
    head = [
        "variant",
        "runs",
        f"dev {summary.main_name}",
        f"vs {summary.reference} (95% CI)",
        "McNemar p (b/c)",
        "agreement with",
        "Spearman",
        "top-k overlap",
        "AOPC compr.",
        "AOPC suff.",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, method in summary.rows():
        stats = v.measures(method) if method else (None,) * 4
        versus = signed_interval(v.versus.difference if v.versus else None)
        cells = [v.variant, str(len(v.runs)), stat_cell(v.main), versus, mcnemar_cell(v.versus), method or "–"]
        measures = [stat_cell(s) for s in stats]
        agreement = v.own_agreement(method)
        if agreement is not None:
            measures[0] += f" (vs {summary.reference} {agreement.signed(3)})"
        lines.append("| " + " | ".join(cells + measures) + " |")
    if summary.teacher is not None:
        lines.append(f"| teacher | 1 | {summary.teacher.main:.4f} |" + " |" * 7)
    if summary.sets is not None:
        lines += ["", *sets_table(summary.sets)]
    return lines + [f"note: {note}" for note in report_notes(summary)]


def sets_table(sets: SetsSummary) -> list[str]:
    """Every variant on every evaluation set, as a Markdown table: the main metric (mean ± std), its retention of
    the teacher's (mean [95% CI]), and the paired differences to the reference and to KD on random views."""
    random = sets.random or "random views"
    head = ["set", "variant", "runs", "metric", "retention (95% CI)"]
    head += [f"vs {sets.reference} (95% CI)", "McNemar p (b/c)", f"vs {random} (95% CI)", "McNemar p (b/c)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sets.rows:
        cells = [row.set, row.variant, str(row.runs), f"{row.main_name} {stat_cell(row.main)}"]
        retention = row.retention
        interval = "" if retention is None or retention.low is None else f" [{retention.low:.4f}, {retention.high:.4f}]"
        cells.append("–" if retention is None else f"{retention.mean:.4f}{interval}")
        for comparison in (row.versus, row.versus_random):
            cells += [signed_interval(comparison.difference if comparison else None), mcnemar_cell(comparison)]
        lines.append("| " + " | ".join(cells) + " |")
    for name, metrics in sets.teacher.items():
        lines.append(f"| {name} | teacher | 1 | {metrics.main_name} {metrics.main:.4f} |" + " |" * 5)
    return lines

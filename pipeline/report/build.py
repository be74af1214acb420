"""``egkd report`` as one library call: evaluations, training logs and caches -> HTML, metrics, plot data.

:func:`build_report` reads the evaluation JSONs (:mod:`pipeline.report.data`),
aggregates the students over seeds, computes explanation heatmaps of a few dev
sentences for one student of each variant (:mod:`pipeline.report.heatmaps`) and
writes

* the self-contained HTML page (:mod:`pipeline.report.html`);
* ``summary.json``: the aggregated metrics, for ``dvc metrics show`` / ``dvc exp show``;
* the CSVs behind ``dvc plots show`` (:mod:`pipeline.report.plots`).

Every output path is the caller's choice (dvc.yaml names them); nothing is written elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.config import ExplainParams
from pipeline.errors import EgkdError
from pipeline.report.data import (
    ExperimentSummary,
    Stat,
    StudentRun,
    evaluation_files,
    read_evaluation,
    read_teacher,
    student_runs,
    summarise,
)
from pipeline.report.heatmaps import HeatmapStudent, build_heatmaps
from pipeline.report.html import render_page
from pipeline.report.plots import write_comparison_csv, write_loss_csv


@dataclass(frozen=True)
class ReportRequest:
    evals: tuple[Path, ...]  # evaluation JSON files, or folders of them
    out: Path  # the HTML page
    summary: Path | None = None  # aggregated metrics JSON
    loss_csv: Path | None = None
    comparison_csv: Path | None = None
    caches: tuple[Path, ...] = ()  # caches whose dev partitions give the heatmaps' teacher maps
    teacher: Path | None = None  # the teacher folder (its metrics.json)
    variant_order: tuple[str, ...] = ()  # table order; other variants follow by name
    examples: int = 4  # dev sentences shown as heatmaps
    explain: ExplainParams = field(default_factory=ExplainParams)


@dataclass(frozen=True)
class ReportResult:
    summary: ExperimentSummary
    students: int
    sentences: int
    written: tuple[Path, ...]


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


def build_report(request: ReportRequest) -> ReportResult:
    evaluations = [read_evaluation(path) for path in evaluation_files(request.evals)]
    tasks = sorted({e.task for e in evaluations})
    if len(tasks) > 1:
        raise EgkdError(f"the evaluations are of different tasks ({', '.join(tasks)}); report one task at a time")
    runs = student_runs(evaluations)
    teacher = read_teacher(request.teacher) if request.teacher is not None else None
    summary = summarise(runs, tasks[0], request.variant_order, teacher)
    notes = []
    missing = [r.name for r in runs if not r.losses]
    if missing:
        notes.append(f"No training log for: {', '.join(missing)}.")
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
        request.summary.write_text(json.dumps(summary.to_json(), indent=2) + "\n", encoding="utf-8")
        written.append(request.summary)
    if request.loss_csv is not None:
        write_loss_csv(runs, request.loss_csv)
        written.append(request.loss_csv)
    if request.comparison_csv is not None:
        write_comparison_csv(summary, request.comparison_csv)
        written.append(request.comparison_csv)
    return ReportResult(summary, len(runs), len(sentences), tuple(written))


def format_table(summary: ExperimentSummary) -> list[str]:
    """The comparison as a Markdown table (mean ± std over seeds)."""

    def cell(stat: Stat | None) -> str:
        if stat is None:
            return "–"
        return f"{stat.mean:.4f} ± {stat.std:.4f}" if stat.n > 1 else f"{stat.mean:.4f}"

    head = [
        "variant",
        "runs",
        f"dev {summary.main_name}",
        "agreement with",
        "Spearman",
        "top-k overlap",
        "AOPC compr.",
        "AOPC suff.",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for v, method in summary.rows():
        stats = v.measures(method) if method else (None,) * 4
        cells = [v.variant, str(len(v.runs)), cell(v.main), method or "–"] + [cell(s) for s in stats]
        lines.append("| " + " | ".join(cells) + " |")
    if summary.teacher is not None:
        lines.append(f"| teacher | 1 | {summary.teacher.main:.4f} |" + " |" * 5)
    return lines

"""``egkd report``: the experiment's HTML report, aggregated metrics and plot data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import override
from pipeline.methods import NO_METHOD
from pipeline.report.sets import random_views
from stages.common import ParamsOption, read_params, user_errors


@user_errors
def command(
    evals: Annotated[
        list[Path],
        typer.Option(
            "--evals",
            help="Evaluation JSONs (egkd evaluate --out) or folders of them; repeat for more. "
            "Students are named after their model folders, <variant>-s<seed>.",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The HTML page to write.")],
    summary: Annotated[
        Path | None,
        typer.Option(
            "--summary",
            help="Write everything aggregated over seeds, with the paired comparisons, to this JSON file.",
        ),
    ] = None,
    headline: Annotated[
        Path | None,
        typer.Option(
            "--headline",
            help="Write the headline figures to this folder, one <variant>.json each and teacher.json "
            "(the DVC metrics).",
        ),
    ] = None,
    set_metrics: Annotated[
        Path | None,
        typer.Option(
            "--set-metrics",
            help="Write each evaluation set's figures to a folder of this one, one <variant>.json each and "
            "teacher.json (the DVC metrics per set: mean, std, retention, vs_kd, vs_random).",
        ),
    ] = None,
    loss_csv: Annotated[
        Path | None,
        typer.Option("--loss-csv", help="Write every student's training loss per step to this CSV (for dvc plots)."),
    ] = None,
    comparison_csv: Annotated[
        Path | None,
        typer.Option(
            "--comparison-csv", help="Write mean and std per variant and measure to this CSV (for dvc plots)."
        ),
    ] = None,
    retention_csv: Annotated[
        Path | None,
        typer.Option(
            "--retention-csv",
            help="Write the retention of the teacher's metric per evaluation set and variant, with its 95% interval, "
            "to this CSV (for dvc plots; needs --teacher-eval).",
        ),
    ] = None,
    cache: Annotated[
        list[Path] | None,
        typer.Option(
            "--cache",
            help="An explanation cache, or a folder of caches, whose dev partitions give the heatmaps' teacher "
            "maps; repeatable.",
        ),
    ] = None,
    teacher: Annotated[
        Path | None, typer.Option("--teacher", help="The teacher folder: its dev metric is shown beside the students'.")
    ] = None,
    teacher_eval: Annotated[
        Path | None,
        typer.Option(
            "--teacher-eval",
            help="The teacher's evaluation JSON (egkd evaluate --sets-root): each student's retention of its metric "
            "on every evaluation set; left out of the students if it lies among --evals. Without it, no retention.",
        ),
    ] = None,
    examples: Annotated[
        int | None,
        typer.Option("--examples", help="Dev sentences shown as heatmaps (default: experiment.report_examples)."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="The variant every other one is compared with, paired by seed (default: experiment.reference).",
        ),
    ] = None,
    listed_only: Annotated[
        bool,
        typer.Option(
            "--listed-only",
            help="Report only the variants and seeds experiment lists; other evaluations in the folders (say of a "
            "variant removed from params.yaml) are left out and named in a note.",
        ),
    ] = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Compare the students (mean ± std, and the paired difference to vanilla KD with its 95% interval), plot
    their training, show their explanations."""
    from pipeline.report.build import ReportRequest, build_report, format_table  # torch (the training log's name)

    params = read_params(params_file)
    experiment = override(params.experiment, reference=reference, report_examples=examples)
    request = ReportRequest(
        evals=tuple(evals),
        out=out,
        summary=summary,
        headline=headline,
        set_metrics=set_metrics,
        loss_csv=loss_csv,
        comparison_csv=comparison_csv,
        caches=tuple(cache or ()),
        teacher=teacher,
        variant_order=tuple(v.name for v in experiment.variants),
        examples=experiment.report_examples,
        explain=params.explain,
        reference=experiment.reference,
        families={v.name: str(v.family(params.distill) or NO_METHOD) for v in experiment.variants},
        listed_only=listed_only,
        seeds=tuple(experiment.seeds),
        teacher_eval=teacher_eval,
        random=random_views(experiment.variants, params.distill),
        retention_csv=retention_csv,
    )
    result = build_report(request)
    table = format_table(result.summary)
    for line in table + [f"note: {note}" for note in result.notes if f"note: {note}" not in table]:
        typer.echo(line)
    typer.echo(
        f"report of {result.students} students ({result.sentences} heatmap sentences): "
        + ", ".join(str(p) for p in result.written)
    )

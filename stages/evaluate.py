"""``egkd evaluate``: a model's task metric; with a cache, explanation agreement and faithfulness."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.evaluate.run import EvaluateRequest, run_evaluation
from pipeline.tasks import get_task
from stages.common import (
    AllowNewHeadOption,
    AllowPickleOption,
    DataOption,
    DeviceOption,
    ParamsOption,
    PrecisionOption,
    TaskOption,
    compute_params,
    data_source,
    read_params,
    user_errors,
    with_task,
)


@user_errors
def command(
    model: Annotated[str, typer.Option("--model", help="The model folder (or reference) to evaluate.")],
    data: DataOption,
    task: TaskOption = None,
    split: Annotated[str | None, typer.Option("--split", help="The split to evaluate on (default: dev).")] = None,
    cache: Annotated[
        list[Path] | None,
        typer.Option(
            "--cache",
            help="An explanation cache, or a folder of caches, to compare the model's explanations with (repeatable).",
        ),
    ] = None,
    method: Annotated[
        list[str] | None,
        typer.Option(
            "--method", help="Compare only this method of the caches (repeatable; default: every method they hold)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="JSON file for the report.")] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    allow_pickle: AllowPickleOption = False,
    allow_new_head: AllowNewHeadOption = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Evaluate a model on a GLUE split, and its explanations against the teacher's in explanation caches."""
    params = read_params(params_file)
    data_params = with_task(params, task)
    split = split or "dev"
    limit = data_params.train_limit if split == "train" else data_params.dev_limit
    report = run_evaluation(
        EvaluateRequest(
            model,
            data_params.task,
            data_source(data, data_params),
            split,
            params.evaluate,
            params.explain,
            tuple(cache or ()),
            tuple(method or ()),
            out,
            limit,
            data_params.max_length,
            allow_pickle,
            allow_new_head,
            compute_params(params, device, precision),
        )
    )
    line = ", ".join(f"{name} {value:.4f}" for name, value in report.metrics.values)
    typer.echo(f"{report.task} {report.split}: {line} ({report.metrics.count} examples)")
    if report.head_seed is not None:
        typer.echo(f"note: the model has no trained head; a new one was drawn from seed {report.head_seed}")
    if report.metrics.one_class is not None:
        typer.echo(report.metrics.one_class.note(get_task(report.task).labels), err=True)
    for explanation in report.explanations:
        a, f = explanation.agreement, explanation.faithfulness
        spearman = "n/a" if a.spearman is None else f"{a.spearman:.3f}"
        typer.echo(
            f"agreement ({a.method}): spearman {spearman}, top-k overlap {a.top_k_overlap:.3f}; "
            f"AOPC comprehensiveness {f.comprehensiveness:.4f} (random {f.random_comprehensiveness:.4f}), "
            f"sufficiency {f.sufficiency:.4f} (random {f.random_sufficiency:.4f})"
        )

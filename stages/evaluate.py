"""``egkd evaluate``: a model's task metric; with a cache, explanation agreement and faithfulness."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import DataParams
from pipeline.evaluate.sets import open_sets, training_notes
from pipeline.sources import open_source
from stages.common import (
    DATA_OPTIONS_SKIPPED,
    AllowNewHeadOption,
    AllowPickleOption,
    DataOption,
    DeviceOption,
    ParamsOption,
    PrecisionOption,
    compute_params,
    data_params,
    read_params,
    user_errors,
)
from stages.settings import NOTHING_CHOSEN, Chosen, section_options


@user_errors
@section_options(DataParams, "data", skip=DATA_OPTIONS_SKIPPED, prefix="data_")
def command(
    model: Annotated[str, typer.Option("--model", help="The model folder (or reference) to evaluate.")],
    data: DataOption,
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
    sets_root: Annotated[
        Path | None,
        typer.Option(
            "--sets-root",
            help="Also score the model on every set of experiment.eval_sets (forwards only; the JSON's key 'sets'): a "
            "set's data folder is <DIR>/<data>, a set without one reads --data. Left out, only --split is scored.",
        ),
    ] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    allow_pickle: AllowPickleOption = False,
    allow_new_head: AllowNewHeadOption = False,
    params_file: ParamsOption = Path("params.yaml"),
    data_chosen: Chosen = NOTHING_CHOSEN,
) -> None:
    """Evaluate a model on a split of the data (--split test reads test.csv...), on the held-out and shifted sets of
    experiment.eval_sets (--sets-root), and its explanations against the teacher's in explanation caches."""
    from pipeline.evaluate.run import EvaluateRequest, run_evaluation  # torch: imported when the command runs

    params = read_params(params_file)
    chosen_data = data_params(params, data_chosen)
    split = split or "dev"
    limit = {"train": chosen_data.train_limit, "dev": chosen_data.dev_limit}.get(split)
    source = open_source(data, chosen_data)
    eval_sets = params.experiment.eval_sets if sets_root is not None else {}
    sets = open_sets(eval_sets, source, chosen_data, sets_root)
    report = run_evaluation(
        EvaluateRequest(
            model=model,
            source=source,
            split=split,
            params=params.evaluate,
            explain=params.explain,
            caches=tuple(cache or ()),
            methods=tuple(method or ()),
            out=out,
            limit=limit,
            max_length=chosen_data.max_length,
            allow_pickle=allow_pickle,
            allow_new_head=allow_new_head,
            compute=compute_params(params, device, precision),
            sets=sets,
        )
    )
    line = ", ".join(f"{name} {value:.4f}" for name, value in report.metrics.values)
    typer.echo(f"{report.task} {report.split}: {line} ({report.metrics.count} examples)")
    if report.head_seed is not None:
        typer.echo(f"note: the model has no trained head; a new one was drawn from seed {report.head_seed}")
    if report.metrics.one_class is not None:
        typer.echo(report.metrics.one_class.note(source.task.labels), err=True)
    for scored in report.sets:
        line = ", ".join(f"{name} {value:.4f}" for name, value in scored.metrics.values)
        typer.echo(f"set {scored.name} ({scored.split} of {scored.source}): {line} ({scored.metrics.count} examples)")
        if scored.metrics.one_class is not None:
            typer.echo(scored.metrics.one_class.note(source.task.labels, f"the model on set {scored.name}"), err=True)
    for note in training_notes(eval_sets, chosen_data):
        typer.echo(note, err=True)
    for explanation in report.explanations:
        a, f = explanation.agreement, explanation.faithfulness
        spearman = "n/a" if a.spearman is None else f"{a.spearman:.3f}"
        typer.echo(
            f"agreement ({a.method}): spearman {spearman}, top-k overlap {a.top_k_overlap:.3f}; "
            f"AOPC comprehensiveness {f.comprehensiveness:.4f} (random {f.random_comprehensiveness:.4f}), "
            f"sufficiency {f.sufficiency:.4f} (random {f.random_sufficiency:.4f})"
        )

"""``egkd evaluate``: a model's task metric; with a cache, explanation agreement and faithfulness."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.evaluate import EvaluateRequest, run_evaluation
from stages.common import ParamsOption, read_params, user_errors


@user_errors
def command(
    model: Annotated[str, typer.Option("--model", help="The model folder (or reference) to evaluate.")],
    task: Annotated[str, typer.Option("--task", help="GLUE task, e.g. sst2.")],
    data: Annotated[str, typer.Option("--data", help="A folder of GLUE TSVs, or 'hub'.")],
    split: Annotated[str, typer.Option("--split")] = "dev",
    cache: Annotated[list[Path] | None, typer.Option(
        "--cache", help="An explanation cache to compare the model's explanations with (repeatable).")] = None,
    method: Annotated[list[str] | None, typer.Option(
        "--method", help="Compare only this method of the caches (repeatable; default: every method they hold).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="JSON file for the report.")] = None,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Also load pickle weights "
                                               "(pytorch_model.bin), which can run code: only for files you trust.")] = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Evaluate a model on a GLUE split, and its explanations against the teacher's in explanation caches."""
    params = read_params(params_file)
    limit = params.data.dev_limit if split != "train" else params.data.train_limit
    report = run_evaluation(EvaluateRequest(model, task, data, split, params.evaluate, params.explain,
                                            tuple(cache or ()), tuple(method or ()), out, limit,
                                            params.data.max_length, allow_pickle))
    line = ", ".join(f"{name} {value:.4f}" for name, value in report.metrics.values)
    typer.echo(f"{report.task} {report.split}: {line} ({report.metrics.count} examples)")
    for explanation in report.explanations:
        a, f = explanation.agreement, explanation.faithfulness
        spearman = "n/a" if a.spearman is None else f"{a.spearman:.3f}"
        typer.echo(f"agreement ({a.method}): spearman {spearman}, top-k overlap {a.top_k_overlap:.3f}; "
                   f"AOPC comprehensiveness {f.comprehensiveness:.4f} (random {f.random_comprehensiveness:.4f}), "
                   f"sufficiency {f.sufficiency:.4f} (random {f.random_sufficiency:.4f})")

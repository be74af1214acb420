"""``egkd explain``: stage one, a teacher's explanations of a GLUE split into the Parquet cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import override
from pipeline.errors import EgkdError
from pipeline.explain.base import Method
from pipeline.explain_run import ExplainRequest, run_explain
from stages.common import ParamsOption, progress_enabled, read_params, user_errors


@user_errors
def command(
    teacher: Annotated[str, typer.Option(help="The fine-tuned teacher: a local HF directory, builtin:minilm-l6 or a hub id.")] = ...,
    out: Annotated[Path, typer.Option(help="Cache folder; writes <out>/method=<m>/split=<s>/part-*.parquet.")] = ...,
    method: Annotated[str, typer.Option(help="gradient, perturbation or feature_selection.")] = None,
    task: Annotated[str, typer.Option(help="GLUE task (sst2, mrpc, ...).")] = None,
    data: Annotated[str, typer.Option(help="Folder in the GLUE TSV layout, or 'hub' (default: data.source).")] = None,
    split: Annotated[str, typer.Option(help="Split to explain (train, dev, ...).")] = None,
    limit: Annotated[int, typer.Option(help="Explain the first N examples only.")] = None,
    workers: Annotated[int, typer.Option(help="Local dask worker processes; 0 runs in this process.")] = None,
    scheduler: Annotated[str, typer.Option(help="Address of a running dask scheduler to use instead.")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per explainer batch (results do not depend on it).")] = None,
    partition_size: Annotated[int, typer.Option(help="Examples per cache part.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete this method/split partition first.")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Also load pickle teacher weights "
                                               "(pytorch_model.bin), which can run code: only for files you trust.")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Compute the teacher's explanations part by part; rerunning resumes, computing only missing parts."""
    config = read_params(params)
    data_params = override(config.data, task=task)
    explain = override(config.explain, method=method and Method.parse(method).value, split=split,
                       batch_size=batch_size, partition_size=partition_size, workers=workers)
    if data is None:
        if data_params.source != "hub":
            raise EgkdError("--data is required: a folder in the GLUE TSV layout, or 'hub'")
        data = "hub"
    if limit is None:
        limit = {"train": data_params.train_limit, "dev": data_params.dev_limit}.get(explain.split)
    request = ExplainRequest(
        method=Method.parse(explain.method), teacher=teacher, data=data, task=data_params.task,
        split=explain.split, out=out, limit=limit, max_length=data_params.max_length, params=explain,
        scheduler=scheduler, overwrite=overwrite, progress=progress_enabled(),
        allow_pickle=allow_pickle,
    )
    summary = run_explain(request)
    for line in summary.lines():
        typer.echo(line)

"""``egkd explain``: stage one, a teacher's explanations of a GLUE split into the Parquet cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import override
from pipeline.explain.run import ExplainRequest, run_explain
from pipeline.methods import Method
from stages.common import (
    AllowNewHeadOption,
    AllowPickleOption,
    DataOption,
    ParamsOption,
    TaskOption,
    data_source,
    progress_enabled,
    read_params,
    user_errors,
    with_task,
)


@user_errors
def command(
    teacher: Annotated[
        str, typer.Option("--teacher", help="The fine-tuned teacher: a local HF folder, builtin:minilm-l6 or a hub id.")
    ],
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Cache folder; writes <out>/method=<m>/split=<s>/part-*.parquet.")],
    method: Annotated[
        str | None, typer.Option("--method", help=f"{', '.join(m.value for m in Method)} (default: explain.method).")
    ] = None,
    task: TaskOption = None,
    split: Annotated[str | None, typer.Option("--split", help="Split to explain: train, dev, ...")] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", help="Explain the first N examples only (default: data.train_limit / dev_limit)."),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Local dask worker processes; 0 runs in this process.")
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option("--scheduler", help="Address of a running dask scheduler to use instead of local workers."),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Examples per explainer batch (results do not depend on it).")
    ] = None,
    partition_size: Annotated[int | None, typer.Option("--partition-size", help="Examples per cache part.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete this method/split partition first.")] = False,
    allow_pickle: AllowPickleOption = False,
    allow_new_head: AllowNewHeadOption = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Compute the teacher's explanations part by part; rerunning resumes, computing only missing parts."""
    params = read_params(params_file)
    data_params = with_task(params, task)
    explain = override(
        params.explain,
        method=method,
        split=split,
        batch_size=batch_size,
        partition_size=partition_size,
        workers=workers,
    )
    if limit is None:
        limit = {"train": data_params.train_limit, "dev": data_params.dev_limit}.get(explain.split)
    request = ExplainRequest(
        method=explain.method,
        teacher=teacher,
        data=data_source(data, data_params),
        task=data_params.task,
        split=explain.split,
        out=out,
        limit=limit,
        max_length=data_params.max_length,
        params=explain,
        scheduler=scheduler,
        overwrite=overwrite,
        progress=progress_enabled(),
        allow_pickle=allow_pickle,
        allow_new_head=allow_new_head,
    )
    for line in run_explain(request).lines():
        typer.echo(line)

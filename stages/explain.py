"""``egkd explain``: stage one, a teacher's explanations of a GLUE split, or of a text file of unlabelled
sentences, into the Parquet cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import override
from pipeline.data import HUB, TRANSFER
from pipeline.explain.run import ExplainRequest, run_explain
from pipeline.methods import Method
from stages.common import (
    AllowNewHeadOption,
    AllowPickleOption,
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
    out: Annotated[Path, typer.Option("--out", help="Cache folder; writes <out>/method=<m>/split=<s>/part-*.parquet.")],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            help="The GLUE data: a folder in the GLUE TSV layout (<dir>/SST-2/train.tsv), or 'hub'. "
            "With data.source: hub in the params, the hub is used and the folder is not read.",
        ),
    ] = None,
    method: Annotated[
        str | None, typer.Option("--method", help=f"{', '.join(m.value for m in Method)} (default: explain.method).")
    ] = None,
    task: TaskOption = None,
    split: Annotated[
        str | None, typer.Option("--split", help="Split to explain: train, dev, ..., or transfer (with --text).")
    ] = None,
    text: Annotated[
        Path | None,
        typer.Option(
            "--text",
            help="A plain-text file of unlabelled examples, one per line (pair tasks: two texts and a tab), "
            "explained into the transfer split: a transfer set for `egkd distill --transfer`.",
        ),
    ] = None,
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
    precision: Annotated[
        str | None,
        typer.Option(
            "--precision", help="auto (bf16 autocast on CUDA, fp32 on CPU), fp32 or bf16; recorded in the cache."
        ),
    ] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Read existing parts in full (checksums, digest) before resuming.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete this method/split partition first.")] = False,
    allow_pickle: AllowPickleOption = False,
    allow_new_head: AllowNewHeadOption = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Compute the teacher's explanations part by part; rerunning resumes, computing only missing parts."""
    params = read_params(params_file)
    data_params = with_task(params, task)
    if text is not None and split is None:
        split = TRANSFER
    explain = override(
        params.explain,
        method=method,
        split=split,
        batch_size=batch_size,
        partition_size=partition_size,
        workers=workers,
        precision=precision,
    )
    if limit is None:
        limit = {"train": data_params.train_limit, "dev": data_params.dev_limit}.get(explain.split)
    request = ExplainRequest(
        method=explain.method,
        teacher=teacher,
        data=data_source(data, data_params) if data is not None else (HUB if data_params.source == HUB else None),
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
        verify=verify,
        text=text,
    )
    for line in run_explain(request).lines():
        typer.echo(line)

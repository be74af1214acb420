"""``egkd explain``: stage one, a teacher's explanations of a split of the data, or of a text file of unlabelled
sentences, into the Parquet cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import DataParams, override
from pipeline.data import HUB, TRANSFER
from pipeline.errors import EgkdError
from pipeline.explain.run import ExplainRequest, run_explain_splits
from pipeline.methods import Method
from stages.common import (
    DATA_OPTIONS_SKIPPED,
    AllowNewHeadOption,
    AllowPickleOption,
    OptionalDataOption,
    ParamsOption,
    data_params,
    progress_enabled,
    read_params,
    user_errors,
)
from stages.settings import NOTHING_CHOSEN, Chosen, section_options


@user_errors
@section_options(DataParams, "data", skip=DATA_OPTIONS_SKIPPED, prefix="data_")
def command(
    teacher: Annotated[
        str, typer.Option("--teacher", help="The fine-tuned teacher: a local HF folder, builtin:minilm-l6 or a hub id.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Cache folder; writes <out>/method=<m>/split=<s>/part-*.parquet.")],
    data: OptionalDataOption = None,
    method: Annotated[
        str | None, typer.Option("--method", help=f"{', '.join(m.value for m in Method)} (default: explain.method).")
    ] = None,
    split: Annotated[
        list[str] | None,
        typer.Option(
            "--split",
            help="Split to explain: train, dev, ..., or transfer (with --text). Repeat it to explain several in one "
            "process, in order (--split train --split dev): each as if alone, without paying the start-up twice.",
        ),
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
        list[int] | None,
        typer.Option(
            "--limit",
            help="Explain the first N examples only (default: data.train_limit / dev_limit). With several --split, "
            "none or one per split, paired by position (--split train --limit 500 --split dev --limit 100).",
        ),
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
    replace_stale: Annotated[
        bool,
        typer.Option(
            "--replace-stale",
            help="Replace the parts of another run (other settings, teacher or data) instead of refusing them, and "
            "resume this run's: dvc.yaml's stages, whose outputs persist, continue after an interruption and start "
            "over after a change.",
        ),
    ] = False,
    allow_pickle: AllowPickleOption = False,
    allow_new_head: AllowNewHeadOption = False,
    params_file: ParamsOption = Path("params.yaml"),
    data_chosen: Chosen = NOTHING_CHOSEN,
) -> None:
    """Compute the teacher's explanations part by part; rerunning resumes, computing only missing parts."""
    params = read_params(params_file)
    chosen_data = data_params(params, data_chosen)
    splits: list[str | None] = [*split] if split else [TRANSFER if text is not None else None]  # None: explain.split
    limits: list[int | None] = [*limit] if limit else [None] * len(splits)
    if len(limits) != len(splits):
        raise EgkdError(
            f"--limit is given {len(limits)} times for {len(splits)} splits: give none, or one per --split "
            "(paired by position)"
        )
    requests = []
    for one_split, one_limit in zip(splits, limits, strict=True):
        explain = override(
            params.explain,
            method=method,
            split=one_split,
            batch_size=batch_size,
            partition_size=partition_size,
            workers=workers,
            precision=precision,
        )
        if one_limit is None:
            one_limit = {"train": chosen_data.train_limit, "dev": chosen_data.dev_limit}.get(explain.split)
        requests.append(
            ExplainRequest(
                method=explain.method,
                teacher=teacher,
                data=HUB if chosen_data.source == HUB else data,
                task=chosen_data.task,
                split=explain.split,
                out=out,
                limit=one_limit,
                max_length=chosen_data.max_length,
                params=explain,
                scheduler=scheduler,
                overwrite=overwrite,
                replace_stale=replace_stale,
                progress=progress_enabled(),
                allow_pickle=allow_pickle,
                allow_new_head=allow_new_head,
                verify=verify,
                text=text,
                data_params=chosen_data,
            )
        )
    for summary in run_explain_splits(requests):
        for line in summary.lines():
            typer.echo(line)

"""``egkd data add``: bring a data set into the workspace (copied under a folder dvc.yaml reads, tracked by DVC);
``egkd data digest``: the sha256 of the folders the evaluations read (the file their DVC stages depend on)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import DataParams
from stages.common import DATA_OPTIONS_SKIPPED, ParamsOption, data_params, read_params, user_errors
from stages.settings import NOTHING_CHOSEN, Chosen, section_options

app = typer.Typer(
    help="The data sets in the workspace: bring one in, or digest those the evaluations read.", no_args_is_help=True
)


@app.command("add")
@user_errors
@section_options(DataParams, "data", skip=DATA_OPTIONS_SKIPPED, prefix="data_")
def add(
    source: Annotated[
        str,
        typer.Argument(
            help="A GLUE folder (<dir>/SST-2/train.tsv, with --task), a folder of split files (train.csv, "
            "dev.jsonl, test.parquet...), one file (the training split), or a Hugging Face dataset name."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="The folder to copy it to: data/sets/<task> is where dvc.yaml reads it.")
    ],
    dev_size: Annotated[
        int | None,
        typer.Option(
            "--dev-size",
            help="Data without a dev split: hold out this many training rows as one (a draw seeded by --seed), "
            "written with the rest as train.parquet and dev.parquet.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="The seed of --dev-size's draw.")] = 0,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the folder if it exists.")] = False,
    no_dvc: Annotated[bool, typer.Option("--no-dvc", help="Copy only: do not run `dvc add` on the folder.")] = False,
    params_file: ParamsOption = Path("params.yaml"),
    data_chosen: Chosen = NOTHING_CHOSEN,
) -> None:
    """Check a data set as the stages will read it, copy it under --out and track it with `dvc add`.

    Every stage then reads it from inside the workspace, so queued experiments (`dvc exp run --queue`) find it.
    """
    from pipeline.intake import AddRequest, add_data

    params = read_params(params_file)
    request = AddRequest(
        source=source,
        out=out,
        params=data_params(params, data_chosen),
        replace=replace,
        track=not no_dvc,
        dev_size=dev_size,
        seed=seed,
    )
    for line in add_data(request).lines():
        typer.echo(line)


@app.command("digest")
@user_errors
def digest(
    data: Annotated[Path, typer.Option("--data", help="The task's data folder (data/sets/<task> in dvc.yaml).")],
    sets_root: Annotated[
        Path, typer.Option("--sets-root", help="The folder that holds the evaluation sets' data folders.")
    ],
    out: Annotated[Path, typer.Option("--out", help="The JSON file to write: {folder: sha256}.")],
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Write the sha256 of every data folder the evaluations read: the task's and each of experiment.eval_sets'.

    dvc.yaml's evaluations depend on this file rather than on all of data/sets, so that adding or changing a data
    set they do not read reruns none of them.
    """
    from pipeline.data_digest import evaluation_digest, write_digest

    folders = evaluation_digest(data, read_params(params_file).experiment.eval_sets, sets_root)
    write_digest(folders, out)
    typer.echo(f"{out}: the digest of {len(folders)} data folder(s): {', '.join(folders)}")

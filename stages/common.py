"""What every command shares: the options every command spells alike, params loading, one-line errors.

One rule for options: a path (what to read, where to write) is a required option, since paths live in
``dvc.yaml`` and on the command line, never in code; every other option defaults to ``None``, which means
"the value in ``params.yaml``" (``--params`` names another file), so options given here always win.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from pipeline.config import ComputeParams, DataParams, Params, load_params, override
from pipeline.errors import EgkdError
from stages.settings import Chosen

F = TypeVar("F", bound=Callable[..., Any])
_notes: list[str] = []  # said when the command has finished (read_params')

ParamsOption = Annotated[
    Path, typer.Option("--params", help="params.yaml to read defaults from (options given here win).")
]
_DATA_HELP = (
    "The data: a GLUE folder (<dir>/SST-2/train.tsv, with --task) or 'hub' (GLUE on the Hugging Face hub); or your "
    "own data set: a folder of split files (train.csv, dev.jsonl, test.parquet...), one file (the training split), "
    "or a Hugging Face dataset name. With data.source: hub in the params, GLUE comes from the hub."
)
DataOption = Annotated[str, typer.Option("--data", help=_DATA_HELP)]
OptionalDataOption = Annotated[str | None, typer.Option("--data", help=_DATA_HELP)]
# The data section's options (--task, --text-column-names...) but the split sizes, which each command names itself.
DATA_OPTIONS_SKIPPED = ("train_limit", "dev_limit", "source")
AllowNewHeadOption = Annotated[
    bool,
    typer.Option(
        "--allow-new-head",
        help="Use a model whose checkpoint has no trained classification head, with a new head drawn from "
        "explain.seed (otherwise refused: a random head explains and scores noise).",
    ),
]
AllowPickleOption = Annotated[
    bool,
    typer.Option(
        "--allow-pickle",
        help="Also load pickle weights (pytorch_model.bin), which can run code: only for files you trust.",
    ),
]


DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N (default: compute.device).",
    ),
]
PrecisionOption = Annotated[
    str | None,
    typer.Option(
        "--precision",
        help="auto (bf16 autocast on CUDA, fp32 on a CPU), fp32 or bf16; weights stay fp32 "
        "(default: compute.precision).",
    ),
]


def user_errors(func: F) -> F:
    """Report EgkdError as one line on stderr with exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _notes.clear()
        try:
            result = func(*args, **kwargs)
            for note in _notes:
                typer.echo(note, err=True)
            return result
        except EgkdError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None
        except OSError as err:  # a path that cannot be read or written (a file where a folder is meant...)
            said = f"{err.strerror}: {err.filename}" if err.strerror and err.filename else str(err).splitlines()[0]
            typer.echo(f"error: {said}", err=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; finished work is kept (rerun the command to continue)", err=True)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def read_params(path: Path) -> Params:
    """The params file; where the default ``params.yaml`` is absent, the packaged defaults (the default profile's,
    so a command run from another folder trains as ``dvc repro`` does), which the command says in one line when it
    has finished (an error stays one line)."""
    if str(path) == "params.yaml" and not path.exists():
        _notes.append(
            f"note: no params.yaml in {Path.cwd()}: used egkd's packaged defaults, the default profile "
            "('egkd profile' writes them to params.yaml)"
        )
    return load_params(path)


def data_params(params: Params, chosen: Chosen) -> DataParams:
    """The params' data section with the data options given."""
    return chosen.apply(params.data)


def progress_enabled() -> bool:
    return sys.stderr.isatty()


def compute_params(params: Params, device: str | None, precision: str | None) -> ComputeParams:
    return override(params.compute, device=device, precision=precision)

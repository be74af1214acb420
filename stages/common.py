"""What every command shares: params loading with overrides, and one-line errors."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from pipeline.config import Params, load_params
from pipeline.errors import EgkdError

F = TypeVar("F", bound=Callable)

ParamsOption = Annotated[
    Path, typer.Option("--params", help="params.yaml to read defaults from (options given here win).")
]


def user_errors(func: F) -> F:
    """Report EgkdError as one line on stderr with exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except EgkdError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; finished work is kept (rerun the command to resume)", err=True)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def read_params(path: Path) -> Params:
    return load_params(path)


def progress_enabled() -> bool:
    return sys.stderr.isatty()

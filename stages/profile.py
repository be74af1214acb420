"""``egkd profile``: write params.yaml from the packaged defaults and a profile's keys."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.profiles import DEFAULT, changed_keys, profile_params, profile_path, render
from stages.common import user_errors


@user_errors
def command(
    name: Annotated[
        str,
        typer.Argument(
            help=f"{DEFAULT} (the packaged defaults), a profile in profiles/ (medium, trec, sst5, gpu, full) or a "
            "profile file."
        ),
    ] = DEFAULT,
    out: Annotated[Path, typer.Option("--out", help="The params file to write.")] = Path("params.yaml"),
) -> None:
    """Write a profile's complete params.yaml (for dvc repro and dvc exp run): the packaged defaults with the keys
    the profile changes."""
    params = profile_params(name)
    out.write_text(render(params, name, profile_path(name)), encoding="utf-8")
    changed = changed_keys(params)
    typer.echo(
        f"{out}: profile {name}, {len(changed)} keys changed from the defaults{': ' if changed else ''}"
        + ", ".join(changed)
    )

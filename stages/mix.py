"""``egkd mix``: new training examples spliced from two cached ones, the windows chosen by the teacher's maps."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import MixKind, override
from pipeline.explain.mix import MixRequest, run_mix
from stages.common import ParamsOption, read_params, user_errors


@user_errors
def command(
    cache: Annotated[Path, typer.Option("--cache", help="A cache with a train split (`egkd explain --split train`).")],
    out: Annotated[Path, typer.Option("--out", help="The text file to write, one example per line.")],
    method: Annotated[
        str | None,
        typer.Option("--method", help="The family whose maps choose the windows (default: the cache's only one)."),
    ] = None,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            help=f"{', '.join(k.value for k in MixKind)}: windows chosen by the maps, or at random, the baseline "
            "(default: explain.mix.kind).",
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", help="Examples to write (default: explain.mix.count; one per cached).")
    ] = None,
    span: Annotated[
        float | None, typer.Option("--span", help="Share of a recipient's words replaced (default: explain.mix.span).")
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Seed of the pairs and random windows (explain.seed).")
    ] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Write mixed examples for `egkd explain --text`: each a cached example with a window of its words replaced
    by another's; explained into the transfer split, `egkd distill --transfer` trains on them."""
    params = read_params(params_file)
    mix = override(params.explain.mix, kind=kind, count=count, span=span)
    request = MixRequest(
        cache=cache,
        out=out,
        method=method,
        kind=mix.kind,
        count=mix.count,
        span=mix.span,
        seed=params.explain.seed if seed is None else seed,
    )
    for line in run_mix(request).lines():
        typer.echo(line)

"""``egkd cache info`` and ``egkd cache verify``: inspect and check an explanation cache."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cache.store import cache_info
from pipeline.cache.verify import verify_cache
from stages.common import user_errors

app = typer.Typer(help="Inspect and check an explanation cache.", no_args_is_help=True)

CachePath = Annotated[Path, typer.Argument(help="The cache folder (the --out of egkd explain).")]


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


@app.command("info")
@user_errors
def info(path: CachePath) -> None:
    """Methods, splits, parts, rows, sizes and metadata of a cache (reads part footers only)."""
    summary = cache_info(path)
    typer.echo(f"{summary.path}: {len(summary.partitions)} partition(s), {summary.rows} rows, {_size(summary.bytes)}")
    for part in summary.partitions:
        expected = "?" if part.parts_expected is None else str(part.parts_expected)
        state = "complete" if part.complete else "INCOMPLETE (rerun egkd explain to finish it)"
        typer.echo(
            f"\nmethod={part.method} split={part.split}: {part.parts_present}/{expected} parts, "
            f"{part.rows} rows, {part.truncated} truncated, {_size(part.bytes)}, {state}"
        )
        if part.unreadable:
            typer.echo(f"  unreadable parts: {', '.join(part.unreadable)} (see egkd cache verify)")
        if part.metadata is not None:
            for field in dataclasses.fields(part.metadata):
                typer.echo(f"  {field.name}: {getattr(part.metadata, field.name)}")


@app.command("verify")
@user_errors
def verify(path: CachePath) -> None:
    """Read and check every part and row; exit code 2 naming each bad part if anything is wrong."""
    report = verify_cache(path)
    for note in report.notes:
        typer.echo(f"note: {note}")
    if not report.ok:
        for problem in report.problems:
            typer.echo(f"bad: {problem}", err=True)
        typer.echo(
            f"error: {len(report.problems)} problem(s) in {len(report.bad_parts)} part file(s); "
            "rerun egkd explain with the same options to compute missing parts, and with --verify as well to "
            "recompute corrupt ones",
            err=True,
        )
        raise typer.Exit(code=2)
    parts = sum(p.parts for p in report.partitions)
    rows = sum(p.rows for p in report.partitions)
    typer.echo(f"OK: {len(report.partitions)} partition(s), {parts} part(s), {rows} rows in {report.path}")

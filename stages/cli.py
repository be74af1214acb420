"""The ``egkd`` command line: each command parses options and calls one library function."""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperGroup

from stages import cache, data, distill, evaluate, explain, finetune, profile, report

# typer carries its own copy of click; its exception classes are reachable through the public ones.
ClickException: type[Exception] = typer.BadParameter.__mro__[2]
UsageError: type[Exception] = typer.BadParameter.__mro__[1]


class OneLineErrors(TyperGroup):
    """Usage errors (a missing or malformed option) as one ``error:`` line with exit code 2, like every other
    bad input; ``--help`` tells the rest."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except UsageError as err:
            ctx = getattr(err, "ctx", None)
            command = ctx.command_path if ctx is not None else "egkd"
            typer.echo(f"error: {err.format_message()} (see '{command} --help')", err=True)  # type: ignore[attr-defined]
            sys.exit(2)
        except ClickException as err:
            typer.echo(f"error: {err.format_message()}", err=True)  # type: ignore[attr-defined]
            sys.exit(err.exit_code)  # type: ignore[attr-defined]
        except typer.Abort:
            typer.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


app = typer.Typer(
    name="egkd",
    cls=OneLineErrors,
    help="Explanation Guided Knowledge Distillation: cache a teacher's explanations, then distill a student from them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from pipeline import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", help="Print the egkd version and exit.", is_eager=True, callback=_print_version
    ),
) -> None:
    """Explanation Guided Knowledge Distillation."""


app.command("finetune")(finetune.command)
app.command("explain")(explain.command)
app.add_typer(cache.app, name="cache")
app.add_typer(data.app, name="data")
app.command("distill")(distill.command)
app.command("evaluate")(evaluate.command)
app.command("report")(report.command)
app.command("profile")(profile.command)


if __name__ == "__main__":
    app()

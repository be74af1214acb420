"""The ``egkd`` command line: each command parses options and calls one library function."""

from __future__ import annotations

import typer

from stages import cache, distill, evaluate, explain, finetune, report

app = typer.Typer(
    name="egkd",
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
    version: bool = typer.Option(False, "--version", help="Print the egkd version and exit.", is_eager=True,
                                 callback=_print_version),
) -> None:
    """Explanation Guided Knowledge Distillation."""


app.command("finetune")(finetune.command)
app.command("explain")(explain.command)
app.add_typer(cache.app, name="cache")
app.command("distill")(distill.command)
app.command("evaluate")(evaluate.command)
app.command("report")(report.command)


if __name__ == "__main__":
    app()

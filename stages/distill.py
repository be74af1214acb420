"""``egkd distill``: train a student from the explanation cache alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import override
from pipeline.distill.job import DistillRequest, distill
from stages.common import ParamsOption, progress_enabled, read_params, user_errors


@user_errors
def command(
    cache: Annotated[Path, typer.Option("--cache", help="The explanation cache (Parquet dataset folder).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder for the student.")] = Path("models/student"),
    method: Annotated[str | None, typer.Option(
        "--method", help="gradient, perturbation, feature_selection or none.")] = None,
    student: Annotated[str | None, typer.Option("--student", help="Student model reference.")] = None,
    layers: Annotated[int | None, typer.Option("--layers", help="Layers of the teacher base to keep.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="Weight of the KD term.")] = None,
    beta: Annotated[float | None, typer.Option("--beta", help="Weight of the explanation term.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="KD temperature.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint.")] = False,
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Also load pickle student weights "
                                               "(pytorch_model.bin), which can run code: only for files you trust.")] = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Distill a student from the cache: alpha * KD + (1 - alpha) * CE + beta * explanation loss."""
    params = read_params(params_file)
    if method is not None and method not in ("gradient", "perturbation", "feature_selection", "none"):
        from pipeline.errors import EgkdError

        raise EgkdError(f"unknown method {method!r}; methods: gradient, perturbation, feature_selection, none")
    distill_params = override(params.distill, method=method, student=student, layers=layers, alpha=alpha,
                              beta=beta, temperature=temperature, epochs=epochs, seed=seed)
    report = distill(DistillRequest(cache, out, distill_params, params.evaluate, resume, progress_enabled(),
                                     allow_pickle))
    for note in report.notes:
        typer.echo(note, err=True)
    if report.training.resumed_from:
        typer.echo(f"resumed from the checkpoint at step {report.training.resumed_from}")
    dev = "" if report.dev is None else f"; dev {report.dev.main_name} {report.dev.main:.4f}"
    typer.echo(f"student saved to {report.out} ({report.training.steps} steps{dev})")

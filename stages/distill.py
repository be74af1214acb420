"""``egkd distill``: train a student from the explanation cache alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import override
from pipeline.distill.job import DistillRequest, distill
from pipeline.methods import Method
from stages.common import (
    AllowPickleOption,
    DeviceOption,
    ParamsOption,
    PrecisionOption,
    compute_params,
    progress_enabled,
    read_params,
    user_errors,
)


@user_errors
def command(
    cache: Annotated[Path, typer.Option("--cache", help="The explanation cache (Parquet dataset folder).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the student.")],
    method: Annotated[
        str | None,
        typer.Option("--method", help=f"{', '.join(m.value for m in Method)} or none (default: distill.method)."),
    ] = None,
    student: Annotated[
        str | None,
        typer.Option(
            "--student",
            help="teacher: the first --layers layers of the fine-tuned teacher that made the cache (its weights only); "
            "base: those of the teacher's base model (needs nothing but the cache); a model reference: that model, "
            "whole (default: distill.student).",
        ),
    ] = None,
    layers: Annotated[int | None, typer.Option("--layers", help="Layers of the teacher's base model to keep.")] = None,
    alpha: Annotated[float | None, typer.Option("--alpha", help="Weight of the KD term.")] = None,
    beta: Annotated[float | None, typer.Option("--beta", help="Weight of the explanation term.")] = None,
    explain_start: Annotated[
        float | None,
        typer.Option(
            "--explain-start", "--explain_start", help="Share of the steps before the explanation term starts."
        ),
    ] = None,
    explain_start_max_steps: Annotated[
        int | None,
        typer.Option(
            "--explain-start-max-steps",
            "--explain_start_max_steps",
            help="Cap on the steps before the explanation term starts (default: distill.explain_start_max_steps).",
        ),
    ] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", help="KD temperature.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Passes over the training examples.")] = None,
    lr: Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Examples per step.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (head, data order, views).")] = None,
    views: Annotated[
        int | None, typer.Option("--views", help="Cached views per example per step in the view term (0: off).")
    ] = None,
    view_weight: Annotated[
        float | None, typer.Option("--view-weight", "--view_weight", help="Weight of the view term.")
    ] = None,
    view_kind: Annotated[
        str | None,
        typer.Option("--view-kind", "--view_kind", help="preserving, contrastive, mixed or random."),
    ] = None,
    view_cache: Annotated[
        Path | None,
        typer.Option(
            "--view-cache",
            "--view_cache",
            help="Take the view term's views from this cache: another family's cache of the same sentences by the "
            "same teacher (e.g. the occlusion maps' contrastive views beside the gradient objective). A folder of "
            "caches: the one holding the --view-method family's, used only when that is not --cache's own family.",
        ),
    ] = None,
    view_method: Annotated[
        str | None,
        typer.Option(
            "--view-method",
            "--view_method",
            help="The family whose views the view term trains on, read from --view-cache or else --cache "
            "(default: distill.view_method; unset: the cache's own).",
        ),
    ] = None,
    gradient_loss: Annotated[
        str | None,
        typer.Option("--gradient-loss", "--gradient_loss", help="The gradient objective's loss: cosine, adkd or rank."),
    ] = None,
    perturbation_loss: Annotated[
        str | None,
        typer.Option(
            "--perturbation-loss",
            "--perturbation_loss",
            help="The perturbation objective's term: views (KD on a cached view), occlusion (KD on tokens masked "
            "one at a time, read from the cached occlusion map) or occlusion_rank (the same copies, their drops "
            "ordered like the teacher's by a pairwise ranking loss).",
        ),
    ] = None,
    occlusion_tokens: Annotated[
        int | None,
        typer.Option(
            "--occlusion-tokens",
            "--occlusion_tokens",
            help="With --perturbation-loss occlusion or occlusion_rank: tokens masked one at a time per example "
            "per step.",
        ),
    ] = None,
    gold_labels: Annotated[
        int | None,
        typer.Option(
            "--gold-labels",
            "--gold_labels",
            help="Training sentences (the cache's first) the student sees with their gold label; the others are a "
            "transfer set labelled by the teacher alone (default: distill.gold_labels; unset: all).",
        ),
    ] = None,
    transfer: Annotated[
        bool | None,
        typer.Option(
            "--transfer/--no-transfer",
            help="Also train on the cache's transfer split (`egkd explain --text`): unlabelled sentences learnt from "
            "the teacher alone (default: distill.transfer).",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint (made on any device).")
    ] = False,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    allow_pickle: AllowPickleOption = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Distill a student from the cache: alpha * KD + (1 - alpha) * CE + beta * explanation loss (+ view term)."""
    params = read_params(params_file)
    d = params.distill
    d = override(
        d,
        method=method,
        student=student,
        layers=layers,
        alpha=alpha,
        beta=beta,
        explain_start=explain_start,
        explain_start_max_steps=explain_start_max_steps,
        temperature=temperature,
        views=views,
        view_weight=view_weight,
        view_kind=view_kind,
        view_method=view_method,
        gradient_loss=gradient_loss,
        perturbation_loss=perturbation_loss,
        occlusion_tokens=occlusion_tokens,
        gold_labels=gold_labels,
        transfer=transfer,
        train=override(d.train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed),
    )
    compute = compute_params(params, device, precision)
    request = DistillRequest(
        cache, out, d, params.evaluate, resume, progress_enabled(), allow_pickle, compute, view_cache
    )
    report = distill(request)
    for note in report.notes:
        typer.echo(note, err=True)
    if report.training.resumed_from:
        typer.echo(f"resumed from the checkpoint at step {report.training.resumed_from}")
    dev = "" if report.dev is None else f"; dev {report.dev.main_name} {report.dev.main:.4f}"
    where = f"{report.compute.device}, {report.compute.precision}"
    typer.echo(f"student saved to {report.out} ({report.training.steps} steps on {where}{dev})")

"""``egkd distill``: train a student from the explanation cache alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cache.store import family_cache, is_cache
from pipeline.config import DistillParams
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
from stages.settings import NOTHING_CHOSEN, Chosen, section_options


@user_errors
@section_options(DistillParams, "distill")
def command(
    cache: Annotated[
        Path,
        typer.Option(
            "--cache",
            help="The explanation cache (Parquet dataset folder); with --variant, also a folder of caches (the one "
            "holding the variant's family is trained from, and the others lend their views).",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the student.")],
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
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant",
            help="Train the params' experiment.variants entry of this name: its options over the distill section "
            "(options given here win), as dvc.yaml's distill@<name>-<seed> stages do.",
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last checkpoint (made on any device).")
    ] = False,
    resume_matching: Annotated[
        bool,
        typer.Option(
            "--resume-matching",
            help="Continue from the last checkpoint where it was made by this run (the same settings and cache), "
            "else start over: dvc.yaml's stages, whose outputs persist, continue after an interruption.",
        ),
    ] = False,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    allow_pickle: AllowPickleOption = False,
    params_file: ParamsOption = Path("params.yaml"),
    chosen: Chosen = NOTHING_CHOSEN,
) -> None:
    """Distill a student from the cache: alpha * KD + (1 - alpha) * CE + beta * explanation loss (+ view term).

    Every setting of the params' distill section is an option (train's by their own names: --lr, --epochs).
    """
    from pipeline.distill.job import (
        DistillRequest,
        distill,
        interrupted,
    )  # torch: imported when the command runs, not for --help

    params = read_params(params_file)
    d = params.distill
    if variant is not None:
        entry = params.experiment.variant(variant)
        d = entry.options.apply(d, prefix=f"experiment.variants.{variant}.")
        if not is_cache(cache):
            view_cache = view_cache or cache
            cache = family_cache(cache, entry.cache.value, task=params.data.task)
    d = chosen.apply(d)
    compute = compute_params(params, device, precision)
    request = DistillRequest(
        cache=cache,
        out=out,
        params=d,
        evaluate=params.evaluate,
        resume=resume,
        resume_matching=resume_matching,
        progress=progress_enabled(),
        allow_pickle=allow_pickle,
        compute=compute,
        view_cache=view_cache,
    )
    try:
        report = distill(request)
    except KeyboardInterrupt:
        typer.echo(f"interrupted; {interrupted(out, d.checkpoint_every)}", err=True)
        raise typer.Exit(code=130) from None
    for note in report.notes:
        typer.echo(note, err=True)
    if report.training.resumed_from:
        typer.echo(f"resumed from the checkpoint at step {report.training.resumed_from}")
    dev = "" if report.dev is None else f"; dev {report.dev.main_name} {report.dev.main:.4f}"
    where = f"{report.compute.device}, {report.compute.precision}"
    typer.echo(f"student saved to {report.out} ({report.training.steps} steps on {where}{dev})")

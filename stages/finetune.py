"""``egkd finetune``: fine-tune a teacher on a GLUE task or your own data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import DataParams, FinetuneParams, override
from pipeline.sources import open_source
from stages.common import (
    DATA_OPTIONS_SKIPPED,
    AllowPickleOption,
    DataOption,
    DeviceOption,
    ParamsOption,
    PrecisionOption,
    compute_params,
    data_params,
    progress_enabled,
    read_params,
    user_errors,
)
from stages.settings import NOTHING_CHOSEN, Chosen, section_options


@user_errors
@section_options(DataParams, "data", skip=DATA_OPTIONS_SKIPPED, prefix="data_")
@section_options(FinetuneParams, "finetune")
def command(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Folder to save the fine-tuned teacher to.")],
    limit: Annotated[int | None, typer.Option("--limit", help="Train on the first N training examples.")] = None,
    dev_limit: Annotated[int | None, typer.Option("--dev-limit", help="Evaluate on the first N dev examples.")] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    allow_pickle: AllowPickleOption = False,
    params_file: ParamsOption = Path("params.yaml"),
    chosen: Chosen = NOTHING_CHOSEN,
    data_chosen: Chosen = NOTHING_CHOSEN,
) -> None:
    """Fine-tune a teacher and save it in Hugging Face format with its dev metrics.

    Every setting of the params' finetune and data sections is an option (train's by their own names: --lr).
    """
    from pipeline.finetune import finetune  # torch: imported when the command runs, not for --help

    params = read_params(params_file)
    compute = compute_params(params, device, precision)
    chosen_data = override(data_params(params, data_chosen), train_limit=limit, dev_limit=dev_limit)
    ft = chosen.apply(params.finetune)
    source = open_source(data, chosen_data)
    train = source.load("train", chosen_data.train_limit)
    dev = source.load("dev", chosen_data.dev_limit) if source.has("dev") else None
    result = finetune(
        ft.model,
        train,
        dev,
        ft,
        chosen_data.max_length,
        out,
        progress=progress_enabled(),
        allow_pickle=allow_pickle,
        compute_params=compute,
    )
    scored = "no dev split" if result.dev is None else f"dev {result.dev.main_name} {result.dev.main:.4f}"
    typer.echo(
        f"teacher saved to {result.out}: {result.train_examples} training examples, {result.steps} steps "
        f"in {result.seconds:.0f} s on {result.compute['device']} ({result.compute['precision']}); {scored}"
    )

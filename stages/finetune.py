"""``egkd finetune``: fine-tune a teacher on a GLUE task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import FinetuneParams, override
from pipeline.data import load_dataset
from pipeline.finetune import finetune
from pipeline.tasks import get_task
from stages.common import (
    AllowPickleOption,
    DataOption,
    DeviceOption,
    ParamsOption,
    PrecisionOption,
    TaskOption,
    compute_params,
    data_source,
    progress_enabled,
    read_params,
    user_errors,
    with_task,
)
from stages.settings import NOTHING_CHOSEN, Chosen, section_options


@user_errors
@section_options(FinetuneParams, "finetune")
def command(
    data: DataOption,
    out: Annotated[Path, typer.Option("--out", help="Folder to save the fine-tuned teacher to.")],
    task: TaskOption = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Train on the first N training examples.")] = None,
    dev_limit: Annotated[int | None, typer.Option("--dev-limit", help="Evaluate on the first N dev examples.")] = None,
    device: DeviceOption = None,
    precision: PrecisionOption = None,
    allow_pickle: AllowPickleOption = False,
    params_file: ParamsOption = Path("params.yaml"),
    chosen: Chosen = NOTHING_CHOSEN,
) -> None:
    """Fine-tune a teacher and save it in Hugging Face format with its dev metrics.

    Every setting of the params' finetune section is an option (train's by their own names: --lr, --epochs).
    """
    params = read_params(params_file)
    compute = compute_params(params, device, precision)
    data_params = override(with_task(params, task), train_limit=limit, dev_limit=dev_limit)
    ft = chosen.apply(params.finetune)
    spec = get_task(data_params.task)
    source = data_source(data, data_params)
    train = load_dataset(source, spec, "train", data_params.train_limit)
    dev = load_dataset(source, spec, "dev", data_params.dev_limit)
    result = finetune(
        ft.model,
        train,
        dev,
        ft,
        data_params.max_length,
        out,
        progress=progress_enabled(),
        allow_pickle=allow_pickle,
        compute_params=compute,
    )
    typer.echo(
        f"teacher saved to {result.out}: {result.train_examples} training examples, {result.steps} steps "
        f"in {result.seconds:.0f} s on {result.compute['device']} ({result.compute['precision']}); "
        f"dev {result.dev.main_name} {result.dev.main:.4f}"
    )

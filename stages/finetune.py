"""``egkd finetune``: fine-tune a teacher on a GLUE task."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import override
from pipeline.data import load_dataset
from pipeline.finetune import finetune
from pipeline.tasks import get_task
from stages.common import ParamsOption, progress_enabled, read_params, user_errors


@user_errors
def command(
    model: Annotated[str, typer.Option(help="Model to fine-tune: builtin:minilm-l6, a local HF directory or a hub id.")] = None,
    task: Annotated[str, typer.Option(help="GLUE task (sst2, cola, mrpc, qqp, stsb, mnli, qnli, rte, wnli).")] = None,
    data: Annotated[str, typer.Option(help="Folder in the GLUE TSV layout (<dir>/SST-2/train.tsv), or 'hub'.")] = ...,
    limit: Annotated[int, typer.Option(help="Train on the first N training examples only.")] = None,
    dev_limit: Annotated[int, typer.Option(help="Evaluate on the first N dev examples only.")] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training examples.")] = None,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int, typer.Option(help="Examples per step.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed (data order, head initialisation).")] = None,
    out: Annotated[Path, typer.Option(help="Directory to save the fine-tuned teacher to.")] = Path("models/teacher"),
    allow_pickle: Annotated[bool, typer.Option("--allow-pickle", help="Also load pickle weights (pytorch_model.bin), "
                                               "which can run code: only for files you trust.")] = False,
    params: ParamsOption = Path("params.yaml"),
) -> None:
    """Fine-tune a teacher and save it in Hugging Face format with its dev metrics."""
    config = read_params(params)
    data_params = override(config.data, task=task, train_limit=limit, dev_limit=dev_limit)
    ft = override(config.finetune, model=model, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    spec = get_task(data_params.task)
    train = load_dataset(data, spec, "train", data_params.train_limit)
    dev = load_dataset(data, spec, "dev", data_params.dev_limit)
    result = finetune(ft.model, train, dev, ft, data_params.max_length, out, progress=progress_enabled(),
                      allow_pickle=allow_pickle)
    typer.echo(
        f"teacher saved to {result.out}: {result.train_examples} training examples, {result.steps} steps "
        f"in {result.seconds:.0f} s; dev {result.dev.main_name} {result.dev.main:.4f}"
    )

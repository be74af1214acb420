"""Fine-tuning a teacher on a GLUE task with the shared training loop (:mod:`pipeline.training`).

Seeded and reproducible: all random state is set before the model is built and
the data order comes from the seed. The result is saved in Hugging Face format
with ``metrics.json`` (dev metrics) and ``train_log.jsonl``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline import versions
from pipeline.config import ComputeParams, FinetuneParams
from pipeline.data import Dataset
from pipeline.device import resolve_compute
from pipeline.encoding import EncodedExample, TokenBatch, collate, encode
from pipeline.evaluate.metrics import TaskMetrics, compute_metrics, predictions_from_logits
from pipeline.evaluate.predict import predict_logits
from pipeline.losses import ce_loss
from pipeline.models import ModelInfo, base_model_of, load_classifier, load_tokenizer, save_model
from pipeline.training import Losses, Trainer, seed_everything
from pipeline.versions import Versions


@dataclass(frozen=True, kw_only=True)
class FinetuneResult:
    out: str
    train_examples: int
    dev_examples: int
    steps: int
    seconds: float
    dev: TaskMetrics | None  # None: the data has no dev split
    compute: dict[str, str]  # where it trained: device, device_name, precision
    versions: Versions  # the libraries it trained with


@dataclass(frozen=True)
class LabelledBatch:
    tokens: TokenBatch
    labels: torch.Tensor  # (B,) long, or float for regression


def labels_tensor(items: list[EncodedExample], regression: bool) -> torch.Tensor:
    return torch.tensor([item.label for item in items], dtype=torch.float32 if regression else torch.long)


def supervised_loss(model: torch.nn.Module, batch: LabelledBatch, step: int) -> Losses:
    """Cross-entropy with the gold labels (MSE for regression)."""
    ce = ce_loss(model(**batch.tokens.model_inputs(model)).logits, batch.labels)
    return Losses(total=ce, ce=ce)


def finetune(
    model_ref: str,
    train: Dataset,
    dev: Dataset | None,
    params: FinetuneParams,
    max_length: int,
    out: Path,
    progress: bool = True,
    allow_pickle: bool = False,
    compute_params: ComputeParams | None = None,
) -> FinetuneResult:
    """Fine-tune ``model_ref`` on ``train`` (where ``compute_params`` say), evaluate on ``dev`` (if there is one), save
    to ``out``."""
    task = train.task
    compute = resolve_compute(compute_params or ComputeParams())
    seed_everything(params.train.seed)
    tokenizer = load_tokenizer(model_ref)
    model = load_classifier(model_ref, task.num_labels, allow_pickle=allow_pickle)
    train_items = encode(tokenizer, train.examples, max_length)
    dev_items = [] if dev is None else encode(tokenizer, dev.examples, max_length)
    pad = tokenizer.pad_token_id

    def batches(items: list[EncodedExample]) -> LabelledBatch:
        return LabelledBatch(collate(items, pad), labels_tensor(items, task.is_regression))

    start = time.perf_counter()
    trained = Trainer(model, params.train, batches, supervised_loss, desc="finetune", compute=compute).run(
        train_items, out, progress=progress
    )
    seconds = time.perf_counter() - start
    dev_metrics = None
    if dev_items:
        logits = predict_logits(model, dev_items, pad, 2 * params.train.batch_size, compute=compute)
        labels = np.asarray([item.label for item in dev_items])
        dev_metrics = compute_metrics(task, predictions_from_logits(task, logits), labels)
    info = ModelInfo(
        role="teacher", task=task.name, base_model=base_model_of(model_ref), num_layers=model.config.num_hidden_layers
    )
    save_model(model, tokenizer, out, info, task.labels)
    result = FinetuneResult(
        out=str(out),
        train_examples=len(train_items),
        dev_examples=len(dev_items),
        steps=trained.steps,
        seconds=seconds,
        dev=dev_metrics,
        compute=compute.record(),
        versions=versions.current(),
    )
    (out / "metrics.json").write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
    return result

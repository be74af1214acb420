"""Fine-tuning a teacher on a GLUE task.

Seeded and reproducible on CPU: the data order comes from a seeded generator
and all random state is set before the model is built. The result is saved in
Hugging Face format with ``metrics.json`` (dev metrics) and ``train_log.jsonl``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import FinetuneParams
from pipeline.data import Dataset
from pipeline.encoding import EncodedExample, bucketed_batches, collate, encode
from pipeline.metrics import TaskMetrics, compute_metrics, predictions_from_logits
from pipeline.models import ModelInfo, base_model_of, load_classifier, load_tokenizer, save_model
from pipeline.optim import adamw


@dataclass(frozen=True)
class FinetuneResult:
    out: str
    train_examples: int
    dev_examples: int
    steps: int
    seconds: float
    dev: TaskMetrics


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def labels_tensor(items: list[EncodedExample], regression: bool) -> torch.Tensor:
    values = [item.label for item in items]
    return torch.tensor(values, dtype=torch.float32 if regression else torch.long)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Linear warm-up to the base rate over ``warmup`` steps, then linear decay to zero."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, items: list[EncodedExample], pad_id: int,
                   batch_size: int) -> np.ndarray:
    """Logits ``(N, C)`` for ``items`` in their own order (batches are length-bucketed)."""
    model.eval()
    out: list[np.ndarray | None] = [None] * len(items)
    for indices in bucketed_batches(items, batch_size):
        batch = collate([items[i] for i in indices], pad_id)
        logits = model(**batch.model_inputs()).logits.float().numpy()
        for row, i in enumerate(indices):
            out[i] = logits[row]
    return np.stack(out)


def evaluate_model(model, items: list[EncodedExample], dataset: Dataset, pad_id: int,
                   batch_size: int) -> TaskMetrics:
    logits = predict_logits(model, items, pad_id, batch_size)
    labels = np.asarray([item.label for item in items])
    return compute_metrics(dataset.task, predictions_from_logits(dataset.task, logits), labels)


def finetune(model_ref: str, train: Dataset, dev: Dataset, params: FinetuneParams, max_length: int,
             out: Path, progress: bool = True, allow_pickle: bool = False) -> FinetuneResult:
    """Fine-tune ``model_ref`` on ``train``, evaluate on ``dev`` and save the teacher to ``out``."""
    task = train.task
    generator = seed_everything(params.seed)
    tokenizer = load_tokenizer(model_ref)
    model = load_classifier(model_ref, task.num_labels, allow_pickle=allow_pickle)
    train_items = encode(tokenizer, train.examples, max_length)
    dev_items = encode(tokenizer, dev.examples, max_length)
    steps_per_epoch = math.ceil(len(train_items) / params.batch_size)
    total = steps_per_epoch * params.epochs
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = adamw([{"params": decay, "weight_decay": params.weight_decay},
                       {"params": no_decay, "weight_decay": 0.0}], params.lr)
    scheduler = linear_schedule(optimizer, int(params.warmup_ratio * total), total)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    step = 0
    with (out / "train_log.jsonl").open("w", encoding="utf-8") as log, \
            tqdm(total=total, desc="finetune", unit="step", disable=not progress) as bar:
        for epoch in range(params.epochs):
            model.train()
            order = torch.randperm(len(train_items), generator=generator).tolist()
            for begin in range(0, len(order), params.batch_size):
                items = [train_items[i] for i in order[begin:begin + params.batch_size]]
                batch = collate(items, tokenizer.pad_token_id)
                output = model(**batch.model_inputs(), labels=labels_tensor(items, task.is_regression))
                output.loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                loss = output.loss.item()
                log.write(json.dumps({"step": step, "epoch": epoch, "loss": loss,
                                      "lr": scheduler.get_last_lr()[0]}) + "\n")
                bar.set_postfix(loss=f"{loss:.4f}")
                bar.update()
    seconds = time.perf_counter() - start
    dev_metrics = evaluate_model(model, dev_items, dev, tokenizer.pad_token_id, 2 * params.batch_size)
    info = ModelInfo(role="teacher", task=task.name, base_model=base_model_of(model_ref),
                     num_layers=model.config.num_hidden_layers)
    save_model(model, tokenizer, out, info, task.labels)
    result = FinetuneResult(str(out), len(train_items), len(dev_items), step, seconds, dev_metrics)
    (out / "metrics.json").write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")
    return result

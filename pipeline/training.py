"""The training loop that teacher fine-tuning and student distillation share.

One loop (:func:`train`) with one set of rules, steered by :class:`~pipeline.config.TrainParams`:

* **seeding**: :func:`seed_everything` seeds python, numpy and torch before the model is built
  (the new classification head draws from torch's global generator, dropout too);
* **data order**: epoch ``e`` visits the examples in the ``e``-th permutation of a generator
  seeded by the run's seed (:func:`epoch_order`), computable from ``(seed, epoch)`` alone, so a
  resumed run takes exactly the steps an uninterrupted one takes;
* **optimizer**: AdamW, weight decay on the weight matrices only (every parameter with two or more
  dimensions; biases and LayerNorm weights are 1-D), one fused kernel where torch has one;
* **schedule**: linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero
  (:func:`lr_factor`);
* **clipping**: gradient norm 1.0;
* **log**: one JSON line per step in ``train_log.jsonl`` (:data:`LOG_FILE`), each loss term on its own;
* **checkpoints** (when asked): every ``checkpoint_every`` steps and at the end, for ``resume``.

What differs between the two callers is the batch and the loss: a caller passes ``collate``
(items -> batch) and ``loss`` (model, batch, step -> :class:`Losses`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Generic, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from pipeline.checkpoint import load_checkpoint, save_checkpoint
from pipeline.config import TrainParams
from pipeline.errors import EgkdError

LOG_FILE = "train_log.jsonl"

Item = TypeVar("Item")
Batch = TypeVar("Batch")


@dataclass(frozen=True)
class Losses:
    """One step's loss and its terms (scalars); ``total`` is what is minimised."""

    total: torch.Tensor
    ce: torch.Tensor  # cross-entropy (MSE for regression) with the gold labels
    kd: torch.Tensor | None = None  # distillation from the teacher's logits
    explain: torch.Tensor | None = None  # the explanation term, on the steps that compute it


@dataclass(frozen=True)
class StepRecord:
    step: int  # 1-based: the number of optimizer steps taken so far
    epoch: int
    loss: float
    ce: float
    kd: float | None
    explain: float | None  # None on steps without the explanation term
    lr: float


@dataclass(frozen=True)
class TrainResult:
    steps: int
    resumed_from: int  # 0 for a fresh run
    last: StepRecord | None


@dataclass(frozen=True)
class Checkpointing:
    every: int  # steps between checkpoints (and one at the end)
    settings: str  # JSON of what must not change between a run and its resumption
    resume: bool = False


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def epoch_order(seed: int, epoch: int, size: int) -> list[int]:
    """The ``epoch``-th permutation of ``range(size)`` drawn from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epoch):
        torch.randperm(size, generator=generator)
    return torch.randperm(size, generator=generator).tolist()


def step_generator(seed: int, step: int, stream: int) -> torch.Generator:
    """A generator for the random choices of one step (e.g. which cached view), from ``(seed, step)``."""
    digest = hashlib.sha256(repr((seed, step, stream)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to the base rate over ``warmup`` steps, then linear decay to zero at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def optimizer_for(
    model: torch.nn.Module, params: TrainParams, total: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decay on >= 2-D weights only) and its warm-up/decay schedule over ``total`` steps.

    The fused kernel is used where torch has it for every parameter's device: for a small student the
    per-tensor CPU loop costs as much as the backward pass (its word embedding is updated densely).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": params.weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    fused = {p.device.type for p in trainable} <= {"cpu", "cuda"}
    optimizer = torch.optim.AdamW(groups, lr=params.lr, fused=fused or None)
    warmup = int(params.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, warmup, total))
    return optimizer, scheduler


def _restart_log(path: Path, keep_until: int) -> None:
    """Drop log lines of steps after ``keep_until`` (a resumed run rewrites them).

    A run killed while writing may leave a partial last line; it is dropped too.
    """
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            step = json.loads(line)["step"]
        except (ValueError, TypeError, KeyError):
            continue
        if isinstance(step, int) and step <= keep_until:
            kept.append(line)
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def _value(term: torch.Tensor | None) -> float | None:
    return None if term is None else term.item()


class Trainer(Generic[Item, Batch]):
    """Train ``model`` in place on ``items``: ``collate`` makes batches, ``loss`` scores them."""

    def __init__(
        self,
        model: torch.nn.Module,
        params: TrainParams,
        collate: Callable[[list[Item]], Batch],
        loss: Callable[[torch.nn.Module, Batch, int], Losses],
        desc: str = "train",
    ) -> None:
        self.model, self.params, self.collate, self.loss, self.desc = model, params, collate, loss, desc

    def run(
        self, items: Sequence[Item], out: Path, checkpointing: Checkpointing | None = None, progress: bool = False
    ) -> TrainResult:
        if not items:
            raise EgkdError("no training examples")
        params, model = self.params, self.model
        out.mkdir(parents=True, exist_ok=True)
        steps_per_epoch = math.ceil(len(items) / params.batch_size)
        total = steps_per_epoch * params.epochs
        optimizer, scheduler = optimizer_for(model, params, total)
        restored = None
        if checkpointing is not None and checkpointing.resume:
            restored = load_checkpoint(out, checkpointing.settings, model, optimizer, scheduler)
        start = restored.step if restored else 0
        log_path = out / LOG_FILE
        if start:
            _restart_log(log_path, start)
        else:
            log_path.unlink(missing_ok=True)
        model.train()
        record: StepRecord | None = None
        orders: dict[int, list[int]] = {}
        bar = tqdm(total=total, initial=start, disable=not progress, desc=self.desc, dynamic_ncols=True)
        with log_path.open("a", encoding="utf-8") as log:
            for step in range(start, total):
                epoch, index = divmod(step, steps_per_epoch)
                order = orders.setdefault(epoch, epoch_order(params.seed, epoch, len(items)))
                chosen = order[index * params.batch_size : (index + 1) * params.batch_size]
                record = self._step(self.collate([items[i] for i in chosen]), optimizer, scheduler, step, epoch)
                log.write(json.dumps(asdict(record)) + "\n")
                bar.update(1)
                bar.set_postfix(loss=f"{record.loss:.4f}")
                if checkpointing is not None and (record.step % checkpointing.every == 0 or record.step == total):
                    log.flush()
                    save_checkpoint(out, record.step, checkpointing.settings, model, optimizer, scheduler)
        bar.close()
        model.eval()
        return TrainResult(total, start, record)

    def _step(self, batch: Batch, optimizer: torch.optim.Optimizer, scheduler, step: int, epoch: int) -> StepRecord:
        lr = optimizer.param_groups[0]["lr"]
        losses = self.loss(self.model, batch, step)
        if not torch.isfinite(losses.total):
            raise EgkdError(
                f"the loss became {losses.total.item()} at step {step + 1} (ce {losses.ce.item()}"
                f"{'' if losses.kd is None else f', kd {losses.kd.item()}'}); try a lower lr"
            )
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        return StepRecord(
            step + 1, epoch, losses.total.item(), losses.ce.item(), _value(losses.kd), _value(losses.explain), lr
        )

"""The stage-two training loop: AdamW, linear warmup and decay, seeded, checkpointed, resumable.

Data order comes from a generator seeded by ``(seed, epoch)`` and the random
choices of step ``s`` (the perturbation view) from one seeded by ``(seed, s)``,
so a run resumed from a checkpoint (which also restores the global RNG used by
dropout) takes exactly the steps an uninterrupted run takes. Every step is
logged to ``train_log.jsonl`` with each loss term on its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.config import DistillParams
from pipeline.distill import losses
from pipeline.distill.checkpoint import load_checkpoint, save_checkpoint
from pipeline.distill.objectives import Objective
from pipeline.distill.student_data import StudentExample, collate_students
from pipeline.errors import EgkdError
from pipeline.optim import adamw

LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class StepRecord:
    step: int  # 1-based: the number of optimizer steps taken so far
    epoch: int
    loss: float
    ce: float
    kd: float
    explain: float | None  # None on steps without the explanation term
    lr: float


@dataclass(frozen=True)
class TrainResult:
    steps: int
    resumed_from: int  # 0 for a fresh run
    last: StepRecord | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def _generator(*keys: int) -> torch.Generator:
    digest = hashlib.sha256(repr(keys).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def epoch_order(seed: int, epoch: int, size: int) -> list[int]:
    return torch.randperm(size, generator=_generator(seed, epoch, 1)).tolist()


def _optimizer(model: torch.nn.Module, params: DistillParams, total: int):
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = adamw([{"params": decay, "weight_decay": params.weight_decay},
                       {"params": rest, "weight_decay": 0.0}], params.lr)
    warmup = int(params.warmup_ratio * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _run_settings(params: DistillParams, size: int, method: str) -> str:
    return json.dumps({**asdict(params), "train_examples": size, "objective": method}, sort_keys=True)


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


def train(student: torch.nn.Module, objective: Objective, examples: Sequence[StudentExample],
          params: DistillParams, out: Path, pad_token_id: int, resume: bool = False,
          progress: bool = False) -> TrainResult:
    """Train ``student`` in place on ``examples``; checkpoints and the log go under ``out``."""
    if not examples:
        raise EgkdError("no training examples in the cache")
    if any(e.label is None for e in examples):
        raise EgkdError("the cache's train rows must carry labels")
    out.mkdir(parents=True, exist_ok=True)
    steps_per_epoch = math.ceil(len(examples) / params.batch_size)
    total = steps_per_epoch * params.epochs
    optimizer, scheduler = _optimizer(student, params, total)
    settings = _run_settings(params, len(examples), str(objective.method and objective.method.value))
    restored = load_checkpoint(out, settings, student, optimizer, scheduler) if resume else None
    start = restored.step if restored else 0
    log_path = out / LOG_FILE
    if start:
        _restart_log(log_path, start)
    else:
        log_path.unlink(missing_ok=True)
    student.train()
    record, orders = None, {}
    bar = tqdm(total=total, initial=start, disable=not progress, desc="distill", dynamic_ncols=True)
    with log_path.open("a", encoding="utf-8") as log:
        for step in range(start, total):
            epoch, index = divmod(step, steps_per_epoch)
            order = orders.setdefault(epoch, epoch_order(params.seed, epoch, len(examples)))
            chosen = order[index * params.batch_size:(index + 1) * params.batch_size]
            batch = collate_students([examples[i] for i in chosen], pad_token_id)
            record = _step(student, objective, batch, params, optimizer, scheduler, step, epoch)
            log.write(json.dumps(asdict(record)) + "\n")
            bar.update(1)
            bar.set_postfix(loss=f"{record.loss:.4f}", ce=f"{record.ce:.4f}", kd=f"{record.kd:.4f}",
                            explain="-" if record.explain is None else f"{record.explain:.4f}")
            if record.step % params.checkpoint_every == 0 or record.step == total:
                log.flush()
                save_checkpoint(out, record.step, settings, student, optimizer, scheduler)
    bar.close()
    student.eval()
    return TrainResult(total, start, record)


def _step(student, objective: Objective, batch, params: DistillParams, optimizer, scheduler,
          step: int, epoch: int) -> StepRecord:
    explain = (objective.method is not None and params.beta > 0 and step % params.explain_every == 0)
    lr = optimizer.param_groups[0]["lr"]
    output = objective.compute(student, batch, explain, _generator(params.seed, step, 2))
    kd = losses.kd_loss(output.logits, batch.teacher_logits, params.temperature, params.t2_scaling)
    ce = losses.ce_loss(output.logits, batch.labels)
    loss = losses.total_loss(kd, ce, output.explain, params.alpha, params.beta)
    if not torch.isfinite(loss):
        raise EgkdError(f"the loss became {loss.item()} at step {step + 1} (kd {kd.item()}, ce {ce.item()}); "
                        "try a lower lr or temperature")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return StepRecord(step + 1, epoch, loss.item(), ce.item(), kd.item(),
                      None if output.explain is None else output.explain.item(), lr)

"""The training loop that teacher fine-tuning and student distillation share.

One loop (:func:`train`) with one set of rules, steered by :class:`~pipeline.config.TrainParams`:

* **seeding**: :func:`seed_everything` seeds python, numpy and torch before the model is built
  (the new classification head draws from torch's global generator, dropout too);
* **length**: ``epochs`` passes over the items, or more where they would not reach ``min_steps``
  optimizer steps (:meth:`~pipeline.config.TrainParams.epochs_for`);
* **data order**: epoch ``e`` visits the examples in the ``e``-th permutation of a generator
  seeded by the run's seed (:func:`epoch_order`), computable from ``(seed, epoch)`` alone, so a
  resumed run takes exactly the steps an uninterrupted one takes;
* **optimizer**: AdamW, weight decay on the weight matrices only (every parameter with two or more
  dimensions; biases and LayerNorm weights are 1-D), one fused kernel where torch has one;
* **schedule**: linear warm-up over ``warmup_ratio`` of the steps, then linear decay to zero
  (:func:`lr_factor`);
* **clipping**: gradient norm 1.0 (:func:`clip_gradients`);
* **log**: one JSON line per step in ``train_log.jsonl`` (:data:`LOG_FILE`), each loss term on its own;
* **checkpoints** (when asked): every ``checkpoint_every`` steps and at the end, for ``resume``;
* **device** (:class:`~pipeline.device.Compute`): the model moves to it before the optimizer is built; the
  loss (forward, and the gradient objective's own backward) runs under bf16 autocast when asked, the
  backward and AdamW on the fp32 master weights. On a CPU the process keeps freed memory for reuse
  (:func:`~pipeline.host_memory.keep_freed_memory`): every step frees and allocates the same large blocks.

Keeping a GPU busy: batches are collated (and pinned) ``prefetch`` steps ahead in a background thread
(:func:`prefetched`) and copied to the device asynchronously, and nothing waits for the device within a
step. Each step's loss terms stay on the device and reach the host in one copy every
:data:`SYNC_EVERY` steps, at each checkpoint and at the end (:meth:`Trainer._write`), which is also where a
non-finite loss is caught; the log holds exactly the values a per-step copy gives.

What differs between the two callers is the batch and the loss: a caller passes ``collate``
(items -> batch) and ``loss`` (model, batch, step -> :class:`Losses`).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Generic, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from pipeline.checkpoint import OtherRunCheckpoint, load_checkpoint, save_checkpoint
from pipeline.config import TrainParams
from pipeline.device import Compute, pin, to_device
from pipeline.errors import EgkdError
from pipeline.host_memory import keep_freed_memory

LOG_FILE = "train_log.jsonl"
SYNC_EVERY = 32  # steps whose loss terms are copied to the host together (and at checkpoints and the end)
PREFETCH = 4  # batches collated ahead on a GPU; on a CPU, collating inline leaves torch's threads the cores

Item = TypeVar("Item")
Batch = TypeVar("Batch")


@dataclass(frozen=True)
class Losses:
    """One step's loss and its terms (scalars); ``total`` is what is minimised."""

    total: torch.Tensor
    ce: torch.Tensor  # cross-entropy (MSE for regression) with the gold labels
    kd: torch.Tensor | None = None  # distillation from the teacher's logits
    explain: torch.Tensor | None = None  # the explanation term, on the steps that compute it
    views: torch.Tensor | None = None  # KD on the teacher's cached views (distill.views), when it is on


@dataclass(frozen=True, kw_only=True)
class StepRecord:
    step: int  # 1-based: the number of optimizer steps taken so far
    epoch: int
    loss: float
    ce: float
    kd: float | None
    explain: float | None  # None on steps without the explanation term
    lr: float
    views: float | None = None  # None when the run has no view term


@dataclass(frozen=True, kw_only=True)
class PendingStep:
    """A finished step whose loss terms are still on the device (:meth:`Trainer._write` logs them)."""

    step: int  # 1-based
    epoch: int
    lr: float
    has_kd: bool
    has_explain: bool
    has_views: bool
    terms: torch.Tensor  # (2 + has_kd + has_explain + has_views,) fp32: total, ce, then kd, explain, views if present


@dataclass(frozen=True)
class TrainResult:
    steps: int
    resumed_from: int  # 0 for a fresh run
    last: StepRecord | None
    resumed_on: str = ""  # the device of the checkpoint it resumed from ("" for a fresh run)
    replaced: str = ""  # why a checkpoint of another run was not resumed (resume_matching), "" where none was found


@dataclass(frozen=True)
class Checkpointing:
    every: int  # steps between checkpoints (and one at the end)
    settings: str  # JSON of what must not change between a run and its resumption
    resume: bool = False  # continue from the last checkpoint; one of another run is refused
    resume_matching: bool = False  # continue from the last checkpoint if it is this run's, else start over


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], max_norm: float) -> None:
    """Scale the gradients so that their global L2 norm is at most ``max_norm``, as ``clip_grad_norm_`` does.

    torch multiplies every gradient by ``min(1, max_norm / (norm + 1e-6))`` even when that factor is exactly 1,
    so as not to wait for a GPU. On a CPU nothing waits, and the multiplication is skipped where it would change
    nothing: a pass over every gradient, a quarter of the clipping's time for a small student (its dense word
    embedding gradient alone is 47 MB). The gradients end bit for bit as torch's.
    """
    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params if p.grad is not None]  # the same list; the test again for the type checker
    if not grads:
        return
    norm = torch.nn.utils.get_total_norm(grads)
    if norm.device.type == "cpu" and bool(max_norm / (norm + 1e-6) >= 1.0):
        return
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)


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


@contextmanager
def prefetched(make: Callable[[int], Batch], steps: range, depth: int) -> Iterator[Iterator[Batch]]:
    """``make(step)`` for each step in order, up to ``depth`` steps ahead in one background thread.

    ``depth`` 0 makes each batch when it is asked for. The thread's work (collating, pinning) runs while
    the main thread is inside torch calls (which release the GIL) or waits for the device.
    """
    if depth <= 0:
        yield (make(step) for step in steps)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="egkd-batches") as pool:
        queued: deque[Future[Batch]] = deque()

        def batches() -> Iterator[Batch]:
            for step in steps:
                queued.append(pool.submit(make, step))
                if len(queued) > depth:
                    yield queued.popleft().result()
            while queued:
                yield queued.popleft().result()

        try:
            yield batches()
        finally:
            for future in queued:
                future.cancel()


class Trainer(Generic[Item, Batch]):
    """Train ``model`` in place on ``items``: ``collate`` makes batches, ``loss`` scores them.

    ``compute`` says where (default: the CPU in fp32); ``prefetch`` how many batches the background
    thread collates ahead (default: :data:`PREFETCH` on a GPU, 0 on a CPU).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        params: TrainParams,
        collate: Callable[[list[Item]], Batch],
        loss: Callable[[torch.nn.Module, Batch, int], Losses],
        desc: str = "train",
        compute: Compute | None = None,
        prefetch: int | None = None,
    ) -> None:
        self.model, self.params, self.collate, self.loss, self.desc = model, params, collate, loss, desc
        self.compute = compute or Compute.cpu()
        self.prefetch = (PREFETCH if self.compute.cuda else 0) if prefetch is None else prefetch

    def run(
        self, items: Sequence[Item], out: Path, checkpointing: Checkpointing | None = None, progress: bool = False
    ) -> TrainResult:
        if not items:
            raise EgkdError("no training examples")
        params, model, compute = self.params, self.model, self.compute
        out.mkdir(parents=True, exist_ok=True)
        steps_per_epoch = math.ceil(len(items) / params.batch_size)
        total = params.total_steps(len(items))
        model.to(compute.device)
        if not compute.cuda:
            keep_freed_memory()  # each CPU step reuses the last one's large blocks (pipeline/host_memory.py)
        optimizer, scheduler = optimizer_for(model, params, total)
        restored, replaced = None, ""
        if checkpointing is not None and (checkpointing.resume or checkpointing.resume_matching):
            try:
                restored = load_checkpoint(out, checkpointing.settings, model, optimizer, scheduler)
            except OtherRunCheckpoint as err:
                if not checkpointing.resume_matching:
                    raise
                replaced = err.reason
        start = restored.step if restored else 0
        log_path = out / LOG_FILE
        if start:
            _restart_log(log_path, start)
        else:
            log_path.unlink(missing_ok=True)
        model.train()
        record: StepRecord | None = None
        orders: dict[int, list[int]] = {}

        def host_batch(step: int) -> Batch:
            epoch, index = divmod(step, steps_per_epoch)
            order = orders.setdefault(epoch, epoch_order(params.seed, epoch, len(items)))
            batch = self.collate([items[i] for i in order[index * params.batch_size : (index + 1) * params.batch_size]])
            if not compute.cuda:
                return batch
            torch.cuda.set_device(compute.device)  # the loader thread pins with the training GPU's context
            return pin(batch)

        bar = tqdm(total=total, initial=start, disable=not progress, desc=self.desc, dynamic_ncols=True)
        pending: list[PendingStep] = []
        steps = range(start, total)
        with log_path.open("a", encoding="utf-8") as log, prefetched(host_batch, steps, self.prefetch) as batches:
            for step, batch in zip(steps, batches, strict=True):
                if compute.cuda:
                    batch = to_device(batch, compute.device, non_blocking=True)
                pending.append(self.step(batch, optimizer, scheduler, step, step // steps_per_epoch))
                bar.update(1)
                done = step + 1
                save = checkpointing is not None and (done % checkpointing.every == 0 or done == total)
                if save or done == total or len(pending) >= SYNC_EVERY:
                    record = self._write(pending, log)
                    pending = []
                    bar.set_postfix(loss=f"{record.loss:.4f}")
                if save:
                    assert checkpointing is not None
                    log.flush()
                    save_checkpoint(out, done, checkpointing.settings, model, optimizer, scheduler)
        bar.close()
        model.eval()
        return TrainResult(total, start, record, restored.device if restored else "", replaced)

    def step(self, batch: Batch, optimizer: torch.optim.Optimizer, scheduler, step: int, epoch: int) -> PendingStep:
        """One optimizer step of the loop (public so that the benchmarks time the same step); nothing in it waits
        for the device."""
        lr = optimizer.param_groups[0]["lr"]
        with self.compute.autocast():
            losses = self.loss(self.model, batch, step)
        optimizer.zero_grad(set_to_none=True)
        losses.total.backward()
        clip_gradients(self.model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        present = [t for t in (losses.total, losses.ce, losses.kd, losses.explain, losses.views) if t is not None]
        terms = torch.stack([t.detach().float() for t in present])
        return PendingStep(
            step=step + 1,
            epoch=epoch,
            lr=lr,
            has_kd=losses.kd is not None,
            has_explain=losses.explain is not None,
            has_views=losses.views is not None,
            terms=terms,
        )

    def _write(self, pending: list[PendingStep], log: IO[str]) -> StepRecord:
        """Copy the pending steps' loss terms to the host at once, refuse a non-finite loss, log each step."""
        values = iter(torch.cat([p.terms for p in pending]).tolist())  # the one device-to-host copy
        records: list[StepRecord] = []
        for p in pending:
            total, ce = next(values), next(values)
            kd = next(values) if p.has_kd else None
            explain = next(values) if p.has_explain else None
            views = next(values) if p.has_views else None
            if not math.isfinite(total):
                log.write("".join(json.dumps(asdict(r)) + "\n" for r in records))  # the steps before it
                raise EgkdError(
                    f"the loss became {total} at step {p.step} (ce {ce}{'' if kd is None else f', kd {kd}'}); "
                    "try a lower lr"
                )
            records.append(
                StepRecord(step=p.step, epoch=p.epoch, loss=total, ce=ce, kd=kd, explain=explain, lr=p.lr, views=views)
            )
        log.write("".join(json.dumps(asdict(r)) + "\n" for r in records))
        return records[-1]

"""Training checkpoints: ``<out>/checkpoints/last/`` holds everything a resumed run needs.

* ``model.safetensors``: the student's weights;
* ``state.pt``: step, optimizer and scheduler state, the torch (CPU, and CUDA when the run is on a
  GPU) / numpy / python RNG states, the device it was saved from and the run's settings (JSON), saved
  with ``torch.save`` and read back with ``weights_only=True`` (plain tensors and containers only).

Checkpoints do not depend on the device: every tensor is saved from host memory and read back onto the
CPU (``map_location``), the weights load straight onto the model's device and the optimizer state
follows its parameters, so a run started on a GPU resumes on a CPU and the other way round. On the same
device the resumed run is exactly the uninterrupted one (the CUDA generator, which drives dropout on a
GPU, is restored too); on another device it continues from the same weights with that device's kernels.

A checkpoint is written into a temporary directory, flushed to disk (fsync),
then renamed over the previous one, so an interruption never leaves a half-written checkpoint; one
that falls between the two renames leaves the previous checkpoint as
``.last.old``, which :func:`load_checkpoint` then uses.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from pipeline.atomic import fsync
from pipeline.device import map_tensors, module_device
from pipeline.errors import EgkdError


class OtherRunCheckpoint(EgkdError):
    """The checkpoint is unreadable or was made by a run of other settings; raised before anything is restored.
    ``reason`` says which checkpoint and why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"cannot resume: {reason}; rerun without --resume")


@dataclass(frozen=True)
class Checkpoint:
    step: int
    settings: str  # JSON of what must not change between a run and its resumption
    device: str  # where the run was when it saved ("cpu", "cuda:0"); "" in checkpoints of older egkd


def last_dir(out: Path) -> Path:
    return out / "checkpoints" / "last"


def has_checkpoint(out: Path) -> bool:
    """Whether ``out`` holds a checkpoint :func:`load_checkpoint` would read."""
    final = last_dir(out)
    return (final / "state.pt").is_file() or (final.with_name(".last.old") / "state.pt").is_file()


def save_checkpoint(
    out: Path, step: int, settings: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler
) -> None:
    final = last_dir(out)
    tmp, old = final.with_name(".last.tmp"), final.with_name(".last.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))
    np_state: tuple[Any, ...] = np.random.get_state()  # type: ignore[assignment]
    device = module_device(model)
    torch.save(
        {
            "step": step,
            "settings": settings,
            "device": str(device),
            "optimizer": map_tensors(optimizer.state_dict(), lambda t: t.cpu()),
            "scheduler": scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy_rng": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])),
            "python_rng": random.getstate(),
        },
        tmp / "state.pt",
    )
    for written in (tmp / "model.safetensors", tmp / "state.pt", tmp):
        fsync(written)  # on disk before the rename makes it the checkpoint (power loss, not just a kill)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    fsync(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    out: Path, settings: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler
) -> Checkpoint | None:
    """Restore the last checkpoint into the given objects; None when there is none. One that is unreadable or of other
    settings raises :class:`OtherRunCheckpoint` before anything is restored."""
    final = last_dir(out)
    if not (final / "state.pt").is_file():
        previous = final.with_name(".last.old")  # interrupted between save_checkpoint's two renames
        if not (previous / "state.pt").is_file():
            return None
        final = previous
    try:
        # The one torch.load in egkd: weights_only admits plain tensors and containers, never code.
        state = torch.load(final / "state.pt", map_location="cpu", weights_only=True)  # noqa: TID251
        if not isinstance(state, dict) or not isinstance(state.get("settings"), str):
            raise ValueError("not an egkd training state")
    except Exception as err:  # a damaged file or one holding arbitrary objects: never unpickled
        raise OtherRunCheckpoint(
            f"{final / 'state.pt'} is not a readable egkd checkpoint "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        ) from None
    if state["settings"] != settings:
        raise OtherRunCheckpoint(
            f"the checkpoint in {final} was made with other settings ({_first_difference(state['settings'], settings)})"
        )
    device = module_device(model)
    try:
        load_model(model, str(final / "model.safetensors"), device=str(device))
    except Exception as err:
        raise EgkdError(
            f"cannot resume: the weights in {final} do not load "
            f"({str(err).splitlines()[0] if str(err) else type(err).__name__}); "
            "rerun without --resume"
        ) from None
    optimizer.load_state_dict(state["optimizer"])  # moves each state tensor to its parameter's device
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    saved_on = str(state.get("device", ""))
    if device.type == "cuda" and state.get("cuda_rng") is not None and saved_on.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    kind, keys, pos, has_gauss, cached = state["numpy_rng"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    return Checkpoint(int(state["step"]), state["settings"], saved_on)


def _first_difference(saved: str, current: str) -> str:
    import json

    old, new = json.loads(saved), json.loads(current)
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            return f"{key}: checkpoint {old.get(key)!r}, now {new.get(key)!r}"
    return "unknown field"

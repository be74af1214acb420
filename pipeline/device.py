"""Where fine-tuning, distillation and evaluation compute, and in what precision.

``compute.device`` (``--device``) is ``auto`` (the first CUDA GPU when torch sees one, else the CPU),
``cpu``, ``cuda`` or ``cuda:N``; ``compute.precision`` (``--precision``) is ``auto`` (bf16 autocast on a
CUDA GPU, fp32 on a CPU), ``fp32`` or ``bf16``. bf16 is *autocast* only: the weights, the optimizer
state and the loss terms stay fp32 (the master weights), matrix products run in bf16. Both are
resolved once per command into a :class:`Compute`, which the training loop, prediction and the
explanation comparisons share, and which the model card and metrics record.

Batches are moved with :func:`to_device` (every tensor of a batch dataclass, ``non_blocking`` from
pinned memory) and pinned with :func:`pin`, so one loader serves every batch type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TypeVar

import torch

from pipeline.config import ComputeParams
from pipeline.errors import EgkdError

T = TypeVar("T")


@dataclass(frozen=True)
class Compute:
    """A resolved device and precision."""

    device: torch.device
    bf16: bool  # autocast matrix products to bf16 (weights stay fp32)

    @classmethod
    def cpu(cls) -> Compute:
        return cls(torch.device("cpu"), False)

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp32"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on this device when asked, else a no-op context."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def describe(self) -> str:
        """``cuda:0 (NVIDIA H100 80GB HBM3), bf16 autocast`` or ``cpu, fp32``: what the card records."""
        where = str(self.device)
        if self.cuda:
            where += f" ({torch.cuda.get_device_name(self.device)})"
        return f"{where}, {'bf16 autocast (fp32 weights)' if self.bf16 else 'fp32'}"

    def record(self) -> dict[str, str]:
        """What metrics files record: the device, its name, and the precision."""
        name = torch.cuda.get_device_name(self.device) if self.cuda else "cpu"
        return {"device": str(self.device), "device_name": name, "precision": self.precision}

    def synchronize(self) -> None:
        """Wait for the device's queued work (timings only; training never waits)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


def resolve_compute(params: ComputeParams) -> Compute:
    """The :class:`Compute` that ``params`` name, on this machine; a one-line error for what it lacks."""
    device, precision = params.device, params.precision
    available = torch.cuda.is_available()
    if device == "auto":
        chosen = torch.device("cuda", torch.cuda.current_device()) if available else torch.device("cpu")
    elif device == "cpu":
        chosen = torch.device("cpu")
    else:
        if not available:
            raise EgkdError(f"device {device}: torch sees no CUDA GPU here; use --device cpu or auto")
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise EgkdError(f"device {device}: only {torch.cuda.device_count()} CUDA GPU(s) visible")
        chosen = torch.device("cuda", index)
    bf16 = precision == "bf16" or (precision == "auto" and chosen.type == "cuda")
    if bf16 and chosen.type == "cuda" and not torch.cuda.is_bf16_supported():
        if precision == "bf16":
            raise EgkdError(f"precision bf16: {torch.cuda.get_device_name(chosen)} does not support bf16")
        bf16 = False
    return Compute(chosen, bf16)


def map_tensors(obj: T, fn: Callable[[torch.Tensor], torch.Tensor]) -> T:
    """``obj`` with ``fn`` applied to every tensor inside it (dataclasses, dicts, tuples, lists are rebuilt)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)  # type: ignore[return-value]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        values = {f.name: map_tensors(getattr(obj, f.name), fn) for f in dataclasses.fields(obj) if f.init}
        return type(obj)(**values)
    if isinstance(obj, dict):
        return {key: map_tensors(value, fn) for key, value in obj.items()}  # type: ignore[return-value]
    if isinstance(obj, tuple):
        return tuple(map_tensors(item, fn) for item in obj)  # type: ignore[return-value]
    if isinstance(obj, list):
        return [map_tensors(item, fn) for item in obj]  # type: ignore[return-value]
    return obj


def to_device(obj: T, device: torch.device, non_blocking: bool = False) -> T:
    """Every tensor of ``obj`` on ``device`` (asynchronously from pinned memory with ``non_blocking``)."""
    return map_tensors(obj, lambda t: t.to(device, non_blocking=non_blocking))


def pin(obj: T) -> T:
    """Every tensor of ``obj`` in page-locked memory, so its copy to a GPU can overlap computation."""
    return map_tensors(obj, lambda t: t.pin_memory())


def module_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    first = next(model.parameters(), None)
    return torch.device("cpu") if first is None else first.device

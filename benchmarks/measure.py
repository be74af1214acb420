"""Measuring tools shared by the benchmark: the FLOP model, a FLOP counter, matmul peak, memory, timers.

FLOP model (see benchmarks/README.md): a BERT forward over ``R`` rows of ``T``
(padded) tokens costs ``R * (2 * P_tok * T + 4 * L * T^2 * H + 2 * P_seq)`` where
``P_tok`` are the per-token weights (every encoder layer's linear weights),
``P_seq`` the per-sequence head (pooler + classifier), ``L`` layers and ``H`` the
hidden size (``QK^T`` and ``AV`` are ``2 T^2 H`` each). A backward with respect
to the inputs only (no weight gradients) costs one more forward; a training
backward (activation and weight gradients) two more.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class FlopModel:
    per_token: int  # weights applied to every token (encoder linear layers)
    per_sequence: int  # weights applied once per sequence (pooler and classifier)
    layers: int
    hidden: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> FlopModel:
        config = model.config
        per_token = per_sequence = 0
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear):
                if ".encoder." in f".{name}.":
                    per_token += module.weight.numel()
                else:
                    per_sequence += module.weight.numel()
        return cls(per_token, per_sequence, config.num_hidden_layers, config.hidden_size)

    def forward(self, rows: int, length: int) -> float:
        return rows * (
            2.0 * self.per_token * length + 4.0 * self.layers * length**2 * self.hidden + 2.0 * self.per_sequence
        )


@dataclass
class FlopCounter:
    """Counts every forward of a model (rows x padded length) and the FLOPs of it and its backward.

    A forward run with gradients enabled is counted with a backward w.r.t. its
    inputs (``inputs_backward``: one more forward) or, for training, with weight
    gradients too (``train_backward``: two more forwards).
    """

    flops: FlopModel
    train: bool = False
    calls: int = 0
    tokens: int = 0  # padded tokens through the model, forwards only
    total: float = 0.0
    _handle: object = field(default=None, repr=False)

    def hook(self, module, args, kwargs) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        embeds = kwargs.get("inputs_embeds")
        shape = (ids if ids is not None else embeds).shape
        rows, length = int(shape[0]), int(shape[1])
        forward = self.flops.forward(rows, length)
        factor = 1.0
        if torch.is_grad_enabled():
            factor = 3.0 if self.train else 2.0
        self.calls += 1
        self.tokens += rows * length
        self.total += factor * forward

    @contextmanager
    def attached(self, model: torch.nn.Module) -> Iterator[FlopCounter]:
        handle = model.register_forward_pre_hook(self.hook, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()


def matmul_peak(sizes: tuple[int, ...] = (1024, 1536, 2048), repeats: int = 5) -> dict:
    """Best fp32 ``torch.mm`` FLOP/s over square sizes (current torch thread count)."""
    best, per_size = 0.0, {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up
        size_best = 0.0
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            size_best = max(size_best, 2.0 * n**3 / (time.perf_counter() - start))
        per_size[str(n)] = size_best
        best = max(best, size_best)
    return {"flops_per_s": best, "per_size": per_size, "threads": torch.get_num_threads()}


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timers around GPU work need it); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peaks(device: torch.device, sizes: tuple[int, ...], repeats: int = 5) -> dict:
    """Best ``torch.mm`` FLOP/s per number format on ``device``: fp32, TF32 (CUDA only) and bf16.

    Square matrices of each size; each timed product is synchronised, the best of ``repeats`` kept.
    """
    formats = {"fp32": (torch.float32, False), "bf16": (torch.bfloat16, False)}
    if device.type == "cuda":
        formats = {"fp32": (torch.float32, False), "tf32": (torch.float32, True), "bf16": (torch.bfloat16, False)}
    out: dict = {"sizes": list(sizes), "threads": torch.get_num_threads()}
    allowed = torch.backends.cuda.matmul.allow_tf32
    try:
        for name, (dtype, tf32) in formats.items():
            torch.backends.cuda.matmul.allow_tf32 = tf32
            best = 0.0
            for n in sizes:
                a = torch.randn(n, n, device=device, dtype=dtype)
                b = torch.randn(n, n, device=device, dtype=dtype)
                torch.mm(a, b)  # warm-up
                for _ in range(repeats):
                    synchronize(device)
                    start = time.perf_counter()
                    torch.mm(a, b)
                    synchronize(device)
                    best = max(best, 2.0 * n**3 / (time.perf_counter() - start))
                del a, b
            out[name] = best
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    return out


@contextmanager
def device_memory(device: torch.device) -> Iterator[dict]:
    """Yields a dict that gets ``peak_device_mib``: the block's peak CUDA memory (nothing on a CPU)."""
    out: dict = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield out
    finally:
        if device.type == "cuda":
            out["peak_device_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def device_info(device: torch.device) -> dict:
    """The accelerator's name, memory and software versions (empty on a CPU)."""
    if device.type != "cuda":
        return {}
    props = torch.cuda.get_device_properties(device)
    return {
        "name": props.name,
        "memory_gib": round(props.total_memory / 2**30, 1),
        "multiprocessors": props.multi_processor_count,
        "cuda": torch.version.cuda,
    }


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs``); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak RSS since the last reset (VmHWM), else the process lifetime max (getrusage)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024.0


@contextmanager
def section_memory() -> Iterator[dict]:
    """Yields a dict that gets ``peak_rss_mib`` of the block (since reset where possible)."""
    out: dict = {}
    out["rss_reset"] = reset_peak_rss()
    try:
        yield out
    finally:
        out["peak_rss_mib"] = round(peak_rss_mib(), 1)


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def machine_info() -> dict:
    load = os.getloadavg()
    return {
        "hostname": os.uname().nodename,
        "cpus": len(os.sched_getaffinity(0)),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
    }

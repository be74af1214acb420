"""The precision a run computes in: ``auto`` resolved for the kind of device, told without torch where the build can.

``auto`` is bf16 autocast on CUDA and fp32 elsewhere. Stage one records the resolved precision in the cache, so a
rerun resolves it again before it can tell that nothing is left to compute; asking ``torch.cuda.is_available()``
costs a second of importing torch, which a CPU-only build of torch (its version ends in ``+cpu``: it cannot use a
CUDA device) answers from its installed metadata instead.
"""

from __future__ import annotations

from importlib import metadata


def resolve_precision(precision: str, device_type: str) -> str:
    """``auto`` is bf16 autocast on CUDA and fp32 elsewhere; ``fp32`` and ``bf16`` are taken as they are."""
    if precision == "auto":
        return "bf16" if device_type == "cuda" else "fp32"
    return precision


def local_device_type() -> str:
    """``cuda`` when this process can compute on a CUDA GPU, else ``cpu``; torch is imported only where its build
    could use one."""
    try:
        if metadata.version("torch").endswith("+cpu"):
            return "cpu"
    except metadata.PackageNotFoundError:
        pass
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"

"""Counter-based random numbers: draws of (seed, example, stream, sample, position).

:func:`random_bits` hashes its counters with SplitMix64's finaliser, so an example gets the same draws on
every device, for every batching and whatever was drawn before; integer arithmetic only, so CPU and GPU
agree bit for bit. Draws are made on the device of the keys (:func:`example_keys`, made on the host).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch shifts arithmetically)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 (wrapping multiplication, as on every torch device)."""
    x = (x ^ _shift(x, 30)) * _M1
    x = (x ^ _shift(x, 27)) * _M2
    return x ^ _shift(x, 31)


def stream_id(name: str) -> int:
    """A stable 62-bit number for a named stream of draws (``"views"``, ``"shapley"``...)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little") >> 2


def example_keys(seed: int, example_ids: Sequence[str]) -> torch.Tensor:
    """``(B,)`` int64 keys of the examples under a run seed (host side: sha256 of ``seed:id``)."""
    keys = [
        int.from_bytes(hashlib.sha256(f"{seed}:{example_id}".encode()).digest()[:8], "little") & ((1 << 63) - 1)
        for example_id in example_ids
    ]
    return torch.tensor(keys, dtype=torch.int64)


BITS = 53  # random_bits are uniform integers in [0, 2**BITS)


def random_bits(keys: torch.Tensor, stream: int, samples: int, length: int) -> torch.Tensor:
    """``(B, samples, length)`` int64 uniform in ``[0, 2**53)``, on the device of ``keys``.

    Entry ``[b, s, t]`` is a hash of (``keys[b]``, ``stream``, ``s``, ``t``) alone: it does not depend on the
    batch, its padding, the device or anything drawn before, so an example gets the same draws wherever it
    is explained. Integer arithmetic only, so CPU and GPU agree bit for bit.
    """
    device = keys.device
    base = _mix(keys + _signed(stream * _GOLDEN % (1 << 64)))  # (B,)
    counter = torch.arange(samples, device=device)[:, None] * (1 << 16) + torch.arange(length, device=device) + 1
    return _shift(_mix(base[:, None, None] + counter * _GOLDEN), 64 - BITS)


def below(bits: torch.Tensor, probability: float) -> torch.Tensor:
    """``bits < probability * 2**53``: True with ``probability`` (exact for dyadic ones such as 0.5)."""
    return bits < int(round(probability * (1 << BITS)))

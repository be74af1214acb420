"""Top-k selections: how many of an example's tokens a fraction is, their ranks, and the top ones.

Ties go to the earlier position (stable sort), so every choice is deterministic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def share(fraction: float, n: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor:
    """``ceil(fraction * n)`` per example, robust to float error (``0.2 * 15`` is 3, not 4); on the host."""
    counts = n.tolist() if isinstance(n, torch.Tensor | np.ndarray) else list(n)
    return torch.tensor([math.ceil(fraction * int(m) - 1e-9) for m in counts], dtype=torch.long)


def ranks(values: torch.Tensor, real: torch.Tensor, descending: bool) -> torch.Tensor:
    """Rank of each position among the ``real`` ones of its row (0 = first), by ``values`` ``(..., T)``.

    Positions that are not real rank after every real one. Ties go to the earlier position (stable sort).
    """
    if values.is_floating_point():
        fill = -math.inf if descending else math.inf
    else:
        fill = torch.iinfo(values.dtype).min if descending else torch.iinfo(values.dtype).max
    order = values.masked_fill(~real, fill).argsort(dim=-1, descending=descending, stable=True)
    positions = torch.arange(order.shape[-1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(-1, order, positions)


def top_k(scores: torch.Tensor, real: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool mask of the ``k[b]`` highest ``scores`` among the ``real`` positions of each row.

    Ties go to the earlier position (stable sort), so the choice is deterministic.
    """
    return (ranks(scores, real, descending=True) < k.to(real.device)[:, None]) & real

"""Do explanations mean something? AOPC faithfulness and teacher-student agreement.

* :func:`aopc`: for each fraction ``f`` (10..50 %), the ``ceil(f * n)`` highest-scored
  real tokens are replaced by ``[MASK]``. **Comprehensiveness** is the mean drop of
  the predicted class's probability when they are masked (higher is better),
  **sufficiency** the mean drop when only they are kept (lower is better), as in
  ERASER / ferret. Regression models use their raw output instead of a probability.
* :func:`rank_agreement`: Spearman rank correlation of two maps over an example's real
  tokens; :func:`top_k_overlap`: the share of one map's top-k tokens in a reference set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from pipeline.encoding import TokenBatch
from pipeline.forwards import masked_logits, target_score
from pipeline.topk import share, top_k


class Aopc(NamedTuple):
    comprehensiveness: torch.Tensor  # (B,) mean over the fractions, per example
    sufficiency: torch.Tensor  # (B,)


def aopc(
    model: torch.nn.Module, batch: TokenBatch, scores: torch.Tensor, fractions: Sequence[float], mask_token_id: int
) -> Aopc:
    """AOPC comprehensiveness and sufficiency per example for (B, T) ``scores`` of ``batch``.

    The explained class is the model's own prediction on the full input. All
    2 * len(fractions) masked copies of the batch run as one chunked forward batch.
    """
    model.eval()
    with torch.inference_mode():
        logits = model(**batch.model_inputs(model)).logits.float()
    target = logits.argmax(-1)
    full = target_score(logits, target)
    real = ~batch.special_mask
    count = real.sum(1).cpu()
    size, nf = batch.size, len(fractions)
    drops = []
    for fraction in fractions:
        top = top_k(scores.to(real.device), real, share(fraction, count).to(real.device))
        drops.append(top)  # comprehensiveness: mask the top tokens
        drops.append(real & ~top)  # sufficiency: mask everything else
    owner = torch.arange(size, device=real.device).repeat(2 * nf)
    masked = target_score(
        masked_logits(model, batch, owner, torch.cat(drops), mask_token_id), target.repeat(2 * nf)
    ).view(nf, 2, size)
    drop = full[None, None, :] - masked
    return Aopc(drop[:, 0].mean(0), drop[:, 1].mean(0))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """The 1-based ranks of (n,) ``values``, tied values sharing the mean of their ranks: (n,) float64."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # first sorted position of each tie group
    ends = np.r_[starts[1:], len(values)]
    group = np.repeat(np.arange(len(starts)), ends - starts)
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = ((starts + ends + 1) / 2)[group]
    return ranks


def rank_agreement(first: np.ndarray, second: np.ndarray) -> float | None:
    """Spearman correlation of two (n,) maps; None when undefined (fewer than 2 tokens, a constant map).

    Pearson's correlation of their average ranks, as scipy's ``spearmanr`` computes it, without scipy: an
    evaluation would spend most of a second importing it.
    """
    if len(first) < 2 or np.ptp(first) == 0 or np.ptp(second) == 0:
        return None
    return float(np.corrcoef(average_ranks(first), average_ranks(second))[0, 1])


def top_k_overlap(scores: np.ndarray, reference: np.ndarray, k: int) -> float:
    """Share of the ``k`` highest ``scores`` (n,) that lie in the ``reference`` set (n,) bool."""
    if k <= 0:
        return 0.0
    order = np.argsort(-scores, kind="stable")[:k]
    return float(reference[order].sum() / k)


def top_k_set(scores: np.ndarray, k: int) -> np.ndarray:
    """(n,) bool: the ``k`` highest scores (ties to the earlier token)."""
    chosen = np.zeros(len(scores), dtype=bool)
    chosen[np.argsort(-scores, kind="stable")[:k]] = True
    return chosen

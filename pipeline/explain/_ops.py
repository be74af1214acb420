"""Shared machinery of the explainers, evaluation and faithfulness: forwards, chunking, masking, top-k.

* :func:`full_logits` and :func:`masked_logits` run a classifier on a batch and on
  masked copies of its rows, the copies in chunks of about :data:`CHUNK_TOKENS`
  padded tokens under ``torch.inference_mode``;
* :func:`target_score` is the explained score (the predicted class's probability);
* :func:`share` and :func:`top_k` choose the top fraction of an example's tokens;
* :func:`frozen_parameters` turns weight gradients off while input gradients are taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from pipeline.encoding import TokenBatch
from pipeline.models import Classifier

CHUNK_TOKENS = 2048  # padded tokens per forward chunk: matmuls stay large, activations stay near the caches


def target_score(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(R, C)`` logits, ``(R,)`` classes -> ``(R,)`` class probability (raw output if ``C == 1``)."""
    if logits.shape[-1] == 1:
        return logits[:, 0]
    return logits.softmax(-1).gather(1, target[:, None])[:, 0]


def share(fraction: float, n: torch.Tensor) -> torch.Tensor:
    """``ceil(fraction * n)`` per example, robust to float error (``0.2 * 15`` is 3, not 4)."""
    return torch.tensor([math.ceil(fraction * int(m) - 1e-9) for m in n], dtype=torch.long)


def top_k(scores: torch.Tensor, real: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool mask of the ``k[b]`` highest ``scores`` among the ``real`` positions of each row.

    Ties go to the earlier position (stable sort), so the choice is deterministic.
    """
    order = scores.masked_fill(~real, -math.inf).argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    return (ranks < k[:, None]) & real


def full_logits(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """``(B, C)`` float32 logits on the unperturbed batch (a normal tensor, not an inference one)."""
    with torch.inference_mode():
        logits = model(**batch.model_inputs()).logits.float()
    return logits.clone()


def masked_logits(
    model: Classifier, batch: TokenBatch, owner: torch.Tensor, drop: torch.Tensor, mask_token_id: int
) -> torch.Tensor:
    """Logits on copies of batch rows with some tokens replaced by ``[MASK]``.

    ``owner`` ``(R,)``: the batch row each copy is made from; ``drop`` ``(R, T)`` bool:
    the positions masked in it. Returns ``(R, C)`` float32. Each chunk is cut to its
    longest row (padding is on the right).
    """
    device = batch.input_ids.device
    owner, drop = owner.to(device), drop.to(device)
    rows = max(1, CHUNK_TOKENS // batch.input_ids.shape[1])
    out = []
    with torch.inference_mode():
        for start in range(0, len(owner), rows):
            idx = owner[start : start + rows]
            attention = batch.attention_mask[idx]
            length = int(attention.sum(1).max())
            ids = batch.input_ids[idx, :length].masked_fill(drop[start : start + rows, :length], mask_token_id)
            out.append(
                model(
                    input_ids=ids,
                    attention_mask=attention[:, :length],
                    token_type_ids=batch.token_type_ids[idx, :length],
                ).logits.float()
            )
    if not out:
        return torch.empty(0, int(model.config.num_labels), device=device)
    return torch.cat(out)


@contextmanager
def frozen_parameters(model: torch.nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on every parameter for the duration, then restore it."""
    parameters = list(model.parameters())
    flags = [p.requires_grad for p in parameters]
    for p in parameters:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(parameters, flags, strict=True):
            p.requires_grad_(flag)

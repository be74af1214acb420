"""Views of each example built from the family's own map, and random ones: what every explainer caches for stage two.

Augmentation is the lever with the largest documented effect for small students, and an explanation can
choose the augmented inputs instead of chance. For every example, stage one caches ``count`` views of each
of three kinds (:class:`~pipeline.cache.extras.GuidedViews`), each view replacing ``k = ceil(fraction * n)``
of the example's ``n`` real tokens (at least one) by ``[MASK]``, with the teacher's logits on the view:

* **label-preserving** (:class:`~pipeline.cache.extras.PreservingViews`): ``k`` tokens drawn at random among
  the lower-importance half by ``|score|`` (the ``max(k, n // 2)`` tokens of lowest magnitude): tokens the
  teacher found unimportant, so the view keeps the input's meaning;
* **contrastive** (:class:`~pipeline.cache.extras.ContrastiveViews`): ``k`` tokens drawn among the top
  ``2k`` by the score for the explained class (signed: the tokens that support the prediction most), so
  the view shows what the decision hangs on;
* **random** (:class:`~pipeline.cache.extras.RandomViews`): ``k`` tokens drawn among all real tokens: the
  baseline that makes the comparison fair (same number of views, same number of replaced tokens).

Why ``[MASK]``: it is the "absent" token the perturbation and feature-selection families already use, the
teacher labels every view (so the shift it makes is labelled by the teacher), and the student sees the
same token in stage two; docs/method.md says why dropping or replacing by other words was not taken.

Draws are :func:`~pipeline.draws.random_bits` of (run seed, example id, kind, view, position): an
example gets the same random views in any batch, on any device, and the same guided views wherever its map
is the same (the pools are ranked on the map rounded to 8 significant bits, so float noise of another
batching reorders tokens only at a rounding boundary). Within a kind's pool of candidate tokens the
``k`` of lowest bits are replaced, a uniform draw without replacement. All views of a batch go through the
teacher as one chunked forward batch, like every other perturbed copy.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.cache.extras import VIEW_KINDS, ContrastiveViews, GuidedViews, PreservingViews
from pipeline.config import ViewParams
from pipeline.draws import random_bits, stream_id
from pipeline.encoding import TokenBatch
from pipeline.forwards import Runtime, host_real, masked_logits, to_device
from pipeline.models import Classifier
from pipeline.topk import ranks, share

STREAMS = {kind: stream_id(f"views.{kind.kind}") for kind in VIEW_KINDS}


def replaced_count(fraction: float, real: np.ndarray) -> torch.Tensor:
    """``(B,)`` tokens replaced in each view: ``ceil(fraction * n)``, at least 1 (0 for a row with no real token)."""
    counts = real.sum(1)
    return torch.where(torch.from_numpy(counts) > 0, share(fraction, counts).clamp(min=1), 0)


def candidates(kind: type[GuidedViews], scores: torch.Tensor, real: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` bool: the tokens a view of ``kind`` may replace, from ``(B, T)`` scores and ``(B,)`` counts ``k``.

    Scores are ranked rounded to bfloat16 (8 significant bits): another batching or token budget changes a
    map in its last bits (about 1e-6), which must not reorder tokens and so change a view; tokens within
    about 0.4% of each other are tied, and ties go to the earlier position (stable sort).
    """
    scores = scores.to(torch.bfloat16).float()
    if kind is PreservingViews:
        size = torch.maximum(k, real.sum(1) // 2)  # the lower half by magnitude, at least k tokens
        return (ranks(scores.abs(), real, descending=False) < size[:, None]) & real
    if kind is ContrastiveViews:
        return (ranks(scores, real, descending=True) < 2 * k[:, None]) & real
    return real


def view_masks(
    kind: type[GuidedViews], scores: torch.Tensor, real: torch.Tensor, keys: torch.Tensor, count: int, k: torch.Tensor
) -> torch.Tensor:
    """``(B, count, T)`` bool: in each view, ``k[b]`` tokens drawn uniformly from the kind's candidates.

    ``scores`` ``(B, T)`` the family's map, ``real`` ``(B, T)`` the explained tokens, ``keys`` ``(B,)`` the
    examples' keys (:meth:`~pipeline.explain.base.Explainer.keys`), ``k`` ``(B,)`` on the batch's device.
    """
    pool = candidates(kind, scores, real, k)[:, None, :]
    bits = random_bits(keys, STREAMS[kind], count, real.shape[1])
    return (ranks(bits, pool, descending=False) < k[:, None, None]) & pool


def build_views(
    model: Classifier,
    batch: TokenBatch,
    scores: torch.Tensor,
    keys: torch.Tensor,
    params: ViewParams,
    mask_token_id: int,
    runtime: Runtime,
) -> tuple[GuidedViews, ...]:
    """Every kind's views of the batch from the family's ``(B, T)`` map, with the teacher's logits on each.

    Returns one extra per kind of :data:`~pipeline.cache.extras.VIEW_KINDS`, each ``(B, count, T)`` masks and
    ``(B, count, C)`` logits; the ``B * 3 * count`` masked copies run as one chunked forward batch.
    """
    device = batch.input_ids.device
    real = ~batch.special_mask
    size, length = real.shape
    k = to_device(replaced_count(params.fraction, host_real(batch)), device)
    masks = torch.stack([view_masks(kind, scores, real, keys, params.count, k) for kind in VIEW_KINDS], 1)
    copies = len(VIEW_KINDS) * params.count  # per example, kind-major: (B, kinds, count, T)
    owner = np.repeat(np.arange(size), copies)
    logits = masked_logits(model, batch, owner, masks.reshape(-1, length), mask_token_id, runtime)
    logits = logits.reshape(size, len(VIEW_KINDS), params.count, logits.shape[-1])
    return tuple(kind(masks[:, i], logits[:, i]) for i, kind in enumerate(VIEW_KINDS))

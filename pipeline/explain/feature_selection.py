"""Feature selection: the k tokens that keep the teacher's prediction, from a sparse linear surrogate.

A LIME-style surrogate fitted per example, in closed form and batched:

1. For an example with ``n`` real (non-special) tokens, draw ``samples - 1`` random
   keep-masks ``z`` in ``{0, 1}^n`` (each token kept with ``keep_probability``, from
   the example's own generator) and add the all-kept mask.
2. Replace the dropped tokens by ``[MASK]`` and score each masked input with the
   teacher: ``p(z)`` = probability of the predicted class (raw output for
   regression). All masked inputs of the batch are one chunked forward batch under
   ``torch.inference_mode``; the all-kept score is the full-input forward.
3. Fit ``p(z) ~ b + w . z`` by ridge regression (penalty ``ridge`` on ``w``, an
   unpenalised intercept ``b``) for every example at once: centre ``z`` and ``p``
   over the samples and solve ``(Zc^T Zc + ridge I) w = Zc^T pc`` with one batched
   ``torch.linalg.solve`` over ``(B, T, T)`` systems. Special and padding positions
   are no features: their rows of the system are the identity, so their weight is 0
   and they do not couple to the real tokens. ``ridge == 0`` is taken as ``1e-6`` so
   that tokens kept (or dropped) in every sample still give a solvable system.
4. The attribution is ``w`` (signed); the selection is the
   ``k = max(1, ceil(k_fraction * n))`` tokens of highest weight, and
   ``Selection.logits`` are the teacher's logits with every other real token masked.

Samples are unweighted (no LIME proximity kernel): with keep probability 1/2 the
masks are already spread evenly around the input, and an unweighted fit keeps the
solve a plain batched normal equation. Cost: ``samples - 1`` forwards per example
for the fit plus one for the selection; the solve is negligible.
"""

from __future__ import annotations

import torch

from pipeline.cache.extras import Extras, Selection
from pipeline.encoding import TokenBatch
from pipeline.explain._ops import full_logits, masked_logits, share, target_score, top_k
from pipeline.explain.base import Explainer, Explanation, register
from pipeline.methods import Method


@register
class FeatureSelectionExplainer(Explainer):
    method = Method.FEATURE_SELECTION
    extras = (Selection,)

    def explain(self, batch: TokenBatch) -> Explanation:
        params = self.params.feature_selection
        device = batch.input_ids.device
        logits = full_logits(self.model, batch)
        target = logits.argmax(-1)
        real = ~batch.special_mask.cpu()
        size, length = real.shape
        keep = self._keep_masks(batch.example_ids, real)  # (B, S, T)
        samples = keep.shape[1]
        owner = torch.arange(size).repeat_interleave(samples - 1)
        drop = (real[:, None] & ~keep[:, 1:]).reshape(-1, length)
        scores = (
            target_score(masked_logits(self.model, batch, owner, drop, self.mask_token_id), target[owner.to(device)])
            .cpu()
            .reshape(size, samples - 1)
        )
        full = target_score(logits, target).cpu()
        weights = ridge_weights(
            keep.double(), torch.cat([full[:, None], scores], 1).double(), real, max(params.ridge, 1e-6)
        ).float()
        k = torch.maximum(share(params.k_fraction, real.sum(1)), torch.ones(size, dtype=torch.long))
        selected = top_k(weights, real, k)
        kept_logits = masked_logits(self.model, batch, torch.arange(size), real & ~selected, self.mask_token_id)
        return Explanation(weights.to(device), logits, Extras((Selection(selected.to(device), kept_logits),)))

    def _keep_masks(self, example_ids: list[str], real: torch.Tensor) -> torch.Tensor:
        """``(B, S, T)`` bool keep-masks, sample 0 all-kept; only real positions vary."""
        params = self.params.feature_selection
        keep = torch.ones(real.shape[0], params.samples, real.shape[1], dtype=torch.bool)
        for b, example_id in enumerate(example_ids):
            positions = real[b].nonzero()[:, 0]
            draws = torch.rand(params.samples - 1, len(positions), generator=self.example_generator(example_id))
            keep[b, 1:, positions] = draws < params.keep_probability
        return keep


def ridge_weights(keep: torch.Tensor, scores: torch.Tensor, real: torch.Tensor, ridge: float) -> torch.Tensor:
    """Per-example ridge regression of ``scores`` ``(B, S)`` on the ``real`` positions of ``keep`` ``(B, S, T)``.

    Returns the ``(B, T)`` weights, exactly 0 where ``real`` ``(B, T)`` is False.
    """
    features = keep * real[:, None]
    centred = features - features.mean(1, keepdim=True)
    target = scores - scores.mean(1, keepdim=True)
    eye = torch.eye(real.shape[1], dtype=keep.dtype)
    gram = centred.transpose(1, 2) @ centred + ridge * eye + torch.diag_embed((~real).to(keep.dtype))
    return torch.linalg.solve(gram, (centred.transpose(1, 2) @ target[:, :, None]))[:, :, 0]

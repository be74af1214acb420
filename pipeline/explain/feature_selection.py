"""Feature selection: the k tokens that keep the teacher's prediction, from a sparse linear surrogate.

A LIME-style surrogate fitted per example, in closed form and batched:

1. For an example with ``n`` real (non-special) tokens, draw ``samples - 1`` random
   keep-masks ``z`` in ``{0, 1}^n`` (each token kept with ``keep_probability``, from
   the example's own counter-based draws, made on the device) and add the all-kept mask.
2. Replace the dropped tokens by ``[MASK]`` and score each masked input with the
   teacher: ``p(z)`` = probability of the predicted class (raw output for
   regression). All masked inputs of the batch are one chunked forward batch under
   ``torch.inference_mode``; the all-kept score is the full-input forward.
3. Fit ``p(z) ~ b + w . z`` by ridge regression (penalty ``ridge`` on ``w``, an
   unpenalised intercept ``b``) for every example at once: centre ``z`` and ``p``
   over the samples and solve ``(Zc^T Zc + ridge I) w = Zc^T pc`` with one batched
   ``torch.linalg.solve_ex`` over ``(B, T, T)`` systems in float64 on the batch's device
   (``solve_ex`` does not ask the device whether a system was singular: none is). Special and padding positions
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

import numpy as np
import torch

from pipeline.cache.extras import Extras, Selection
from pipeline.draws import below, random_bits, stream_id
from pipeline.encoding import TokenBatch
from pipeline.explain.base import Explainer, Explanation, register
from pipeline.forwards import full_logits, host_real, masked_logits, target_score, to_device
from pipeline.methods import Method
from pipeline.topk import share, top_k

KEEP = stream_id("feature_selection")


@register
class FeatureSelectionExplainer(Explainer):
    method = Method.FEATURE_SELECTION
    extras = (Selection,)

    def copies(self, real: int) -> int:
        return max(1, self.params.feature_selection.samples - 1)

    def attribute(self, batch: TokenBatch) -> Explanation:
        params = self.params.feature_selection
        runtime = self.runtime(batch)
        device = batch.input_ids.device
        logits = full_logits(self.model, batch, runtime)
        target = logits.argmax(-1)
        real = ~batch.special_mask
        size, length = real.shape
        keep = self._keep_masks(batch, real)  # (B, S, T)
        samples = keep.shape[1]
        owner = np.repeat(np.arange(size), samples - 1)
        drop = (real[:, None] & ~keep[:, 1:]).reshape(-1, length)
        scores = target_score(
            masked_logits(self.model, batch, owner, drop, self.mask_token_id, runtime),
            target.repeat_interleave(samples - 1),
        ).reshape(size, samples - 1)
        full = target_score(logits, target)
        weights = ridge_weights(
            keep.double(), torch.cat([full[:, None], scores], 1).double(), real, max(params.ridge, 1e-6)
        ).float()
        counts = host_real(batch).sum(1)
        k = to_device(torch.clamp(share(params.k_fraction, counts), min=1), device)
        selected = top_k(weights, real, k)
        kept_logits = masked_logits(self.model, batch, np.arange(size), real & ~selected, self.mask_token_id, runtime)
        return Explanation(weights, logits, Extras((Selection(selected, kept_logits),)))

    def _keep_masks(self, batch: TokenBatch, real: torch.Tensor) -> torch.Tensor:
        """``(B, S, T)`` bool keep-masks, sample 0 all-kept; only real positions vary."""
        params = self.params.feature_selection
        bits = random_bits(self.keys(batch), KEEP, params.samples, real.shape[1])
        keep = below(bits, params.keep_probability) | ~real[:, None, :]
        keep[:, 0] = True
        return keep


def ridge_weights(keep: torch.Tensor, scores: torch.Tensor, real: torch.Tensor, ridge: float) -> torch.Tensor:
    """Per-example ridge regression of ``scores`` ``(B, S)`` on the ``real`` positions of ``keep`` ``(B, S, T)``.

    Returns the ``(B, T)`` weights, exactly 0 where ``real`` ``(B, T)`` is False.
    """
    features = keep * real[:, None]
    centred = features - features.mean(1, keepdim=True)
    target = scores - scores.mean(1, keepdim=True)
    eye = torch.eye(real.shape[1], dtype=keep.dtype, device=keep.device)
    gram = centred.transpose(1, 2) @ centred + ridge * eye + torch.diag_embed((~real).to(keep.dtype))
    solution, _ = torch.linalg.solve_ex(gram, centred.transpose(1, 2) @ target[:, :, None])
    return solution[:, :, 0]

"""Gradient-based explanations at the word-embedding layer: gradient x input and Integrated Gradients.

With ``E`` the ``(T, H)`` word embeddings of an input (the output of
``model.get_input_embeddings()``, before position and segment embeddings are
added) and ``F`` the teacher's *logit* of its predicted class (the single output
for regression), the signed per-token attributions are

* ``input_x_gradient``: ``a_t = sum_h E[t, h] * dF/dE[t, h]`` (captum
  ``LayerGradientXActivation`` on the embedding layer, summed over ``h``);
* ``integrated_gradients``: ``a_t = sum_h (E - E0)[t, h] * sum_s w_s dF/dE(E0 + alpha_s (E - E0))[t, h]``
  with the baseline ``E0`` = the ``[PAD]`` embedding at every non-special position
  (special tokens keep theirs), and ``(alpha_s, w_s)`` the ``ig_steps``-point
  Gauss-Legendre rule on ``[0, 1]``: captum ``LayerIntegratedGradients``' default
  method, exact for integrands of polynomial degree ``2 * ig_steps - 1``, so
  completeness holds far better than with a Riemann sum of as many steps.

The logit is the target rather than the probability, as in captum's tutorials:
it does not saturate, so confident predictions still get informative gradients.

Cost: gradient x input is one forward and one backward per example; IG is one
forward (for the predicted class) plus ``ig_steps`` forwards and backwards. All
``B * ig_steps`` interpolated inputs run as one batch, in chunks of about
``CHUNK_TOKENS`` tokens. Gradients are taken with respect to the embeddings
only: parameters are frozen during ``explain`` so no weight gradient is computed.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.encoding import TokenBatch
from pipeline.explain._ops import CHUNK_TOKENS, frozen_parameters, full_logits
from pipeline.explain.base import Explainer, Explanation, register
from pipeline.methods import Method


def gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights ``(steps,)`` of the Gauss-Legendre rule on ``[0, 1]``."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.from_numpy((nodes + 1) / 2).float(), torch.from_numpy(weights / 2).float()


@register
class GradientExplainer(Explainer):
    method = Method.GRADIENT

    def explain(self, batch: TokenBatch) -> Explanation:
        size = batch.size
        with torch.no_grad():
            words = self.model.get_input_embeddings()(batch.input_ids)  # (B, T, H)
        if self.params.gradient.variant == "input_x_gradient":
            ones = torch.ones(size, device=words.device)
            grads, logits = self._gradients(
                batch, torch.arange(size, device=words.device), ones, ones, words, torch.zeros_like(words), target=None
            )
            delta = words
        else:
            logits = full_logits(self.model, batch)
            pad_id = self.model.config.pad_token_id or 0
            baseline_ids = batch.input_ids.masked_fill(~batch.special_mask, pad_id)
            with torch.no_grad():
                baseline = self.model.get_input_embeddings()(baseline_ids)
            alphas, weights = gauss_legendre(self.params.gradient.ig_steps)
            steps = len(alphas)
            owner = torch.arange(size, device=words.device).repeat_interleave(steps)
            grads, _ = self._gradients(
                batch,
                owner,
                alphas.repeat(size).to(words.device),
                weights.repeat(size).to(words.device),
                words,
                baseline,
                target=logits.argmax(-1),
            )
            delta = words - baseline
        attribution = (delta.float() * grads).sum(-1).masked_fill(batch.special_mask, 0.0)
        return Explanation(attribution, logits)

    def _gradients(
        self,
        batch: TokenBatch,
        owner: torch.Tensor,
        alpha: torch.Tensor,
        weight: torch.Tensor,
        words: torch.Tensor,
        baseline: torch.Tensor,
        target: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted sum of target-logit gradients at ``R`` points ``baseline + alpha * (words - baseline)``.

        ``owner``, ``alpha``, ``weight`` are ``(R,)``: row ``r`` is example ``owner[r]``
        at ``alpha[r]`` with weight ``weight[r]``. ``target`` ``(B,)``, or None to explain
        each row's own argmax (rows are then the full inputs). Returns the ``(B, T, H)``
        summed gradients and the ``(R, C)`` logits at the points.
        """
        total = torch.zeros(words.shape, dtype=torch.float32, device=words.device)
        rows = max(1, CHUNK_TOKENS // words.shape[1])
        all_logits = []
        with frozen_parameters(self.model), torch.enable_grad():
            for start in range(0, len(owner), rows):
                idx = owner[start : start + rows]
                attention = batch.attention_mask[idx]
                length = int(attention.sum(1).max())
                base = baseline[idx, :length]
                a = alpha[start : start + rows, None, None].to(words.dtype)
                point = (base + a * (words[idx, :length] - base)).requires_grad_(True)
                logits = self.model(
                    inputs_embeds=point,
                    attention_mask=attention[:, :length],
                    token_type_ids=batch.token_type_ids[idx, :length],
                ).logits.float()
                chosen = logits.argmax(-1) if target is None else target[idx]
                (grad,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), point)
                total[:, :length].index_add_(0, idx, grad.float() * weight[start : start + rows, None, None])
                all_logits.append(logits.detach())
        return total, torch.cat(all_logits)

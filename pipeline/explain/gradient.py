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

Beside the signed map the family caches :class:`~pipeline.cache.extras.Magnitude`: per token the L2
norm over ``h`` of the same products (for IG, of their sum over the steps), ``m_t = ||(E - E0)[t] *
sum_s w_s dF/dE(...)[t]||_2``, the unsigned map AD-KD distils (``distill.gradient_loss: adkd``); the signed
map is its sum over ``h`` and cannot give it back.

Cost: gradient x input is one forward and one backward per example; IG is one
forward (for the predicted class) plus ``ig_steps`` forwards and backwards. All
``B * ig_steps`` interpolated inputs run as one batch, in chunks of about the
runtime's token budget. Gradients are taken with respect to the embeddings
only: parameters are frozen during ``explain`` so no weight gradient is computed.
Each row's contribution ``sum_h delta * w * grad`` is written to its own slot and
the slots of an example are summed at the end, in a fixed order, so results do
not depend on the chunking (no scattered atomic additions on a GPU).
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.cache.extras import Extras, Magnitude
from pipeline.encoding import TokenBatch
from pipeline.explain.base import Explainer, Explanation, register
from pipeline.forwards import Runtime, frozen_parameters, full_logits, host_lengths, logits_of, plan_chunks, to_device
from pipeline.methods import Method


def gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes and weights ``(steps,)`` of the Gauss-Legendre rule on ``[0, 1]``."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.from_numpy((nodes + 1) / 2).float(), torch.from_numpy(weights / 2).float()


@register
class GradientExplainer(Explainer):
    method = Method.GRADIENT
    extras = (Magnitude,)

    def copies(self, real: int) -> int:
        return 1 if self.params.gradient.variant == "input_x_gradient" else self.params.gradient.ig_steps

    def attribute(self, batch: TokenBatch) -> Explanation:
        runtime = self.runtime(batch)
        device = batch.input_ids.device
        with torch.no_grad():
            words = self.model.get_input_embeddings()(batch.input_ids)  # (B, T, H)
        if self.params.gradient.variant == "input_x_gradient":
            alphas, weights = torch.ones(1), torch.ones(1)
            baseline, target, logits = torch.zeros_like(words), None, None
        else:
            logits = full_logits(self.model, batch, runtime)
            pad_id = self.model.config.pad_token_id or 0
            baseline_ids = batch.input_ids.masked_fill(~batch.special_mask, pad_id)
            with torch.no_grad():
                baseline = self.model.get_input_embeddings()(baseline_ids)
            alphas, weights = gauss_legendre(self.params.gradient.ig_steps)
            target = logits.argmax(-1)
        contributions, per_dimension, point_logits = self._contributions(
            batch, runtime, to_device(alphas, device), to_device(weights, device), words, baseline, target
        )
        attribution = contributions.sum(1).masked_fill(batch.special_mask, 0.0)
        magnitude = per_dimension.sum(1).norm(dim=-1).masked_fill(batch.special_mask, 0.0)
        return Explanation(
            attribution, point_logits[:, 0] if logits is None else logits, Extras((Magnitude(magnitude),))
        )

    def _contributions(
        self,
        batch: TokenBatch,
        runtime: Runtime,
        alpha: torch.Tensor,
        weight: torch.Tensor,
        words: torch.Tensor,
        baseline: torch.Tensor,
        target: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-step token contributions ``w_s * sum_h (E - E0) dF/dE(E0 + alpha_s (E - E0))``, and per dimension.

        ``alpha``, ``weight`` are ``(S,)``: example ``b`` is evaluated at every ``alpha[s]``; rows run
        example-major (row ``b * S + s``). ``target`` ``(B,)``, or None to explain each row's own argmax
        (then ``S == 1`` and the points are the inputs). Returns ``(B, S, T)`` contributions, the same
        before the sum over ``h`` ``(B, S, T, H)`` (for the magnitude map) and the ``(B, S, C)`` logits at
        the points.
        """
        size, length, hidden = words.shape
        steps = len(alpha)
        owner = np.repeat(np.arange(size), steps)
        device = words.device
        owner_device = torch.arange(size, device=device).repeat_interleave(steps)
        step_alpha, step_weight = alpha.repeat(size), weight.repeat(size)
        delta = words - baseline
        contributions = torch.zeros(size * steps, length, dtype=torch.float32, device=device)
        per_dimension = torch.zeros(size * steps, length, hidden, dtype=torch.float32, device=device)
        logits_out = []
        with frozen_parameters(self.model), torch.enable_grad():
            for chunk in plan_chunks(host_lengths(batch), owner, runtime, length):
                rows, cut = slice(chunk.start, chunk.stop), chunk.length
                idx = owner_device[rows]
                change = delta[idx, :cut]
                a = step_alpha[rows, None, None].to(words.dtype)
                point = (baseline[idx, :cut] + a * change).requires_grad_(True)
                logits = logits_of(
                    self.model,
                    runtime,
                    batch.attention_mask[idx, :cut],
                    batch.token_type_ids[idx, :cut],
                    inputs_embeds=point,
                    padded=chunk.padded,
                )
                chosen = logits.argmax(-1) if target is None else target[idx]
                (grad,) = torch.autograd.grad(logits.gather(1, chosen[:, None]).sum(), point)
                products = change.float() * grad.float()
                contributions[rows, :cut] = products.sum(-1) * step_weight[rows, None]
                per_dimension[rows, :cut] = products * step_weight[rows, None, None]
                logits_out.append(logits.detach())
        return (
            contributions.view(size, steps, length),
            per_dimension.view(size, steps, length, hidden),
            torch.cat(logits_out).view(size, steps, -1),
        )

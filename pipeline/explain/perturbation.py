"""Perturbation-based explanations: occlusion (leave-one-out) and Shapley value sampling.

"Absent" tokens are replaced by ``[MASK]``; special tokens are never perturbed.
The score of the explained class is its softmax probability (the raw output for
regression, ``num_labels == 1``), see :func:`target_score`.

* ``occlusion``: ``a_i = p(y | x) - p(y | x with token i masked)``; ``n`` forwards
  for a sentence of ``n`` real tokens. Matches captum ``Occlusion`` with a one-token
  window and ``FeatureAblation`` with one feature per token. With ``window`` w and
  ``stride`` s, captum's sliding windows over the real tokens: copy ``j`` masks the
  real tokens ``j * s .. j * s + w - 1`` (the last window ends at the last token), and
  a token's score is the mean drop of the windows that cover it: ``1 + ceil((n - w) / s)``
  forwards instead of ``n``, so long inputs cost about ``n / s`` forwards of ``n`` tokens.
* ``shapley``: Shapley value sampling with ``shapley_samples`` random permutations
  per example: tokens are unmasked one at a time in permutation order, starting
  from the all-masked input, and each is credited with the change in score it
  causes; attributions are the mean over permutations. The all-masked input is
  shared by the permutations and the full input is already known, so the cost is
  ``1 + S * (n - 1)`` forwards. Sums telescope: ``sum_i a_i = p(x) - p(all masked)``.

All perturbed inputs of a batch go through the teacher as one big forward batch,
in chunks of about the runtime's token budget, under ``torch.inference_mode``.
Which rows copy which example is laid out on the host from the batch's host copy;
the permutations and random views are drawn on the device
(:func:`~pipeline.draws.random_bits`, ranked among the example's real tokens),
so nothing waits for the device.

Stage two also gets :class:`~pipeline.cache.extras.Views`: view 0 masks the ``ceil(mask_fraction * n)``
highest-attributed tokens, views ``1..random_views`` mask as many random tokens, with
the teacher's logits on each view.
"""

from __future__ import annotations

import numpy as np
import torch

from pipeline.cache.extras import Extras, Views
from pipeline.draws import random_bits, stream_id
from pipeline.encoding import TokenBatch
from pipeline.explain.base import Explainer, Explanation, register
from pipeline.forwards import Runtime, full_logits, host_real, masked_logits, target_score, to_device
from pipeline.methods import Method
from pipeline.topk import ranks, share, top_k

SHAPLEY, VIEWS = stream_id("shapley"), stream_id("views")


@register
class PerturbationExplainer(Explainer):
    method = Method.PERTURBATION
    extras = (Views,)

    def copies(self, real: int) -> int:
        params = self.params.perturbation
        if params.variant == "occlusion":
            return len(window_starts(real, params.window, params.stride)) or 1
        return max(1, 1 + params.shapley_samples * (real - 1))

    def attribute(self, batch: TokenBatch) -> Explanation:
        runtime = self.runtime(batch)
        logits = full_logits(self.model, batch, runtime)
        target = logits.argmax(-1)
        full = target_score(logits, target)
        spans = (self.params.perturbation.window, self.params.perturbation.stride)
        if self.params.perturbation.variant == "occlusion" and spans != (1, 1):
            attribution = self._windows(batch, runtime, target, full)
        elif self.params.perturbation.variant == "occlusion":
            attribution = self._occlusion(batch, runtime, target, full)
        else:
            attribution = self._shapley(batch, runtime, target, full)
        return Explanation(attribution, logits, Extras((self._views(batch, runtime, attribution),)))

    def _occlusion(self, batch: TokenBatch, runtime: Runtime, target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """One copy per real token with that token masked: ``R = sum n`` forwards."""
        device = batch.input_ids.device
        rows_host, cols_host = np.nonzero(host_real(batch))
        rows, cols = to_device(rows_host, device), to_device(cols_host, device)
        drop = torch.zeros(len(rows_host), batch.input_ids.shape[1], dtype=torch.bool, device=device)
        drop[torch.arange(len(rows_host), device=device), cols] = True
        scores = target_score(
            masked_logits(self.model, batch, rows_host, drop, self.mask_token_id, runtime), target[rows]
        )
        attribution = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=device)
        attribution[rows, cols] = full[rows] - scores
        return attribution

    def _windows(self, batch: TokenBatch, runtime: Runtime, target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """One copy per window of real tokens, masked together; a token gets the mean drop of its windows."""
        window, stride = self.params.perturbation.window, self.params.perturbation.stride
        device = batch.input_ids.device
        real_host = host_real(batch)
        size, length = real_host.shape
        owner: list[int] = []  # copy -> example
        copy_of: list[np.ndarray] = []  # with column: the (copy, column) pairs of the masked tokens
        column: list[np.ndarray] = []
        for b in range(size):
            positions = np.flatnonzero(real_host[b])
            for start in window_starts(len(positions), window, stride):
                covered = positions[start : start + window]
                copy_of.append(np.full(len(covered), len(owner)))
                column.append(covered)
                owner.append(b)
        attribution = torch.zeros(size, length, dtype=torch.float32, device=device)
        if not owner:
            return attribution
        owner_host, copy_host, column_host = np.asarray(owner), np.concatenate(copy_of), np.concatenate(column)
        drop_host = np.zeros((len(owner_host), length), dtype=bool)
        drop_host[copy_host, column_host] = True
        o, drop = to_device(owner_host, device), to_device(drop_host, device)
        scores = target_score(
            masked_logits(self.model, batch, owner_host, drop, self.mask_token_id, runtime), target[o]
        )
        delta = (full[o] - scores)[:, None] * drop  # (R, T): each copy's drop on the tokens it masked
        covering = torch.zeros(size, length, dtype=torch.float32, device=device)
        attribution.index_add_(0, o, delta)
        covering.index_add_(0, o, drop.float())
        return attribution / covering.clamp_min(1.0)

    def _shapley(self, batch: TokenBatch, runtime: Runtime, target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """Permutation sampling; per example one all-masked copy, then ``S * (n - 1)`` prefixes.

        Permutation ``s`` of example ``b`` orders its real tokens by ``random_bits``; ``rank[b, s, t]`` is
        token ``t``'s place in it. Copy ``(b, s, k)`` keeps the tokens of rank below ``k`` (``k = 0``: the
        all-masked copy, shared by the permutations); ``path[b, s, k]`` is its score, ``path[b, s, n]``
        the full input's, and token ``t`` gains ``path[rank + 1] - path[rank]``.
        """
        samples = self.params.perturbation.shapley_samples
        device = batch.input_ids.device
        real_host = host_real(batch)
        size, length = real_host.shape
        counts = real_host.sum(1)
        # Host layout of the copies, example by example: (owner, permutation, step k).
        owner, sample, step = [], [], []
        for b, n in enumerate(counts.tolist()):
            if n == 0:
                continue
            owner.append(np.full(1 + samples * (n - 1), b))
            sample.append(np.concatenate([[0], np.repeat(np.arange(samples), n - 1)]))
            step.append(np.concatenate([[0], np.tile(np.arange(1, n), samples)]))
        attribution = torch.zeros(size, length, dtype=torch.float32, device=device)
        if not owner:
            return attribution
        owner_host, sample_host, step_host = (np.concatenate(x) for x in (owner, sample, step))
        real = ~batch.special_mask
        rank = ranks(random_bits(self.keys(batch), SHAPLEY, samples, length), real[:, None, :], descending=False)
        o, s, k = (to_device(x, device) for x in (owner_host, sample_host, step_host))
        drop = real[o] & (rank[o, s] >= k[:, None])
        scores = target_score(
            masked_logits(self.model, batch, owner_host, drop, self.mask_token_id, runtime), target[o]
        )
        path = torch.zeros(size, samples, length + 1, dtype=torch.float32, device=device)
        first = np.flatnonzero(step_host == 0)  # the all-masked copy of each example
        later = np.flatnonzero(step_host > 0)
        path[o[later], s[later], k[later]] = scores[to_device(later, device)]
        examples = to_device(owner_host[first], device)
        path[examples, :, 0] = scores[to_device(first, device)][:, None]
        path[examples, :, to_device(counts[owner_host[first]], device)] = full[examples][:, None]
        position = rank.clamp(max=length - 1)
        gain = path.gather(2, position + 1) - path.gather(2, position)  # (B, S, T): credit of each token
        return attribution + gain.mean(1).masked_fill(~real, 0.0)

    def _views(self, batch: TokenBatch, runtime: Runtime, attribution: torch.Tensor) -> Views:
        """``(B, P, T)`` masks (view 0: top attributed, then random) and the teacher's ``(B, P, C)`` logits.

        A random view masks the ``k`` real tokens of lowest ``random_bits``: a uniform random subset.
        """
        device = batch.input_ids.device
        real = ~batch.special_mask
        size, length = real.shape
        k = to_device(share(self.params.perturbation.mask_fraction, host_real(batch).sum(1)), device)
        bits = random_bits(self.keys(batch), VIEWS, self.params.perturbation.random_views, length)
        randoms = (ranks(bits, real[:, None, :], descending=False) < k[:, None, None]) & real[:, None, :]
        masks = torch.cat([top_k(attribution, real, k)[:, None], randoms], dim=1)  # (B, P, T)
        views = masks.shape[1]
        owner = np.repeat(np.arange(size), views)
        logits = masked_logits(self.model, batch, owner, masks.reshape(-1, length), self.mask_token_id, runtime)
        return Views(masks, logits.reshape(size, views, -1))


def window_starts(real: int, window: int, stride: int) -> list[int]:
    """Where the windows over ``real`` tokens start: every ``stride`` tokens, the last one ending at the last token
    (captum's ``Occlusion`` leaves a tail uncovered; here every token is covered). ``[]`` for no real token."""
    if real <= 0:
        return []
    last = max(real - window, 0)
    starts = list(range(0, last + 1, stride))
    return starts if starts[-1] == last else [*starts, last]

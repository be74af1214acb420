"""Perturbation-based explanations: occlusion (leave-one-out) and Shapley value sampling.

"Absent" tokens are replaced by ``[MASK]``; special tokens are never perturbed.
The score of the explained class is its softmax probability (the raw output for
regression, ``num_labels == 1``), see :func:`target_score`.

* ``occlusion``: ``a_i = p(y | x) - p(y | x with token i masked)``; ``n`` forwards
  for a sentence of ``n`` real tokens. Matches captum ``Occlusion`` with a one-token
  window and ``FeatureAblation`` with one feature per token.
* ``shapley``: Shapley value sampling with ``shapley_samples`` random permutations
  per example: tokens are unmasked one at a time in permutation order, starting
  from the all-masked input, and each is credited with the change in score it
  causes; attributions are the mean over permutations. The all-masked input is
  shared by the permutations and the full input is already known, so the cost is
  ``1 + S * (n - 1)`` forwards. Sums telescope: ``sum_i a_i = p(x) - p(all masked)``.

All perturbed inputs of a batch go through the teacher as one big forward batch,
in chunks of about :data:`~pipeline.explain._ops.CHUNK_TOKENS` tokens, under ``torch.inference_mode``.

Stage two also gets :class:`~pipeline.cache.extras.Views`: view 0 masks the ``ceil(mask_fraction * n)``
highest-attributed tokens, views ``1..random_views`` mask as many random tokens, with
the teacher's logits on each view.
"""

from __future__ import annotations

import torch

from pipeline.cache.extras import Extras, Views
from pipeline.encoding import TokenBatch
from pipeline.explain._ops import full_logits, masked_logits, share, target_score, top_k
from pipeline.explain.base import Explainer, Explanation, register
from pipeline.methods import Method


@register
class PerturbationExplainer(Explainer):
    method = Method.PERTURBATION
    extras = (Views,)

    def explain(self, batch: TokenBatch) -> Explanation:
        logits = full_logits(self.model, batch)
        target = logits.argmax(-1)
        full = target_score(logits, target)
        if self.params.perturbation.variant == "occlusion":
            attribution = self._occlusion(batch, target, full)
        else:
            attribution = self._shapley(batch, target, full)
        return Explanation(attribution, logits, Extras((self._views(batch, attribution),)))

    def _occlusion(self, batch: TokenBatch, target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """One copy per real token with that token masked: ``R = sum n`` forwards."""
        rows, cols = (~batch.special_mask).nonzero(as_tuple=True)
        drop = torch.zeros(len(rows), batch.input_ids.shape[1], dtype=torch.bool, device=rows.device)
        drop[torch.arange(len(rows), device=rows.device), cols] = True
        scores = target_score(masked_logits(self.model, batch, rows, drop, self.mask_token_id), target[rows])
        attribution = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=rows.device)
        attribution[rows, cols] = full[rows] - scores
        return attribution

    def _shapley(self, batch: TokenBatch, target: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """Permutation sampling; per example one all-masked copy, then ``S * (n - 1)`` prefixes."""
        samples = self.params.perturbation.shapley_samples
        real = ~batch.special_mask.cpu()
        owners, drops, ranks = [], [], []
        for b, example_id in enumerate(batch.example_ids):
            positions = real[b].nonzero()[:, 0]
            n = len(positions)
            if n == 0:
                continue
            generator = self.example_generator(example_id)
            rank = torch.stack([torch.randperm(n, generator=generator) for _ in range(samples)]).argsort(1)
            # present[s, k - 1, i]: token i is unmasked after the first k steps of permutation s.
            present = rank[:, None, :] < torch.arange(1, n)[None, :, None]  # (S, n - 1, n)
            drop = torch.zeros(1 + samples * (n - 1), real.shape[1], dtype=torch.bool)
            drop[:, positions] = True  # row 0: everything masked
            drop[1:, positions] = ~present.reshape(-1, n)
            owners.append(torch.full((len(drop),), b))
            drops.append(drop)
            ranks.append((b, rank))
        attribution = torch.zeros(real.shape, dtype=torch.float32)
        if not ranks:
            return attribution.to(full.device)
        owner = torch.cat(owners)
        logits = masked_logits(self.model, batch, owner, torch.cat(drops), self.mask_token_id)
        scores = target_score(logits, target[owner.to(target.device)]).cpu().split([len(d) for d in drops])
        for (b, rank), score in zip(ranks, scores, strict=False):
            n = rank.shape[1]
            # path[s, k]: score after the first k steps of permutation s, k = 0..n.
            path = torch.cat(
                [score[:1].expand(samples, 1), score[1:].reshape(samples, n - 1), full[b].cpu().expand(samples, 1)],
                dim=1,
            )
            gain = path.gather(1, rank + 1) - path.gather(1, rank)  # (S, n): credit of each token
            attribution[b, real[b]] = gain.mean(0)
        return attribution.to(full.device)

    def _views(self, batch: TokenBatch, attribution: torch.Tensor) -> Views:
        """``(B, P, T)`` masks (view 0: top attributed, then random) and the teacher's ``(B, P, C)`` logits."""
        real = ~batch.special_mask.cpu()
        size, length = real.shape
        k = share(self.params.perturbation.mask_fraction, real.sum(1))
        randoms = torch.zeros(size, self.params.perturbation.random_views, length, dtype=torch.bool)
        for b, example_id in enumerate(batch.example_ids):
            positions = real[b].nonzero()[:, 0]
            generator = self.example_generator(f"{example_id}/views")
            for v in range(randoms.shape[1]):
                randoms[b, v, positions[torch.randperm(len(positions), generator=generator)[: k[b]]]] = True
        masks = torch.cat([top_k(attribution.cpu(), real, k)[:, None], randoms], dim=1)  # (B, P, T)
        views = masks.shape[1]
        owner = torch.arange(size).repeat_interleave(views)
        logits = masked_logits(self.model, batch, owner, masks.reshape(-1, length), self.mask_token_id)
        return Views(masks.to(batch.input_ids.device), logits.reshape(size, views, -1))

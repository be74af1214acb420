"""The view term of stage two: KD on the views stage one cached with the teacher's logits (``distill.views``).

Every family's cache holds, per example, label-preserving, contrastive and random views
(:mod:`pipeline.explain.view_masks`). On each step the term picks ``count`` of them per example, runs the
student once on all of them (one forward of ``B * count`` rows: at most one extra forward per view), and
matches the teacher's cached logits there with the KD loss of the main term
(:func:`pipeline.losses.view_loss`). It is independent of the objective, so ``method: none`` with random
views is "KD with random views", the baseline an explanation has to beat, and ``gradient`` with
label-preserving views is "the gradient objective with its views".

Which views: ``view_kind`` names the source. The views of an example are drawn without replacement by the
step's generator, seeded by ``(seed, step)``: a resumed run takes the same views.

Another family's views (``distill.view_method``, ``egkd distill --view-cache``): the objective can come from
one family's map and the views from another's, e.g. the gradient objective with the occlusion maps' contrastive
views. :func:`view_source` says which cache they come from (``--view-cache`` may be a folder of caches, as
dvc.yaml passes for every student) and :func:`views_from` replaces the rows' views with those of the same
sentences in that family's partition of a cache made by the same teacher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pipeline import losses
from pipeline.cache.extras import ContrastiveViews, Extras, GuidedViews, PreservingViews, RandomViews
from pipeline.cache.project import StudentBatch
from pipeline.cache.schema import CachedExample, CacheMetadata
from pipeline.cache.store import check_compatible, family_cache, is_cache, list_partitions, read_cache
from pipeline.config import DistillParams, ViewKind
from pipeline.distill.objectives import student_on_masks
from pipeline.errors import EgkdError
from pipeline.methods import Method

SOURCES: dict[str, tuple[type[GuidedViews], ...]] = {
    "preserving": (PreservingViews,),
    "contrastive": (ContrastiveViews,),
    "random": (RandomViews,),
}


@dataclass(frozen=True)
class ViewTerm:
    kind: ViewKind
    count: int  # views per example per step
    temperature: float
    t2_scaling: bool
    mask_token_id: int  # the student tokenizer's [MASK]

    @classmethod
    def of(cls, params: DistillParams, mask_token_id: int) -> ViewTerm | None:
        """The term ``params`` ask for; None when it is off (``views`` or ``view_weight`` 0)."""
        if params.views == 0 or params.view_weight == 0:
            return None
        return cls(params.view_kind, params.views, params.temperature, params.t2_scaling, mask_token_id)

    @property
    def requires(self) -> tuple[type[GuidedViews], ...]:
        """The cached view kinds it reads."""
        return SOURCES[self.kind]

    def slots(self, step: int) -> list[type[GuidedViews]]:
        """The source of each of the ``count`` views of step ``step`` (0-based)."""
        sources = SOURCES[self.kind]
        return [sources[(step + j) % len(sources)] for j in range(self.count)]

    def pick(self, batch: StudentBatch, step: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, count, T)`` masks and ``(B, count, C)`` teacher logits of the views of step ``step``.

        The draws are made on the host from ``generator``, so every device picks the same views.
        """
        slots = self.slots(step)
        masks, logits = [], []
        for kind in dict.fromkeys(slots):
            views = batch.extras.get(kind)
            if views is None:
                raise EgkdError(f"the cache rows have no {kind.kind} views; distill.view_kind {self.kind} needs them")
            size, available, length = views.masks.shape
            wanted = slots.count(kind)
            if wanted > available:
                raise EgkdError(
                    f"distill.views asks for {wanted} {kind.kind} view(s) per example, the cache has {available} "
                    "(explain.views.count)"
                )
            order = torch.rand(size, available, generator=generator).argsort(dim=1)[:, :wanted]
            order = order.to(views.masks.device, non_blocking=True)
            masks.append(views.masks.gather(1, order[:, :, None].expand(-1, -1, length)))
            logits.append(views.logits.gather(1, order[:, :, None].expand(-1, -1, views.logits.shape[-1])))
        return torch.cat(masks, 1), torch.cat(logits, 1)

    def compute(
        self, student: torch.nn.Module, batch: StudentBatch, step: int, generator: torch.Generator
    ) -> torch.Tensor:
        """The scalar view term of one step: the student on every picked view against the teacher's logits."""
        masks, teacher = self.pick(batch, step, generator)
        logits = student_on_masks(student, batch, masks, self.mask_token_id)
        return losses.view_loss(logits, teacher, self.temperature, self.t2_scaling)


# Fields in which a second cache must agree with the first (the rows' ids and tokens are compared one by one).
_SAME_TEACHER = ("task", "teacher_weights_hash", "tokenizer_hash", "num_labels", "max_length")


def view_source(cache: Path, view_cache: Path | None, method: Method | None, own: Method) -> Path | None:
    """The cache the view term's views come from when they are not ``cache``'s own (``own`` family's); else None.

    ``view_cache`` is a cache, whose views are taken (``method``'s, or those of the one family it holds), or a
    folder of caches: there another family's views are taken only when ``method`` names one other than ``own``,
    from the one cache in the folder that holds that family's train split. Without ``view_cache``, another
    family named by ``method`` is read from ``cache`` itself (a cache of several families).
    """
    other = method is not None and method != own
    if view_cache is None:
        return Path(cache) if other else None
    view_cache = Path(view_cache)
    if not view_cache.is_dir():
        raise EgkdError(f"view cache not found: {view_cache}")
    if is_cache(view_cache):
        return view_cache
    if not other:
        return None
    assert method is not None
    return family_cache(view_cache, method.value, option="--view-cache")


def views_from(
    rows: Sequence[CachedExample],
    meta: CacheMetadata,
    view_cache: Path,
    method: Method | None,
    splits: Sequence[str],
) -> tuple[list[CachedExample], CacheMetadata]:
    """``rows`` with their views taken from ``view_cache``'s rows of the same sentences, and that partition's metadata.

    The views are those of ``method``'s partitions of ``view_cache`` (None: the one family it holds), for each of
    ``splits`` the rows come from, written by the teacher that made ``meta``'s cache; every row must be there with
    the same tokens. The rows keep their own map and other extras; their label-preserving, contrastive and random
    views are replaced. The metadata returned is that of the first of ``splits``.
    """
    view_cache = Path(view_cache)
    if not view_cache.is_dir():
        raise EgkdError(f"view cache not found: {view_cache}")
    partitions = list_partitions(view_cache)
    families = sorted({m for m, split in partitions if split == "train"})
    if method is None and len(families) != 1:
        raise EgkdError(
            f"view cache {view_cache} holds the train partitions of {', '.join(families) or 'no family'}; "
            "name the views' family with distill.view_method"
        )
    family = families[0] if method is None else method.value
    by_id: dict[str, CachedExample] = {}
    metas = []
    for split in splits:
        if (family, split) not in partitions:
            raise EgkdError(f"view cache {view_cache} has no {split} split for method {family}")
        view_meta, view_rows = read_cache(view_cache, family, split)
        check_compatible(view_meta, meta, fields=_SAME_TEACHER, context=f"view cache {view_cache}")
        metas.append(view_meta)
        by_id.update((r.example_id, r) for r in view_rows)
    merged = []
    for row in rows:
        other = by_id.get(row.example_id)
        if other is None or not np.array_equal(other.input_ids, row.input_ids):
            what = "has no row" if other is None else "has other tokens"
            raise EgkdError(f"view cache {view_cache} {what} for example {row.example_id}: not the same sentences")
        kept = tuple(item for item in row.extras.items if not isinstance(item, GuidedViews))
        borrowed = tuple(item for item in other.extras.items if isinstance(item, GuidedViews))
        merged.append(replace(row, extras=Extras(kept + borrowed)))
    return merged, metas[0]

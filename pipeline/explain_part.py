"""One part of stage one, as a task on a dask worker (or in the calling process).

:func:`compute_part` encodes the part's examples, explains them in length
buckets, puts the rows back in dataset order, refuses non-finite values and
writes the part atomically. Each worker process loads the teacher once and
keeps it in :data:`_TEACHERS`, keyed by the teacher reference and its weights hash.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cache import write_part
from pipeline.cache_schema import CachedExample, CacheMetadata
from pipeline.config import ExplainParams
from pipeline.data import Example
from pipeline.errors import EgkdError
from pipeline.explain.base import Explanation, Method


@dataclass(frozen=True)
class PartJob:
    """Everything one task needs; the path is built from the request, never read from a file."""

    index: int
    path: Path
    examples: list[Example]
    meta: CacheMetadata
    teacher: str
    weights_hash: str
    method: Method
    params: ExplainParams
    torch_threads: int | None  # None: leave torch's thread count alone
    allow_pickle: bool = False  # the teacher may load from pickle weights


@dataclass(frozen=True)
class PartResult:
    index: int
    rows: int
    truncated: int
    seconds: float


@dataclass
class _Teacher:
    model: object
    tokenizer: object
    device: str


_TEACHERS: dict[tuple[str, str], _Teacher] = {}  # per worker process: (teacher ref, weights hash) -> model


def _teacher(job: PartJob) -> _Teacher:
    key = (job.teacher, job.weights_hash)
    if key not in _TEACHERS:
        import torch

        from pipeline.models import load_classifier, load_tokenizer, weights_hash

        if weights_hash(job.teacher) != job.weights_hash:
            raise EgkdError(f"the teacher weights at {job.teacher} on this worker differ from the driver's")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_classifier(job.teacher, job.meta.num_labels, allow_pickle=job.allow_pickle).to(device).eval()
        _TEACHERS.clear()  # one teacher per worker at a time
        _TEACHERS[key] = _Teacher(model, load_tokenizer(job.teacher), device)
    return _TEACHERS[key]


def compute_part(job: PartJob) -> PartResult:
    """Explain one part's examples and write the part; rows keep dataset order whatever the batching."""
    import torch

    from pipeline.encoding import bucketed_batches, collate, encode
    from pipeline.explain.base import make_explainer

    started = time.perf_counter()
    if job.torch_threads is not None:
        torch.set_num_threads(job.torch_threads)
    teacher = _teacher(job)
    encoded = encode(teacher.tokenizer, job.examples, job.meta.max_length)
    explainer = make_explainer(job.method, teacher.model, job.params, teacher.tokenizer.mask_token_id)
    pad = teacher.tokenizer.pad_token_id or 0
    rows: list[CachedExample | None] = [None] * len(encoded)
    for indices in bucketed_batches(encoded, job.params.batch_size):
        batch = collate([encoded[i] for i in indices], pad).to(teacher.device)
        explanation = explainer.explain(batch)
        for position, row in zip(indices, _rows(explanation, [encoded[i].input_ids.shape[0] for i in indices])):
            rows[position] = _cached(job.examples[position], encoded[position], row)
    done = [row for row in rows if row is not None]
    bad = [row.example_id for row in done if not (np.isfinite(row.attribution).all()
                                                  and np.isfinite(row.teacher_logits).all())]
    if bad:
        raise EgkdError(f"explanations that are not finite for {len(bad)} example(s) of part {job.index} "
                        f"(first {bad[0]!r}); nothing was written for this part")
    truncated = sum(e.truncated for e in encoded)
    write_part(job.path, job.meta, job.index, done, truncated)
    return PartResult(job.index, len(done), truncated, time.perf_counter() - started)


@dataclass(frozen=True)
class _RowArrays:
    attribution: np.ndarray
    logits: np.ndarray
    view_masks: np.ndarray | None
    view_logits: np.ndarray | None
    selection_mask: np.ndarray | None
    selection_logits: np.ndarray | None


def _rows(explanation: Explanation, lengths: list[int]) -> Iterator[_RowArrays]:
    """Per-example arrays of one batch's explanation, cut to each example's own length."""
    def host(tensor, dtype):
        return None if tensor is None else tensor.detach().cpu().numpy().astype(dtype)

    attribution = host(explanation.attribution.float(), np.float32)
    logits = host(explanation.logits.float(), np.float32)
    views, selection = explanation.views, explanation.selection
    view_masks = host(views.masks if views else None, np.bool_)
    view_logits = host(views.logits.float() if views else None, np.float32)
    selection_mask = host(selection.mask if selection else None, np.bool_)
    selection_logits = host(selection.logits.float() if selection else None, np.float32)
    for i, n in enumerate(lengths):
        yield _RowArrays(
            attribution[i, :n].copy(), logits[i].copy(),
            None if view_masks is None else view_masks[i, :, :n].copy(),
            None if view_logits is None else view_logits[i].copy(),
            None if selection_mask is None else selection_mask[i, :n].copy(),
            None if selection_logits is None else selection_logits[i].copy(),
        )


def _cached(example: Example, encoded, arrays: _RowArrays) -> CachedExample:
    return CachedExample(
        example_id=example.example_id, split=example.split, label=example.label, text_a=example.text_a,
        text_b=example.text_b, input_ids=encoded.input_ids, token_type_ids=encoded.token_type_ids,
        special_mask=encoded.special_mask, offsets=encoded.offsets, attribution=arrays.attribution,
        teacher_logits=arrays.logits, view_masks=arrays.view_masks, view_logits=arrays.view_logits,
        selection_mask=arrays.selection_mask, selection_logits=arrays.selection_logits,
    )



"""One part of stage one, as a task on a dask worker (or in the calling process).

:func:`compute_part` encodes the part's examples, explains them in length
buckets, puts the rows back in dataset order, refuses non-finite values and
writes the part atomically. Each worker process loads the teacher once and
keeps it in :data:`_TEACHERS`, keyed by the teacher reference and its weights hash.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.extras import row_of, to_host
from pipeline.cache.schema import CachedExample, CacheMetadata
from pipeline.cache.store import write_part
from pipeline.config import ExplainParams
from pipeline.data import Example
from pipeline.encoding import EncodedExample
from pipeline.errors import EgkdError
from pipeline.explain.base import Explanation
from pipeline.methods import Method
from pipeline.models import Classifier


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
    model: Classifier
    tokenizer: Any  # a transformers tokenizer
    device: str


_TEACHERS: dict[tuple[str, str, int | None], _Teacher] = {}  # per worker process: (ref, weights hash, head seed)


def _teacher(job: PartJob) -> _Teacher:
    key = (job.teacher, job.weights_hash, job.meta.teacher_head_seed)
    if key not in _TEACHERS:
        import torch

        from pipeline.models import NewHead, load_tokenizer, load_trained_classifier, weights_hash

        if weights_hash(job.teacher) != job.weights_hash:
            raise EgkdError(f"the teacher weights at {job.teacher} on this worker differ from the driver's")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        seed = job.meta.teacher_head_seed  # the driver checked the head: a new one only when it was allowed
        head = NewHead(seed is not None, seed or 0, "teacher")
        model, _ = load_trained_classifier(job.teacher, job.meta.num_labels, head, job.allow_pickle)
        model = model.to(device).eval()
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
        made = explanation_to_rows(
            explainer.explain(batch), [job.examples[i] for i in indices], [encoded[i] for i in indices]
        )
        for position, row in zip(indices, made, strict=True):
            rows[position] = row
    done = [row for row in rows if row is not None]
    bad = [
        row.example_id
        for row in done
        if not (np.isfinite(row.attribution).all() and np.isfinite(row.teacher_logits).all())
    ]
    if bad:
        raise EgkdError(
            f"explanations that are not finite for {len(bad)} example(s) of part {job.index} "
            f"(first {bad[0]!r}); nothing was written for this part"
        )
    truncated = sum(e.truncated for e in encoded)
    write_part(job.path, job.meta, job.index, done, truncated)
    return PartResult(job.index, len(done), truncated, time.perf_counter() - started)


def explanation_to_rows(
    explanation: Explanation, examples: Sequence[Example], encoded: Sequence[EncodedExample]
) -> list[CachedExample]:
    """The cache rows of one explained batch: every array cut to its own example's tokens, on the host."""
    attribution = explanation.attribution.detach().float().cpu().numpy()
    logits = explanation.logits.detach().float().cpu().numpy()
    extras = to_host(explanation.extras)
    rows = []
    for i, (example, item) in enumerate(zip(examples, encoded, strict=True)):
        n = len(item.input_ids)
        rows.append(
            CachedExample(
                example_id=example.example_id,
                split=example.split,
                label=example.label,
                text_a=example.text_a,
                text_b=example.text_b,
                input_ids=item.input_ids,
                token_type_ids=item.token_type_ids,
                segments=item.segments,
                special_mask=item.special_mask,
                offsets=item.offsets,
                attribution=attribution[i, :n].copy(),
                teacher_logits=logits[i].copy(),
                extras=row_of(extras, i, n),
            )
        )
    return rows

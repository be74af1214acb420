"""Consecutive parts of stage one, explained as one stream: a task on a dask worker, or the whole run in process.

:func:`stream_parts` keeps the device busy while the host tokenises, copies
results out and writes Parquet:

* a thread encodes the parts ahead of the explainer;
* the examples of consecutive parts are pooled (a few token budgets of work),
  sorted by length and cut by :func:`plan_batches` into batches of about one
  token budget: padded tokens of the largest forward, every perturbed copy and
  IG step counted (:meth:`Explainer.copies`);
* each batch's explanation is copied to the host asynchronously and turned into
  rows while the device explains the next batch (one wait per batch, none inside);
* a second thread refuses non-finite values and writes each part atomically as
  soon as its last row is in, while the device works on the next pool.

Rows keep dataset order within each part whatever the batching: an example's
result does not depend on its batch. Each worker process loads the teacher once
and keeps it in :data:`_TEACHERS`, keyed by the teacher reference and its weights hash.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.cache.extras import row_of, to_host
from pipeline.cache.schema import CachedExample, CacheMetadata
from pipeline.cache.store import write_part
from pipeline.config import ExplainParams, override
from pipeline.data import Example
from pipeline.encoding import EncodedExample
from pipeline.errors import EgkdError
from pipeline.explain.base import Explainer, Explanation
from pipeline.methods import Method
from pipeline.models import Classifier

POOL_BUDGETS = 4  # a pool holds parts until it has this many token budgets of work: full batches, early writes
ENCODE_AHEAD = 8  # parts tokenised ahead of the explainer


@dataclass(frozen=True)
class PartJob:
    """Everything one part needs; the path is built from the request, never read from a file."""

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
    seconds: float  # this part's share (by rows) of the time its pool took to explain


@dataclass
class _Teacher:
    model: Classifier
    tokenizer: Any  # a transformers tokenizer
    device: str


_TEACHERS: dict[tuple[str, str], _Teacher] = {}  # per worker process: (teacher ref, weights hash) -> model


def load_teacher(teacher: str, weights: str | None, num_labels: int, allow_pickle: bool = False) -> _Teacher:
    """This process's teacher for (reference, weights hash), loaded once onto the GPU if there is one.

    ``weights``: the hash the driver computed, checked against the files this process sees; None takes
    the files' own hash (a warm-up before the driver's is known).
    """
    from pipeline.models import weights_hash

    found = weights_hash(teacher) if weights is None else None
    key = (teacher, str(found if weights is None else weights))
    if key not in _TEACHERS:
        import torch

        from pipeline.models import load_classifier, load_tokenizer

        if found is None and weights_hash(teacher) != weights:
            raise EgkdError(f"the teacher weights at {teacher} on this worker differ from the driver's")
        device = "cuda" if torch.cuda.is_available() else "cpu"
        model = load_classifier(teacher, num_labels, allow_pickle=allow_pickle).to(device).eval()
        _TEACHERS.clear()  # one teacher per worker at a time
        _TEACHERS[key] = _Teacher(model, load_tokenizer(teacher), device)
    return _TEACHERS[key]


def plan_batches(
    items: Sequence[EncodedExample], explainer: Explainer, tokens: int, cap: int | None = None
) -> list[list[int]]:
    """Indices of ``items`` in batches of similar length, each about one budget of ``tokens``.

    Longest first (stable within a length); a batch grows while its examples' copies, padded to its
    first (longest) example, fit ``tokens`` (at least one example), and to at most ``cap`` examples.
    """
    order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
    batches: list[list[int]] = []
    current: list[int] = []
    work = width = 0
    for i in order:
        copies = explainer.copies(int((~items[i].special_mask).sum()))
        if current and (work + copies * width > tokens or (cap is not None and len(current) >= cap)):
            batches.append(current)
            current, work = [], 0
        if not current:
            width = len(items[i].input_ids)
        current.append(i)
        work += copies * width
    if current:
        batches.append(current)
    return batches


@dataclass
class _Slot:
    """One part of a pool: its rows as they come in."""

    job: PartJob
    encoded: list[EncodedExample]
    rows: list[CachedExample | None]
    missing: int


def stream_parts(jobs: Sequence[PartJob]) -> Iterator[PartResult]:
    """Explain and write consecutive parts (same run) as one stream; yields each part once it is written."""
    import torch

    from pipeline.encoding import collate, encode
    from pipeline.explain.base import make_explainer

    if not jobs:
        return
    first = jobs[0]
    if first.torch_threads is not None:
        torch.set_num_threads(first.torch_threads)
    teacher = load_teacher(first.teacher, first.weights_hash, first.meta.num_labels, first.allow_pickle)
    params = override(first.params, precision=first.meta.precision)  # what the cache records
    explainer = make_explainer(first.method, teacher.model, params, teacher.tokenizer.mask_token_id)
    device = torch.device(teacher.device)
    tokens = params.tokens_per_forward.on(device.type)
    pad = teacher.tokenizer.pad_token_id or 0

    def encoded(job: PartJob) -> list[EncodedExample]:
        return encode(teacher.tokenizer, job.examples, job.meta.max_length)

    with (
        ThreadPoolExecutor(1, thread_name_prefix="egkd-encode") as encoder,
        ThreadPoolExecutor(1, thread_name_prefix="egkd-write") as writer,
    ):
        pending_encodings: deque[tuple[PartJob, Future]] = deque()
        writes: deque[Future] = deque()
        queued = 0
        try:
            while queued < len(jobs) or pending_encodings:
                while queued < len(jobs) and len(pending_encodings) < ENCODE_AHEAD:
                    pending_encodings.append((jobs[queued], encoder.submit(encoded, jobs[queued])))
                    queued += 1
                pool: list[_Slot] = []
                work = 0
                while pending_encodings and work < POOL_BUDGETS * tokens:
                    job, future = pending_encodings.popleft()
                    items = future.result()
                    pool.append(_Slot(job, items, [None] * len(items), len(items)))
                    work += sum(explainer.copies(int((~e.special_mask).sum())) * len(e.input_ids) for e in items)
                    if queued < len(jobs):
                        pending_encodings.append((jobs[queued], encoder.submit(encoded, jobs[queued])))
                        queued += 1
                started = time.perf_counter()
                _explain_pool(pool, explainer, tokens, params.batch_size, pad, device, collate)
                seconds = time.perf_counter() - started
                total = sum(len(slot.encoded) for slot in pool) or 1
                for slot in pool:
                    writes.append(writer.submit(_write, slot, seconds * len(slot.encoded) / total))
                while writes and writes[0].done():
                    yield writes.popleft().result()
            while writes:
                yield writes.popleft().result()
        except BaseException:
            for future in writes:
                future.cancel()
            raise


def compute_parts(jobs: Sequence[PartJob]) -> list[PartResult]:
    """One dask task: :func:`stream_parts` over consecutive parts, to the end."""
    return list(stream_parts(jobs))


def _explain_pool(
    pool: list[_Slot], explainer: Explainer, tokens: int, cap: int | None, pad: int, device, collate
) -> None:
    """Explain every example of the pool into its slot, one batch in flight while the last one is copied out."""
    where = [(s, i) for s, slot in enumerate(pool) for i in range(len(slot.encoded))]
    items = [pool[s].encoded[i] for s, i in where]
    in_flight: tuple[list[int], _HostCopy] | None = None
    for indices in plan_batches(items, explainer, tokens, cap):
        batch = collate([items[i] for i in indices], pad).to(device, non_blocking=True)
        copy = _HostCopy(explainer.explain(batch))
        if in_flight is not None:
            _store(pool, where, *in_flight)
        in_flight = (indices, copy)
    if in_flight is not None:
        _store(pool, where, *in_flight)


class _HostCopy:
    """An explanation being copied to the host without waiting; :meth:`get` waits for that copy only."""

    def __init__(self, explanation: Explanation) -> None:
        import torch

        def out(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.detach().to("cpu", non_blocking=True)

        self.explanation = Explanation(
            out(explanation.attribution),
            out(explanation.logits),
            explanation.extras.map(lambda _, tensor: out(tensor)),
        )
        self.event = None
        if explanation.attribution.is_cuda:
            self.event = torch.cuda.Event()
            self.event.record()

    def get(self) -> Explanation:
        if self.event is not None:
            self.event.synchronize()
        return self.explanation


def _store(pool: list[_Slot], where: list[tuple[int, int]], indices: list[int], copy: _HostCopy) -> None:
    places = [where[i] for i in indices]
    rows = explanation_to_rows(
        copy.get(),
        [pool[s].job.examples[i] for s, i in places],
        [pool[s].encoded[i] for s, i in places],
    )
    for (s, i), row in zip(places, rows, strict=True):
        pool[s].rows[i] = row
        pool[s].missing -= 1


def _write(slot: _Slot, seconds: float) -> PartResult:
    """Check one finished part and write it atomically (in the writer thread)."""
    job = slot.job
    assert slot.missing == 0
    done = [row for row in slot.rows if row is not None]
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
    truncated = sum(e.truncated for e in slot.encoded)
    write_part(job.path, job.meta, job.index, done, truncated)
    return PartResult(job.index, len(done), truncated, seconds)


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

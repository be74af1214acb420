"""Consecutive parts of stage one, explained as one stream: a task on a dask worker, or the whole run in process.

:func:`stream_parts` keeps the device busy while the host tokenises, copies
results out and writes Parquet:

* a thread encodes the parts ahead of the explainer;
* the examples of consecutive parts are pooled (a few token budgets of work),
  sorted by length and cut by :func:`plan_batches` into batches of about
  :data:`BATCH_FORWARDS` token budgets: padded tokens of the copies, every
  perturbed copy and IG step counted (:meth:`Explainer.copies`); the explainer
  runs them in forwards of one budget each;
* each batch's explanation is copied to the host asynchronously and turned into
  one Arrow table, a column at a time (:func:`~pipeline.cache.format.explained_table`),
  while the device explains the next batch (one wait per batch, none inside);
* a second thread puts each part's rows in dataset order, refuses non-finite values
  and writes the part atomically as soon as its last row is in, while the device
  works on the next pool; the folder is synced once, when the stream ends.

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
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.cache.extras import to_host
from pipeline.cache.format import explained_table
from pipeline.cache.schema import CacheMetadata
from pipeline.cache.store import sync_folder, write_table
from pipeline.config import ExplainParams, override
from pipeline.data import Example
from pipeline.encoding import EncodedExample
from pipeline.errors import EgkdError
from pipeline.explain.base import Explainer, Explanation
from pipeline.methods import Method
from pipeline.models import Classifier

BATCH_FORWARDS = 4  # a batch holds this many forwards' worth of copies: its own small forwards (the unperturbed
# input, the views, the selection: one row per example or a few) then hold enough rows to run efficiently too
POOL_BUDGETS = 8  # a pool holds parts until it has this many token budgets of work: full batches, early writes
ENCODE_AHEAD = 8  # parts tokenised ahead of the explainer


@dataclass(frozen=True, kw_only=True)
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
    # the hash of the teacher's tokenizer files meta.tokenizer_hash was computed from (models.tokenizer_files_hash),
    # recorded in the part's footer: what lets a rerun take that tokenizer hash without loading the tokenizer
    teacher_files: str | None = None


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


_TEACHERS: dict[tuple[str, str, int | None], _Teacher] = {}  # per worker process: (ref, weights hash, head seed)


def load_teacher(
    teacher: str, weights: str, num_labels: int, head_seed: int | None, allow_pickle: bool = False
) -> _Teacher:
    """This process's teacher for (reference, weights hash, head seed), loaded once onto the GPU if there is one.

    ``weights``: the hash the driver computed, checked against the files this process sees; ``head_seed``:
    None for the teacher's own trained head, else the seed its new head is drawn from (the driver checked it).
    """
    key = (teacher, weights, head_seed)
    if key not in _TEACHERS:
        from pipeline.models import NewHead, weights_hash

        if weights_hash(teacher) != weights:
            raise EgkdError(f"the teacher weights at {teacher} on this worker differ from the driver's")
        _store_teacher(
            key, teacher, num_labels, NewHead(head_seed is not None, head_seed or 0, "teacher"), allow_pickle
        )
    return _TEACHERS[key]


def warm_teacher(teacher: str, num_labels: int, new_head: bool, seed: int, allow_pickle: bool = False) -> None:
    """Load the teacher before the driver's hash and head check are known, under the key its jobs will use."""
    from pipeline.models import NewHead, weights_hash

    _store_teacher(
        (teacher, weights_hash(teacher), None), teacher, num_labels, NewHead(new_head, seed, "teacher"), allow_pickle
    )


def keep_teacher(teacher: str, weights: str, head_seed: int | None, model: Classifier, tokenizer: Any) -> None:
    """Keep a loaded teacher, on the GPU if there is one, for :func:`load_teacher` (one per process at a time)."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    _TEACHERS.clear()
    _TEACHERS[(teacher, weights, head_seed)] = _Teacher(model.to(device).eval(), tokenizer, device)


def _store_teacher(key: tuple[str, str, int | None], teacher: str, num_labels: int, head, allow_pickle: bool) -> None:
    from pipeline.models import load_tokenizer, load_trained_classifier

    model, drawn = load_trained_classifier(teacher, num_labels, head, allow_pickle)
    keep_teacher(key[0], key[1], head.seed if drawn else None, model, load_tokenizer(teacher))


def plan_batches(
    items: Sequence[EncodedExample], explainer: Explainer, tokens: int, cap: int | None = None
) -> list[list[int]]:
    """Indices of ``items`` in batches of similar length, each about ``tokens`` padded tokens of copies.

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
    """One part of a pool: its rows as they come in, a batch's table at a time."""

    job: PartJob
    encoded: list[EncodedExample]
    pieces: list[tuple[pa.Table, np.ndarray]]  # rows of this part from one batch, and their places in the part
    missing: int


@dataclass
class _Pool:
    """Consecutive parts explained together: their examples, in one length-sorted plan of batches."""

    slots: list[_Slot]
    started: float = 0.0

    @property
    def where(self) -> list[tuple[int, int]]:  # (slot, row) of each example, in pool order
        return [(s, i) for s, slot in enumerate(self.slots) for i in range(len(slot.encoded))]


@dataclass
class _InFlight:
    """A batch whose explanation is being copied out."""

    pool: _Pool
    places: list[tuple[int, int]]
    copy: HostCopy


def stream_parts(jobs: Sequence[PartJob]) -> Iterator[PartResult]:
    """Explain and write consecutive parts (same run) as one stream; yields each part once it is written.

    One batch is always in flight: the next batch (of the same pool or the next) is queued on the device
    before the host waits for the last one's copy, turns it into a table and, when that completes a pool,
    hands the pool's parts to the writer. The parts' folder is synced once, when the stream ends or fails.
    """
    import torch

    from pipeline.encoding import collate, encode
    from pipeline.explain.base import make_explainer

    if not jobs:
        return
    first = jobs[0]
    if first.torch_threads is not None:
        torch.set_num_threads(first.torch_threads)
    teacher = load_teacher(
        first.teacher, first.weights_hash, first.meta.num_labels, first.meta.teacher_head_seed, first.allow_pickle
    )
    params = override(first.params, precision=first.meta.precision)  # what the cache records
    explainer = make_explainer(first.method, teacher.model, params, teacher.tokenizer.mask_token_id)
    device = torch.device(teacher.device)
    tokens = params.tokens_per_forward.on(device.type)
    pad = teacher.tokenizer.pad_token_id or 0

    def encoded(job: PartJob) -> list[EncodedExample]:
        return encode(teacher.tokenizer, job.examples, job.meta.max_length)

    def work(items: list[EncodedExample]) -> int:
        return sum(explainer.copies(int((~e.special_mask).sum())) * len(e.input_ids) for e in items)

    try:
        with (
            ThreadPoolExecutor(1, thread_name_prefix="egkd-encode") as encoder,
            ThreadPoolExecutor(1, thread_name_prefix="egkd-write") as writer,
        ):
            ahead: deque[tuple[PartJob, Future]] = deque()
            writes: deque[Future] = deque()
            queued = 0

            def pools() -> Iterator[_Pool]:
                """Pools of parts as their encodings come in, each a few token budgets of work."""
                nonlocal queued
                while queued < len(jobs) or ahead:
                    slots: list[_Slot] = []
                    pooled = 0
                    while (queued < len(jobs) or ahead) and pooled < POOL_BUDGETS * tokens:
                        while queued < len(jobs) and len(ahead) < ENCODE_AHEAD:
                            ahead.append((jobs[queued], encoder.submit(encoded, jobs[queued])))
                            queued += 1
                        job, future = ahead.popleft()
                        items = future.result()
                        slots.append(_Slot(job, items, [], len(items)))
                        pooled += work(items)
                    yield _Pool(slots)

            def settle(flight: _InFlight) -> None:
                """The batch in flight as a table; a pool that this completes goes to the writer."""
                _store(flight.pool.slots, flight.places, flight.copy, first.meta.extras)
                if not any(slot.missing for slot in flight.pool.slots):
                    seconds = time.perf_counter() - flight.pool.started
                    total = sum(len(slot.encoded) for slot in flight.pool.slots)
                    for slot in flight.pool.slots:
                        writes.append(writer.submit(_write, slot, seconds * len(slot.encoded) / total))

            try:
                in_flight: _InFlight | None = None
                for pool in pools():
                    pool.started = time.perf_counter()
                    where = pool.where
                    items = [pool.slots[s].encoded[i] for s, i in where]
                    for indices in plan_batches(items, explainer, BATCH_FORWARDS * tokens, params.batch_size):
                        batch = collate([items[i] for i in indices], pad).to(device, non_blocking=True)
                        flight = _InFlight(pool, [where[i] for i in indices], HostCopy(explainer.explain(batch)))
                        if in_flight is not None:
                            settle(in_flight)
                        in_flight = flight
                    while writes and writes[0].done():
                        yield writes.popleft().result()
                if in_flight is not None:
                    settle(in_flight)
                while writes:
                    yield writes.popleft().result()
            except BaseException:
                for future in writes:
                    future.cancel()
                raise

    finally:
        # The renames of the parts written, once for the whole stream however it ends: until then a power
        # loss may undo a rename, which leaves only a missing part for the next run to compute.
        if first.path.parent.is_dir():
            sync_folder(first.path.parent)


def compute_parts(jobs: Sequence[PartJob]) -> list[PartResult]:
    """One dask task: :func:`stream_parts` over consecutive parts, to the end."""
    return list(stream_parts(jobs))


class HostCopy:
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


def _store(slots: list[_Slot], places: list[tuple[int, int]], copy: HostCopy, kinds: tuple[str, ...]) -> None:
    """The batch's rows as one table, handed to the parts they belong to."""
    explanation = copy.get()
    table = explained_table(
        [slots[s].job.examples[i] for s, i in places],
        [slots[s].encoded[i] for s, i in places],
        explanation.attribution.detach().float().numpy(),
        explanation.logits.detach().float().numpy(),
        to_host(explanation.extras),
        kinds,
    )
    owner = np.fromiter((s for s, _ in places), dtype=np.int64, count=len(places))
    where = np.fromiter((i for _, i in places), dtype=np.int64, count=len(places))
    for s in np.unique(owner).tolist():
        mine = np.flatnonzero(owner == s)
        slots[s].pieces.append((table if len(mine) == len(places) else table.take(mine), where[mine]))
        slots[s].missing -= len(mine)


def _write(slot: _Slot, seconds: float) -> PartResult:
    """Put one finished part's rows in dataset order, check them and write the part atomically (in the writer
    thread). The folder is synced once the stream ends (:func:`stream_parts`)."""
    job = slot.job
    assert slot.missing == 0
    where = np.concatenate([places for _, places in slot.pieces])
    table = pa.concat_tables([piece for piece, _ in slot.pieces]).take(np.argsort(where, kind="stable"))
    table = table.combine_chunks()
    bad = _not_finite(table)
    if bad:
        raise EgkdError(
            f"explanations that are not finite for {len(bad)} example(s) of part {job.index} "
            f"(first {bad[0]!r}); nothing was written for this part"
        )
    truncated = sum(e.truncated for e in slot.encoded)
    write_table(job.path, job.meta, job.index, table, truncated, fsync_folder=False, teacher_files=job.teacher_files)
    return PartResult(job.index, table.num_rows, truncated, seconds)


def _not_finite(table: pa.Table) -> list[str]:
    """Example ids of the rows (in table order) whose attribution or teacher logits are not all finite."""
    bad = np.zeros(table.num_rows, dtype=bool)
    for name in ("attribution", "teacher_logits"):
        column = table.column(name).combine_chunks()
        values = column.flatten().to_numpy()
        rows = pc.list_parent_indices(column).to_numpy()
        bad[rows[~np.isfinite(values)]] = True
    return [table.column("example_id")[int(i)].as_py() for i in np.flatnonzero(bad)]

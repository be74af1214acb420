"""Stage one: a teacher's explanations of dataset splits, computed part by part into the cache.

:func:`run_explain` loads a split, cuts it into parts of ``partition_size``
examples in dataset order, and keeps every part already in the cache that is
whole and was made by the same run (same teacher weights, tokenizer, data,
method parameters, precision...: :mod:`pipeline.explain.resume`). That check
reads each part's footer only (its metadata, index and row count), and a rerun
whose every part is there decides so without torch or the teacher's model
(about a second); ``verify`` reads every part in full first (checksums and
digest), as ``egkd cache verify`` does. A part made by a different run is
refused, naming the differing field, unless ``overwrite`` clears the partition
first. Missing or corrupt parts are computed by
:func:`pipeline.explain.part.stream_parts`: encode, explain in token-budget
batches, put rows back in dataset order, write each part atomically.

:func:`run_explain_splits` runs several splits of one teacher and method
(``egkd explain --split train --split dev``) in one process, one after the
other, each exactly as :func:`run_explain` runs it alone (the same parts, the
same rows), sharing the fixed costs: the imports, the data source, the
teacher's tokenizer and model, the dask cluster.

``precision: auto`` is resolved here, once, for the devices the parts will be
computed on (bf16 where they are CUDA GPUs, fp32 elsewhere), and recorded in
the metadata; workers use the recorded value.

Parts run as one stream in this process (``workers == 0``), or as tasks of
consecutive parts (a few per worker, so each task streams too) on a local dask
cluster (``workers > 0``: one process per worker, torch threads split between
them; with CUDA GPUs, one worker per GPU pinned through ``CUDA_VISIBLE_DEVICES``),
or on an existing dask scheduler (``scheduler``: its workers must see the cache
folder and the teacher at the same paths). Each worker process loads the teacher once.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.cache.store import part_path, partition_dir, temp_files
from pipeline.config import DataParams, ExplainParams
from pipeline.data import TRANSFER, Dataset, load_text
from pipeline.errors import EgkdError
from pipeline.explain.resume import (
    OtherRunParts,
    TeacherFacts,
    existing_parts,
    head_known_trained,
    kept_run,
    part_files,
    run_metadata,
)
from pipeline.methods import Method
from pipeline.models import check_label_order
from pipeline.precision import local_device_type, resolve_precision
from pipeline.sources import DataSource, open_source
from pipeline.tasks import TaskSpec, get_task

if TYPE_CHECKING:  # the part module imports torch: only a run that computes parts needs it
    from pipeline.explain.part import PartJob, PartResult


@dataclass(frozen=True, kw_only=True)
class ExplainRequest:
    method: Method
    teacher: str  # a model reference (see pipeline.models)
    data: str | None  # a GLUE TSV folder, or "hub" (unused for the transfer split)
    task: str
    split: str
    out: Path  # the cache root
    limit: int | None
    max_length: int
    params: ExplainParams  # batch_size, partition_size, workers, seed and the method's own parameters
    scheduler: str | None = None  # address of a running dask scheduler
    overwrite: bool = False  # delete this (method, split) partition first
    # parts made by another run (other settings, teacher or data) are replaced, not refused: a rerun after a change
    # starts over, one after an interruption resumes (dvc.yaml, whose outputs persist)
    replace_stale: bool = False
    progress: bool = False
    allow_pickle: bool = False  # let the teacher load from pickle weights (pytorch_model.bin)
    allow_new_head: bool = False  # a teacher without a trained head gets one drawn from params.seed
    verify: bool = False  # read existing parts in full (checksums, digest) before deciding what to compute
    text: Path | None = None  # the transfer split's plain-text file of unlabelled examples, one per line
    # The data section's settings of own data (columns, labels, file format; pipeline.sources): the task is `task`
    data_params: DataParams = field(default_factory=DataParams)


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    partition: Path
    parts_total: int
    computed: tuple[PartResult, ...]
    skipped: int  # valid parts kept from an earlier run
    corrupt: tuple[str, ...]  # part files found corrupt and recomputed
    rows: int  # rows in the whole partition
    truncated: int  # sentences cut to max_length, whole partition
    seconds: float
    new_head: tuple[str, ...] = ()  # teacher weights newly initialised from the seed (--allow-new-head)
    seed: int = 0
    replaced: str = ""  # why the parts of another run were replaced (replace_stale), "" where none were

    @property
    def rows_computed(self) -> int:
        return sum(part.rows for part in self.computed)

    def lines(self) -> list[str]:
        head = (
            [f"note: the teacher has no trained head; {', '.join(self.new_head)} drawn from seed {self.seed}"]
            if self.new_head
            else []
        )
        if not self.computed:
            return head + [
                f"nothing to compute: all {self.parts_total} parts ({self.rows} rows) are already in {self.partition}"
            ]
        rate = self.rows_computed / self.seconds if self.seconds > 0 else float("inf")
        lines = [
            f"computed {len(self.computed)} part(s), skipped {self.skipped} already in the cache; "
            f"{self.rows_computed} of {self.rows} rows in {self.seconds:.1f} s ({rate:.1f} ex/s)",
            f"{self.truncated} sentence(s) longer than max_length were truncated",
            f"cache: {self.partition}",
        ]
        if self.corrupt:
            lines.insert(1, f"recomputed corrupt part(s): {', '.join(self.corrupt)}")
        if self.replaced:
            head.append(f"note: replaced the parts of another run: {self.replaced}")
        return head + lines


def run_explain(request: ExplainRequest) -> RunSummary:
    """One split of the data (or the transfer split's text file) explained into the cache."""
    (summary,) = run_explain_splits([request])
    return summary


@dataclass(frozen=True)
class _Split:
    request: ExplainRequest
    dataset: Dataset
    directory: Path


def run_explain_splits(requests: Sequence[ExplainRequest]) -> Iterator[RunSummary]:
    """Several splits of one teacher and method, in this order, in one process; each as :func:`run_explain` runs it
    alone, its summary yielded once it is done. The requests differ in ``split`` and ``limit`` only. Every split's
    data is read before anything runs."""
    started = time.perf_counter()
    first = requests[0]
    for request in requests[1:]:
        params = replace(request.params, split=first.params.split)
        if replace(request, split=first.split, limit=first.limit, params=params) != first:
            raise ValueError("the splits of one run differ in more than split and limit")  # a caller's bug
    splits = [r.split for r in requests]
    twice = sorted({s for s in splits if splits.count(s) > 1})
    if twice:
        raise EgkdError(f"split {twice[0]} is given twice (--split); each split is explained once")
    blocked = next((p for p in (first.out, *first.out.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:  # refused before any work is done, not when the first part is written
        raise EgkdError(f"cannot write the cache to {first.out}: {blocked} is a file, not a folder")
    source = None if first.data is None else open_source(first.data, replace(first.data_params, task=first.task))
    task = get_task(first.task) if source is None else source.task
    check_label_order(first.teacher, task.labels, "teacher")
    runs = [
        _Split(r, _load(r, task, source), partition_dir(r.out, r.method.value, r.split)) for r in requests
    ]  # data errors before anything runs
    kept = [kept_run(run.request, task, run.dataset, run.directory) for run in runs]
    if all(k is not None for k in kept):  # nothing to compute: no torch, no teacher, no workers
        for run, parts in zip(runs, kept, strict=True):
            assert parts is not None
            yield _kept_summary(run, parts, started)
            started = time.perf_counter()
        return
    teacher = _Teacher(first)
    with _Workers(first) as workers:
        size = first.params.partition_size
        if workers.dask and any(
            r.overwrite or part_files(run.directory) < -(-len(run.dataset.examples) // size)
            for r, run in zip(requests, runs, strict=True)
        ):
            workers.start(task.num_labels)  # parts are missing: start workers while the driver prepares
        for run, parts in zip(runs, kept, strict=True):
            if parts is not None:
                yield _kept_summary(run, parts, started)
            else:
                yield _run(run.request, task, run.dataset, run.directory, workers, teacher, started)
            started = time.perf_counter()


def _kept_summary(run: _Split, parts: dict[int, int], started: float) -> RunSummary:
    """The summary of a run whose every part was already in the cache (:func:`pipeline.explain.resume.kept_run`)."""
    return RunSummary(
        partition=run.directory,
        parts_total=len(parts),
        computed=(),
        skipped=len(parts),
        corrupt=(),
        rows=len(run.dataset.examples),
        truncated=sum(parts.values()),
        seconds=time.perf_counter() - started,
        seed=run.request.params.seed,
    )


def _load(request: ExplainRequest, task: TaskSpec, source: DataSource | None) -> Dataset:
    """The examples to explain: a split of the data, or the transfer split's text file."""
    if request.split == TRANSFER:
        if request.text is None:
            raise EgkdError("the transfer split is read from a text file of unlabelled examples: pass --text FILE")
        return load_text(request.text, task, request.limit)
    if request.text is not None:
        raise EgkdError(f"--text is read into the {TRANSFER} split only, not {request.split} (pass --split {TRANSFER})")
    if source is None:
        raise EgkdError(f"the {request.split} split is read from the data: pass --data (a folder, a file or hub)")
    return source.load(request.split, request.limit)


class _Teacher:
    """The teacher as the splits of one call use it, each thing read once: its weight hash, the hash of its
    tokenizer files, its tokenizer and, where a split needs it, its model (and the head weights drawn for it)."""

    def __init__(self, request: ExplainRequest) -> None:
        self.request = request
        self._weights: str | None = None
        self._files: tuple[str | None] | None = None
        self._tokenizer: Any = None
        self._model: tuple[Any, tuple[str, ...]] | None = None

    def weights(self) -> str:
        from pipeline.models import weights_hash

        if self._weights is None:
            self._weights = weights_hash(self.request.teacher)
        return self._weights

    def files(self) -> str | None:
        from pipeline.models import tokenizer_files_hash

        if self._files is None:
            self._files = (tokenizer_files_hash(self.request.teacher),)  # before the tokenizer is read from them
        return self._files[0]

    def tokenizer(self) -> Any:
        from pipeline.models import load_tokenizer

        if self._tokenizer is None:
            self.files()
            self._tokenizer = load_tokenizer(self.request.teacher)
        return self._tokenizer

    def model(self, num_labels: int) -> tuple[Any, tuple[str, ...]]:
        from pipeline.models import NewHead, load_trained_classifier

        if self._model is None:
            request = self.request
            head = NewHead(request.allow_new_head, request.params.seed, "teacher")
            self._model = load_trained_classifier(request.teacher, num_labels, head, request.allow_pickle)
        return self._model


def _run(
    request: ExplainRequest,
    task: TaskSpec,
    dataset: Dataset,
    directory: Path,
    workers: _Workers,
    teacher: _Teacher,
    started: float,
) -> RunSummary:
    from pipeline.explain.base import explainer_class
    from pipeline.explain.part import PartJob, keep_teacher
    from pipeline.models import base_model_of, read_info, tokenizer_hash

    info = read_info(request.teacher)
    if info is not None and info.task != task.name:
        raise EgkdError(f"teacher {request.teacher} was fine-tuned on {info.task}, not {task.name}")
    tokenizer = teacher.tokenizer()
    if tokenizer.mask_token_id is None:
        raise EgkdError(f"the tokenizer of {request.teacher} has no mask token")
    weights = teacher.weights()
    model = None
    new_head: tuple[str, ...] = ()
    if not head_known_trained(directory, weights, task.name, task.num_labels):
        model, new_head = teacher.model(task.num_labels)
    facts = TeacherFacts(
        weights_hash=weights,
        tokenizer_hash=tokenizer_hash(tokenizer),
        base=base_model_of(request.teacher),
        head_seed=request.params.seed if new_head else None,
    )
    precision = resolve_precision(request.params.precision, workers.device_type())
    extras = tuple(kind.kind for kind in explainer_class(request.method).cached_extras())
    meta = run_metadata(request, task, dataset, facts, precision, extras)
    if request.overwrite and directory.exists():
        shutil.rmtree(directory)
    for stale in temp_files(directory):
        stale.unlink(missing_ok=True)
    replaced = ""
    try:
        kept, corrupt = existing_parts(directory, meta, request.verify)
    except OtherRunParts as err:
        if not request.replace_stale:
            raise
        replaced = err.reason
        shutil.rmtree(directory)
        kept, corrupt = {}, []
    threads = _threads_per_worker(request)
    size = meta.partition_size
    jobs = [
        PartJob(
            index=i,
            path=part_path(request.out, meta.method, meta.split, i),
            examples=dataset.examples[i * size : (i + 1) * size],
            meta=meta,
            teacher=request.teacher,
            weights_hash=meta.teacher_weights_hash,
            method=request.method,
            params=request.params,
            torch_threads=threads,
            allow_pickle=request.allow_pickle,
            teacher_files=teacher.files(),
        )
        for i in range(meta.num_parts)
        if i not in kept
    ]
    computed = []
    if jobs and model is not None and not workers.dask:  # the stream in this process uses the model just loaded
        keep_teacher(request.teacher, weights, meta.teacher_head_seed, model, tokenizer)
    if jobs:
        from tqdm import tqdm

        with tqdm(
            total=len(jobs), unit="part", desc=f"explain {meta.method}/{meta.split}", disable=not request.progress
        ) as bar:
            for result in _execute(jobs, request, workers):
                computed.append(result)
                bar.update(1)
    truncated = sum(kept.values()) + sum(r.truncated for r in computed)
    return RunSummary(
        partition=directory,
        parts_total=meta.num_parts,
        computed=tuple(sorted(computed, key=lambda r: r.index)),
        skipped=len(kept),
        corrupt=tuple(corrupt),
        rows=len(dataset.examples),
        truncated=truncated,
        seconds=time.perf_counter() - started,
        new_head=new_head,
        seed=request.params.seed,
        replaced=replaced,
    )


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _threads_per_worker(request: ExplainRequest) -> int | None:
    if request.scheduler or request.params.workers == 0:
        return None
    return max(1, _cpu_count() // request.params.workers)


# --- execution ------------------------------------------------------------------------------------


class _Workers:
    """The run's dask client, if it uses dask: started early, in a thread, when parts are missing.

    The worker processes then start, import torch and load the teacher (a warm-up task on each) while
    the driver hashes the teacher, reads the tokenizer and checks the cache; a run that computes nothing
    starts no workers. In process (``workers == 0``) there is no client.
    """

    def __init__(self, request: ExplainRequest) -> None:
        self.request = request
        self.dask = request.scheduler is not None or request.params.workers > 0
        self._stack = ExitStack()
        self._thread: threading.Thread | None = None
        self._client = None
        self._error: BaseException | None = None
        self._warm: list = []  # warm-up futures, kept so that they run

    def __enter__(self) -> _Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.join()
        self._warm.clear()
        self._stack.close()

    def start(self, num_labels: int | None = None) -> None:
        if self._thread is None and self._client is None:
            self._thread = threading.Thread(target=self._connect, args=(num_labels,), name="egkd-dask-start")
            self._thread.start()

    def _connect(self, num_labels: int | None) -> None:
        from pipeline.explain.part import warm_teacher

        try:
            client = self._stack.enter_context(_dask_client(self.request))
            if self.request.scheduler is None:
                client.wait_for_workers(len(client.cluster.worker_spec), timeout=120)
            self._client = client
            if num_labels is not None:
                request = self.request
                self._warm = [
                    client.submit(
                        warm_teacher,
                        request.teacher,
                        num_labels,
                        request.allow_new_head,
                        request.params.seed,
                        request.allow_pickle,
                        workers=[address],
                        pure=False,
                    )
                    for address in client.scheduler_info().get("workers", {})
                ]
        except BaseException as err:  # raised in the driver's thread by client()
            self._error = err

    def client(self):
        self.start()
        assert self._thread is not None
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._client

    def device_type(self) -> str:
        """``cuda`` when the parts will be computed on CUDA GPUs (this machine's, or every worker's)."""
        if self.request.scheduler is None:
            return local_device_type()
        found = set(self.client().run(local_device_type).values())
        return "cuda" if found == {"cuda"} else "cpu"


TASKS_PER_WORKER = 4  # tasks of consecutive parts per worker: long streams, yet balanced over workers
MAX_TASK_EXAMPLES = 16384


def _execute(jobs: list[PartJob], request: ExplainRequest, workers: _Workers) -> Iterator[PartResult]:
    from pipeline.explain.part import compute_parts, stream_parts

    if not workers.dask:
        yield from stream_parts(jobs)
        return
    from distributed import as_completed

    client = workers.client()
    count = max(1, len(client.scheduler_info().get("workers", {})))
    futures = [
        client.submit(compute_parts, group, key=f"egkd-parts-{group[0].index:05d}-{os.urandom(4).hex()}", pure=False)
        for group in _groups(jobs, count, request.params.partition_size)
    ]
    for future in as_completed(futures):
        yield from future.result()


def _groups(jobs: list[PartJob], workers: int, partition_size: int) -> list[list[PartJob]]:
    """Consecutive jobs in about ``TASKS_PER_WORKER`` tasks per worker, each of at most ``MAX_TASK_EXAMPLES``."""
    per_task = max(1, min(-(-len(jobs) // (workers * TASKS_PER_WORKER)), MAX_TASK_EXAMPLES // partition_size))
    return [jobs[i : i + per_task] for i in range(0, len(jobs), per_task)]


@contextmanager
def _dask_client(request: ExplainRequest) -> Iterator:
    from distributed import Client

    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Closed explicitly, not as context managers: a client's context may be entered in another thread (_Workers).
    if request.scheduler is not None:
        try:
            client = Client(request.scheduler, timeout="30s")
        except (OSError, TimeoutError) as err:
            raise EgkdError(f"could not connect to the dask scheduler at {request.scheduler}: {err}") from None
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # dask's nanny sets MALLOC_TRIM_THRESHOLD_ in its workers, which also fixes glibc's mmap threshold: every
    # tensor above 128 KiB is then mapped and unmapped afresh (a stage-one worker ran 1.5x slower than the
    # same stream in process, most of it in the kernel). The workers keep glibc's own adaptive thresholds.
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = _local_cluster(request.params.workers)
    try:
        client = Client(cluster)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def _local_cluster(workers: int):
    """A local cluster of ``workers`` processes; with CUDA GPUs, one per GPU (at most ``workers``)."""
    import torch
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    quiet = {"silence_logs": logging.ERROR}
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        devices = visible.split(",") if visible else [str(i) for i in range(torch.cuda.device_count())]
        specs = {
            f"gpu-{device}": {
                "cls": Nanny,
                "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": device}, **quiet},
            }
            for device in devices[:workers]
        }
        return SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}}, **quiet)
    threads = str(max(1, _cpu_count() // workers))
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
        **quiet,
    )

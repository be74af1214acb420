"""Stage one: a teacher's explanations of one dataset split, computed part by part into the cache.

:func:`run_explain` loads the split, cuts it into parts of ``partition_size``
examples in dataset order, and keeps every part already in the cache that is
whole and was made by the same run (same teacher weights, tokenizer, data,
method parameters...). A part made by a different run is refused, naming the
differing field, unless ``overwrite`` clears the partition first. Each missing
or corrupt part becomes one task,
:func:`pipeline.explain.part.compute_part`: encode, explain in length
buckets, put rows back in dataset order, write the part atomically.

Tasks run in this process (``workers == 0``), on a local dask cluster
(``workers > 0``: one process per worker, torch threads split between them; with
CUDA GPUs, one worker per GPU pinned through ``CUDA_VISIBLE_DEVICES``), or on an
existing dask scheduler (``scheduler``: its workers must see the cache folder
and the teacher at the same paths). Each worker process loads the teacher once.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline import __version__
from pipeline.cache.schema import SCHEMA_VERSION, CacheMetadata
from pipeline.cache.store import (
    SchemaVersionError,
    check_compatible,
    part_index,
    part_path,
    partition_dir,
    read_part,
    temp_files,
)
from pipeline.config import ExplainParams
from pipeline.data import load_dataset
from pipeline.errors import EgkdError
from pipeline.explain.base import explainer_class
from pipeline.explain.part import PartJob, PartResult, compute_part
from pipeline.explain.record import method_params_json
from pipeline.methods import Method
from pipeline.tasks import get_task


@dataclass(frozen=True)
class ExplainRequest:
    method: Method
    teacher: str  # a model reference (see pipeline.models)
    data: str  # a GLUE TSV folder, or "hub"
    task: str
    split: str
    out: Path  # the cache root
    limit: int | None
    max_length: int
    params: ExplainParams  # batch_size, partition_size, workers, seed and the method's own parameters
    scheduler: str | None = None  # address of a running dask scheduler
    overwrite: bool = False  # delete this (method, split) partition first
    progress: bool = False
    allow_pickle: bool = False  # let the teacher load from pickle weights (pytorch_model.bin)
    allow_new_head: bool = False  # a teacher without a trained head gets one drawn from params.seed


@dataclass(frozen=True)
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
        return head + lines


def run_explain(request: ExplainRequest) -> RunSummary:
    from pipeline.models import (
        NewHead,
        base_model_of,
        load_tokenizer,
        load_trained_classifier,
        read_info,
        tokenizer_hash,
        weights_hash,
    )

    started = time.perf_counter()
    task = get_task(request.task)
    dataset = load_dataset(request.data, task, request.split, request.limit)
    info = read_info(request.teacher)
    if info is not None and info.task != task.name:
        raise EgkdError(f"teacher {request.teacher} was fine-tuned on {info.task}, not {task.name}")
    tokenizer = load_tokenizer(request.teacher)
    if tokenizer.mask_token_id is None:
        raise EgkdError(f"the tokenizer of {request.teacher} has no mask token")
    head = NewHead(request.allow_new_head, request.params.seed, "teacher")
    _, new_head = load_trained_classifier(request.teacher, task.num_labels, head, request.allow_pickle)
    size = request.params.partition_size
    examples = dataset.examples
    meta = CacheMetadata(
        schema_version=SCHEMA_VERSION,
        egkd_version=__version__,
        task=task.name,
        split=request.split,
        method=request.method.value,
        method_params=method_params_json(request.method, request.params),
        extras=tuple(kind.kind for kind in explainer_class(request.method).extras),
        teacher=request.teacher,
        teacher_base=base_model_of(request.teacher),
        teacher_weights_hash=weights_hash(request.teacher),
        tokenizer_hash=tokenizer_hash(tokenizer),
        dataset_fingerprint=dataset.fingerprint,
        dataset_source=dataset.source,
        limit=request.limit,
        max_length=request.max_length,
        num_labels=task.num_labels,
        label_names=task.labels,
        partition_size=size,
        num_parts=-(-len(examples) // size),
        num_examples=len(examples),
        teacher_head_seed=request.params.seed if new_head else None,
    )
    directory = partition_dir(request.out, request.method.value, request.split)
    if request.overwrite and directory.exists():
        shutil.rmtree(directory)
    for stale in temp_files(directory):
        stale.unlink(missing_ok=True)
    kept, corrupt = _existing_parts(directory, meta)
    threads = _threads_per_worker(request)
    jobs = [
        PartJob(
            i,
            part_path(request.out, meta.method, meta.split, i),
            examples[i * size : (i + 1) * size],
            meta,
            request.teacher,
            meta.teacher_weights_hash,
            request.method,
            request.params,
            threads,
            request.allow_pickle,
        )
        for i in range(meta.num_parts)
        if i not in kept
    ]
    computed = []
    if jobs:
        from tqdm import tqdm

        with tqdm(
            total=len(jobs), unit="part", desc=f"explain {meta.method}/{meta.split}", disable=not request.progress
        ) as bar:
            for result in _execute(jobs, request):
                computed.append(result)
                bar.update(1)
    truncated = sum(kept.values()) + sum(r.truncated for r in computed)
    return RunSummary(
        directory,
        meta.num_parts,
        tuple(sorted(computed, key=lambda r: r.index)),
        len(kept),
        tuple(corrupt),
        len(examples),
        truncated,
        time.perf_counter() - started,
        new_head,
        request.params.seed,
    )


def _existing_parts(directory: Path, meta: CacheMetadata) -> tuple[dict[int, int], list[str]]:
    """Valid parts of this run (index -> truncated count) and corrupt part files (to recompute).

    Refuses, before anything is computed, when a valid part was made by a different run.
    """
    kept: dict[int, int] = {}
    corrupt: list[str] = []
    if not directory.is_dir():
        return kept, corrupt
    hint = f"pass --overwrite to delete {directory} and recompute it"
    for path in sorted(p for p in directory.iterdir() if part_index(p) is not None):
        try:
            part = read_part(path)
        except SchemaVersionError as err:  # whole, but another egkd's: never overwritten silently
            raise EgkdError(f"{err}; {hint}") from None
        except EgkdError:
            corrupt.append(path.name)
            continue
        check_compatible(part.meta, meta, context=str(path), hint=hint)
        kept[part.info.index] = part.info.truncated
    beyond = [name for name in corrupt if (part_index(Path(name)) or 0) >= meta.num_parts]
    if beyond:
        raise EgkdError(f"{directory / beyond[0]}: corrupt part beyond this run's {meta.num_parts} parts; {hint}")
    return kept, corrupt


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


def _execute(jobs: list[PartJob], request: ExplainRequest) -> Iterator[PartResult]:
    if request.scheduler is None and request.params.workers == 0:
        for job in jobs:
            yield compute_part(job)
        return
    from distributed import as_completed

    with _dask_client(request) as client:
        futures = [
            client.submit(compute_part, job, key=f"egkd-part-{job.index:05d}-{os.urandom(4).hex()}", pure=False)
            for job in jobs
        ]
        for future in as_completed(futures):
            yield future.result()


@contextmanager
def _dask_client(request: ExplainRequest) -> Iterator:
    from distributed import Client

    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if request.scheduler is not None:
        try:
            client = Client(request.scheduler, timeout="30s")
        except (OSError, TimeoutError) as err:
            raise EgkdError(f"could not connect to the dask scheduler at {request.scheduler}: {err}") from None
        with client:
            yield client
        return
    with _local_cluster(request.params.workers) as cluster, Client(cluster) as client:
        yield client


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

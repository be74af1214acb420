"""Stage-one scaling from 1 to 2 dask workers (one torch thread each) through the real orchestration.

For each worker count: start a local dask cluster (one process per worker, one
thread, ``OMP_NUM_THREADS=1``), load the teacher in every worker process the way
``compute_part`` does (the per-process teacher cache of ``pipeline.explain.part``),
then time :func:`pipeline.explain.run.run_explain` against that running
scheduler. The timed run therefore excludes cluster start-up and model loading
(both reported on their own) but includes everything else a real run does:
loading and tokenising the data, hashing the teacher, scheduling the parts,
explaining them and writing every Parquet part.
"""

from __future__ import annotations

import logging
import resource
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

from pipeline.config import ExplainParams
from pipeline.methods import Method


def _load_teacher(teacher: str, weights_hash: str, num_labels: int, head_seed: int | None) -> int:
    """Runs in a worker: fill its teacher cache exactly as ``compute_part`` would."""
    import os

    from pipeline.explain import part as explain_part

    meta = SimpleNamespace(num_labels=num_labels, teacher_head_seed=head_seed)
    job = SimpleNamespace(teacher=teacher, weights_hash=weights_hash, meta=meta, allow_pickle=False)
    explain_part._teacher(job)
    return os.getpid()


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def scale(
    teacher: str,
    data: str,
    task: str,
    split: str,
    limit: int,
    max_length: int,
    method: Method,
    params: ExplainParams,
    workers: int,
) -> dict:
    from distributed import Client, LocalCluster

    from pipeline.explain.run import ExplainRequest, run_explain
    from pipeline.models import NewHead, load_trained_classifier, weights_hash

    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    started = time.perf_counter()
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):
        client.wait_for_workers(workers)
        cluster_s = time.perf_counter() - started
        started = time.perf_counter()
        # timing only: a teacher without a trained head (builtin:minilm-l6) is as fast with a seeded new one
        _, new_head = load_trained_classifier(teacher, 2, NewHead(True, params.seed))
        head_seed = params.seed if new_head else None
        client.run(_load_teacher, teacher, weights_hash(teacher), 2, head_seed)
        load_s = time.perf_counter() - started
        threads = sorted(client.run(_torch_threads).values())
        with tempfile.TemporaryDirectory(prefix="egkd-bench-") as out:
            request = ExplainRequest(
                method=method,
                teacher=teacher,
                data=data,
                task=task,
                split=split,
                out=Path(out),
                limit=limit,
                max_length=max_length,
                params=params,
                scheduler=cluster.scheduler_address,
                overwrite=True,
                allow_new_head=True,
            )
            summary = run_explain(request)
        rss = sorted(client.run(_max_rss_mib).values())
    rows = summary.rows_computed
    return {
        "workers": workers,
        "threads_per_worker": threads,
        "examples": rows,
        "parts": len(summary.computed),
        "run_s": round(summary.seconds, 3),
        "ex_per_s": rows / summary.seconds,
        "cluster_start_s": round(cluster_s, 3),
        "teacher_load_s": round(load_s, 3),
        "ex_per_s_with_startup": rows / (summary.seconds + cluster_s + load_s),
        "part_compute_s_sum": round(sum(p.seconds for p in summary.computed), 3),
        "worker_peak_rss_mib": [round(x, 1) for x in rss],
    }

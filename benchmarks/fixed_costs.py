"""The pipeline's fixed costs: what a command pays besides its work, each timed as DVC runs it.

* ``egkd --help``, ``egkd cache info --help`` and ``egkd cache info CACHE``: fresh processes (target: 0.5 s each);
* a rerun of stage one with nothing to compute (``egkd explain`` again when every part is in the cache): a fresh
  process, on a tiny random teacher and SST-2's training split (target: 1.5 s); and the train and dev splits as
  two commands against one command with two ``--split`` (as dvc.yaml's explain stage can run them);
* reading the training cache of SST-2's 67,349 rows into the student's inputs, in process:
  :func:`pipeline.distill.inputs.load_inputs` (every part read, checksummed and digested) and
  :func:`pipeline.cache.project.to_student_examples` (target: 1 s for both); and, for scale, padding every batch of
  one epoch (:func:`pipeline.cache.project.collate_students`, batches of 32);
* with ``--process-only``, what every computing stage pays before its work, as fresh processes: starting Python,
  importing torch and transformers' model stack, and creating the device's context (``--device cuda``: the CUDA
  context). The first run is reported apart, since a freshly started machine reads the libraries from a cold disk.

The cache read is synthetic, written with the real writer (:func:`pipeline.cache.format.explained_table`,
:func:`pipeline.cache.store.write_table`): the gradient family's rows (the map, its magnitude, the 3 x 4 views every
family caches) in parts of 256 rows (``explain.partition_size``), sentences of SST-2's training lengths (a seeded
draw of 1-60 words, 9.6 on average, plus [CLS] and [SEP]), random ids, maps and logits: reading costs the same
whatever the values. Every figure is the fastest of ``--repeats`` runs; on a shared machine check ``uptime`` first.

    python -m benchmarks.fixed_costs                   # about 2 minutes on 2 cores (the explained split: 80 s)
    python -m benchmarks.fixed_costs --rows 4000 --explain-rows 4000 --repeats 3
    python -m benchmarks.fixed_costs --process-only --device cuda --repeats 4   # a few seconds a run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.cache.extras import VIEW_KINDS, Extras, Magnitude
from pipeline.cache.format import explained_table
from pipeline.cache.schema import SCHEMA_VERSION, CacheMetadata
from pipeline.cache.store import part_path, sync_folder, write_table
from pipeline.data import Example

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "glue"
SST2_TRAIN, SST2_DEV = 67_349, 872
PART, VIEWS, CLASSES = 256, 4, 2
TARGETS = {"help": 0.5, "cache info": 0.5, "explain rerun": 1.5, "load": 1.0}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"the a film movie is was good bad not and but it".split()]


def synthetic_cache(out: Path, rows: int, seed: int = 0) -> Path:
    """A cache of ``rows`` training rows of the gradient family, written part by part as stage one writes them."""
    from pipeline.encoding import EncodedExample

    rng = np.random.default_rng(seed)
    kinds = (Magnitude.kind, *(kind.kind for kind in VIEW_KINDS))
    meta = CacheMetadata(
        schema_version=SCHEMA_VERSION,
        egkd_version="benchmark",
        task="sst2",
        split="train",
        method="gradient",
        method_params='{"seed": 0}',
        precision="fp32",
        extras=kinds,
        teacher="benchmark-teacher",
        teacher_base="benchmark-base",
        teacher_weights_hash="0" * 64,
        tokenizer_hash="0" * 64,
        dataset_fingerprint="0" * 64,
        dataset_source="synthetic",
        limit=None,
        max_length=128,
        num_labels=CLASSES,
        label_names=("negative", "positive"),
        partition_size=PART,
        num_parts=-(-rows // PART),
        num_examples=rows,
    )
    for index in range(meta.num_parts):
        count = min(PART, rows - index * PART)
        words = np.clip(rng.gamma(1.6, 6.0, count).astype(np.int64), 1, 60)
        lengths = words + 2
        width = int(lengths.max())
        examples, encoded = [], []
        for b, n in enumerate(words.tolist()):
            special = np.zeros(n + 2, dtype=bool)
            special[[0, -1]] = True
            spans = np.zeros((n + 2, 2), dtype=np.int32)
            spans[1:-1, 0] = np.arange(n) * 5
            spans[1:-1, 1] = spans[1:-1, 0] + 4
            example = Example(f"train-{index * PART + b}", "train", " ".join(["word"] * n), None, int(b % 2))
            examples.append(example)
            encoded.append(
                EncodedExample(
                    example_id=example.example_id,
                    input_ids=rng.integers(5, 30_000, n + 2).astype(np.int32),
                    token_type_ids=np.zeros(n + 2, dtype=np.int8),
                    special_mask=special,
                    segments=np.where(special, -1, 0).astype(np.int8),
                    offsets=spans,
                    label=example.label,
                    truncated=False,
                )
            )
        real = np.arange(width)[None, :] < lengths[:, None]
        attribution = rng.normal(size=(count, width)).astype(np.float32) * real
        views = tuple(
            kind(
                masks=(rng.random((count, VIEWS, width)) < 0.2) & real[:, None, :],
                logits=rng.normal(size=(count, VIEWS, CLASSES)).astype(np.float32),
            )
            for kind in VIEW_KINDS
        )
        extras = Extras((Magnitude(scores=np.abs(attribution)), *views))
        logits = rng.normal(size=(count, CLASSES)).astype(np.float32)
        table = explained_table(examples, encoded, attribution, logits, extras, kinds)
        write_table(part_path(out, "gradient", "train", index), meta, index, table, 0, fsync_folder=False)
    sync_folder(part_path(out, "gradient", "train", 0).parent)
    return out


def tiny_teacher(path: Path) -> Path:
    """A tiny seeded random BERT classifier (2 layers, hidden 32) with a WordPiece tokenizer, as the tests make."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=128,
        num_labels=CLASSES,
    )
    BertForSequenceClassification(config).eval().save_pretrained(path, safe_serialization=True)
    BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(path)
    return path


def egkd() -> list[str]:
    """The ``egkd`` console script beside this Python, else ``python -m stages.cli``."""
    script = Path(sys.executable).parent / "egkd"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "stages.cli"]


def fresh(args: list[str], cwd: Path, repeats: int) -> float:
    """The fastest wall time of ``egkd args`` as a fresh process (it must succeed)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run([*egkd(), *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
        best = min(best, time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"egkd {' '.join(args[:2])} failed: {(done.stderr or done.stdout).strip()[-400:]}")
    return best


# A computing process's start: the seconds of its imports and of its first operation on the device, printed as JSON.
PROCESS_START = """
import json, sys, time
start = time.perf_counter()
import torch
from transformers import BertForSequenceClassification  # the model stack itself (the Auto classes are lazy)
imported = time.perf_counter()
torch.zeros(1, device=sys.argv[1]).add(1).sum().item()
print(json.dumps([imported - start, time.perf_counter() - imported]))
"""


def process_start(device: str, repeats: int) -> dict[str, float]:
    """A computing stage's start as ``repeats`` fresh processes: the first run's seconds, then the fastest other run's
    (wall time, of which the imports, of which the device context)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = []
    for _ in range(max(repeats, 2)):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", PROCESS_START, device], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"a process on {device} failed: {(done.stderr or done.stdout).strip()[-400:]}")
        imports, context = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append((wall, imports, context))
    first, best = runs[0], min(runs[1:])
    results = {}
    for name, run in (("first run", first), ("fastest of the others", best)):
        results[f"process start on {device}, {name}: wall"] = run[0]
        results[f"process start on {device}, {name}: imports"] = run[1]
        results[f"process start on {device}, {name}: device context"] = run[2]
    return results


def fastest(run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def load_times(cache: Path, repeats: int) -> dict[str, float]:
    """In process, as ``egkd distill`` reads them: the cache into the student's inputs, and one epoch's batches."""
    from pipeline.cache.project import collate_students, to_student_examples
    from pipeline.config import DistillParams
    from pipeline.distill.inputs import loaded_inputs
    from pipeline.methods import Method

    params = DistillParams(student="base")  # the student's source is not read: only the rows are timed
    best = {"load_inputs": float("inf"), "to_student_examples": float("inf"), "collate one epoch": float("inf")}
    for _ in range(repeats):
        start = time.perf_counter()
        with loaded_inputs(cache, params, None, Method.GRADIENT) as inputs:
            loaded = time.perf_counter()
            examples = to_student_examples(inputs.train_rows, None, inputs.meta.max_length)
            converted = time.perf_counter()
            for i in range(0, len(examples), 32):
                collate_students(examples[i : i + 32], 0)
            done = time.perf_counter()
        for name, seconds in zip(best, (loaded - start, converted - loaded, done - converted), strict=True):
            best[name] = min(best[name], seconds)
        del inputs, examples
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=SST2_TRAIN, help="rows of the synthetic training cache read")
    parser.add_argument("--explain-rows", type=int, default=SST2_TRAIN, help="SST-2 training rows explained")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GLUE folder holding SST-2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--process-only", action="store_true", help="only a computing process's start")
    parser.add_argument("--device", default="cpu", help="the device of --process-only (cpu, cuda)")
    args = parser.parse_args()
    if args.process_only:
        results = process_start(args.device, args.repeats)
    else:
        results = run(args.rows, args.explain_rows, args.data.resolve(), args.repeats)
    print("| what | seconds | target |")
    print("|---|---:|---:|")
    for name, seconds in results.items():
        target = next((f"{t:.1f} s" for key, t in TARGETS.items() if name.startswith(key)), "")
        print(f"| {name} | {seconds:.3f} | {target} |")
    if args.out is not None:
        args.out.write_text(json.dumps({"load_avg": os.getloadavg(), "seconds": results}, indent=2) + "\n")


def run(rows: int, explain_rows: int, data: Path, repeats: int, dev_rows: int = SST2_DEV) -> dict[str, float]:
    """Every figure, in seconds, in a scratch folder that is removed afterwards."""
    scratch = Path(tempfile.mkdtemp(prefix="egkd-fixed-costs-"))
    try:
        cache = synthetic_cache(scratch / "cache", rows)
        results = {
            "help: egkd --help": fresh(["--help"], scratch, repeats),
            "cache info: egkd cache info --help": fresh(["cache", "info", "--help"], scratch, repeats),
            f"cache info: egkd cache info (a cache of {rows:,} rows)": fresh(
                ["cache", "info", str(cache)], scratch, repeats
            ),
        }
        for name, seconds in load_times(cache, repeats).items():
            results[f"load: {name} ({rows:,} rows)" if name != "collate one epoch" else f"{name} (batches of 32)"] = (
                seconds
            )
        teacher = tiny_teacher(scratch / "teacher")
        explain = ["explain", "--teacher", str(teacher), "--data", str(data), "--task", "sst2"]
        explain += ["--method", "gradient", "--workers", "0", "--out", str(scratch / "explained")]
        train, dev = ["--split", "train", "--limit", str(explain_rows)], ["--split", "dev", "--limit", str(dev_rows)]
        fresh([*explain, *train, *dev], scratch, 1)  # computes both splits (not timed)
        results[f"explain rerun: train ({explain_rows:,} rows), nothing to compute"] = fresh(
            [*explain, *train], scratch, repeats
        )
        two = fresh([*explain, *train], scratch, repeats) + fresh([*explain, *dev], scratch, repeats)
        results["train and dev reruns as two commands (sum)"] = two
        results["train and dev reruns as one command (two --split)"] = fresh([*explain, *train, *dev], scratch, repeats)
        return results
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

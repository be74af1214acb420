"""Host-side cost of egkd's commands: everything but the model's arithmetic, measured on a CPU.

    python -m benchmarks.host [--rows N] [--out DIR] [--machine NAME] [--skip-cli]

The teacher is a one-layer BERT of hidden size 32 with the real MiniLM-L6 tokenizer (``builtin:minilm-l6``),
so tokenisation, row lengths and vocabulary are realistic and the model's compute is small: what a command
spends beyond it is the host work a GPU would wait on. Each figure is the fastest of ``--repeats`` runs.

* **Stage one, in process**: the phases of :func:`pipeline.explain.part.stream_parts` on the first N SST-2
  training sentences, one at a time (encode, plan and collate, the model's explanation, each batch's Arrow
  table, the parts' tables in dataset order, writing parts: digest, Parquet, fsync), then the stream itself
  (which overlaps them).
* **Stage two, in process**: reading the cache back (:func:`~pipeline.cache.store.read_cache`: page checksums,
  digest, decoding), student examples, the epoch's batches (batch 512, as the GPU profile), saving the
  student and a checkpoint, and the dev metrics of a student.
* **Commands**: ``egkd explain`` (``--workers 0``, a rerun with nothing to compute, ``--workers 1``),
  ``egkd distill --method none`` (one epoch of batch 512) and ``egkd evaluate`` against every cache, each a
  fresh process timed from outside; plus the import of the command line alone.

Every figure is wall seconds and the CPU seconds of the same run (this process's, all its threads; a
command's own process for a command): on a shared machine the wall time also holds the waits for a core.

Writes ``<out>/host-<machine>.json`` and ``.md`` when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = str(REPO.parent / "shared" / "data" / "glue")
TOKENIZER = "builtin:minilm-l6"
STUDENT_BATCH = 512
DEV_ROWS = 872  # all of SST-2 dev: what `egkd evaluate` scores by default


def make_teacher(path: Path, tokenizer_ref: str = TOKENIZER) -> Path:
    """A seeded one-layer, hidden-32 BERT classifier with ``tokenizer_ref``'s tokenizer, saved to ``path``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from pipeline.models import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_ref)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=512,
        num_labels=2,
    )
    path.mkdir(parents=True, exist_ok=True)
    BertForSequenceClassification(config).eval().save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@dataclass(frozen=True)
class Timing:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process (all its threads), or of the child process for a command


def best(fn: Callable[[], object], repeats: int) -> tuple[Timing, object]:
    """The fastest of ``repeats`` runs of ``fn`` (wall time and the CPU time of that run) and the last result.

    The CPU time is what the work costs whatever else the machine runs; on a shared machine the wall
    time also holds the waits for a core.
    """
    times, result = [], None
    for _ in range(repeats):
        start, cpu = time.perf_counter(), time.process_time()
        result = fn()
        times.append(Timing(time.perf_counter() - start, time.process_time() - cpu))
    return min(times, key=lambda t: t.wall), result


def stage_one(teacher: Path, data: str, rows: int, scratch: Path, repeats: int) -> dict[str, Timing]:
    """Each phase of stage one (gradient x input) on the first ``rows`` training sentences."""
    import numpy as np
    import pyarrow as pa
    import torch

    from pipeline.cache.extras import to_host
    from pipeline.cache.format import explained_table
    from pipeline.cache.store import partition_dir, read_part_header, write_table
    from pipeline.config import ExplainParams
    from pipeline.data import load_dataset
    from pipeline.encoding import collate, encode
    from pipeline.explain.base import make_explainer
    from pipeline.explain.part import BATCH_FORWARDS, load_teacher, plan_batches
    from pipeline.explain.run import ExplainRequest, run_explain
    from pipeline.methods import Method
    from pipeline.models import weights_hash
    from pipeline.tasks import get_task

    torch.set_num_threads(1)
    task = get_task("sst2")
    params = ExplainParams()
    out: dict[str, Timing] = {}
    out["load data"], dataset = best(lambda: load_dataset(data, task, "train", rows), repeats)
    examples = dataset.examples  # type: ignore[union-attr]
    loaded = load_teacher(str(teacher), weights_hash(str(teacher)), task.num_labels, None)
    tokenizer, model = loaded.tokenizer, loaded.model
    explainer = make_explainer(Method.GRADIENT, model, params, tokenizer.mask_token_id)
    tokens = params.tokens_per_forward.on("cpu")
    pad = tokenizer.pad_token_id or 0
    out["encode"], encoded = best(lambda: encode(tokenizer, examples, 128), repeats)
    items = list(encoded)  # type: ignore[call-overload]

    def batches():
        plan = plan_batches(items, explainer, BATCH_FORWARDS * tokens, params.batch_size)
        return [(indices, collate([items[i] for i in indices], pad)) for indices in plan]

    out["plan + collate"], planned = best(batches, repeats)
    out["model: explain"], explained = best(
        lambda: [(indices, explainer.explain(batch)) for indices, batch in planned], max(1, repeats - 1)
    )
    extras = tuple(kind.kind for kind in explainer.cached_extras())

    def batch_tables() -> list[tuple[list[int], pa.Table]]:
        return [
            (
                indices,
                explained_table(
                    [examples[i] for i in indices],
                    [items[i] for i in indices],
                    explanation.attribution.detach().float().numpy(),
                    explanation.logits.detach().float().numpy(),
                    to_host(explanation.extras),
                    extras,
                ),
            )
            for indices, explanation in explained
        ]

    out["batch tables (explained_table)"], tables = best(batch_tables, repeats)
    size = params.partition_size

    def part_tables() -> list[pa.Table]:
        """Every part's rows in dataset order: the stream writer's concatenation and take, over the whole split."""
        places = np.concatenate([indices for indices, _ in tables])  # type: ignore[union-attr]
        whole = pa.concat_tables([table for _, table in tables]).take(np.argsort(places, kind="stable"))  # type: ignore[union-attr]
        return [whole.slice(i, size).combine_chunks() for i in range(0, whole.num_rows, size)]

    out["part tables in dataset order"], parts = best(part_tables, repeats)

    # The whole stream (load, encode ahead, explain, tables, write), as `egkd explain --workers 0` runs it after
    # start-up: the library's run_explain, in process (its loading of the rows is timed above as "load data").
    request = ExplainRequest(
        method=Method.GRADIENT,
        teacher=str(teacher),
        data=data,
        task="sst2",
        split="train",
        out=scratch,
        limit=rows,
        max_length=128,
        params=params,
    )

    def stream() -> None:
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
        run_explain(request)

    out["stream (load, all phases, overlapped)"], _ = best(stream, repeats)
    written = sorted(partition_dir(scratch, "gradient", "train").glob("part-*.parquet"))
    meta = read_part_header(written[0])[0]

    def write_all() -> None:
        for index, part in enumerate(parts):  # type: ignore[arg-type]
            write_table(scratch / "rewrite" / f"part-{index:05d}.parquet", meta, index, part, 0)

    out["write parts (digest, Parquet, fsync)"], _ = best(write_all, repeats)
    return out


def stage_two(cache: Path, scratch: Path, repeats: int) -> dict[str, Timing]:
    """Each host phase of ``egkd distill`` and ``egkd evaluate`` on the gradient cache's partitions."""
    import torch

    from pipeline.cache.project import collate_students, to_student_examples
    from pipeline.cache.store import read_cache
    from pipeline.checkpoint import save_checkpoint
    from pipeline.config import DistillParams, EvaluateParams
    from pipeline.distill.job import build_student
    from pipeline.evaluate.run import evaluate_examples
    from pipeline.models import ModelInfo, save_model
    from pipeline.tasks import get_task
    from pipeline.training import epoch_order, optimizer_for

    torch.set_num_threads(1)
    out: dict[str, Timing] = {}
    out["read train cache"], (meta, rows) = best(lambda: read_cache(cache, "gradient", "train"), repeats)  # type: ignore[misc]
    out["student examples"], examples = best(lambda: to_student_examples(rows), repeats)
    params = DistillParams(student="base", layers=1)
    student, tokenizer, ref, layers = build_student(meta, params)
    pad = tokenizer.pad_token_id or 0
    order = epoch_order(0, 0, len(examples))  # type: ignore[arg-type]

    def epoch() -> None:
        for start in range(0, len(order), STUDENT_BATCH):
            collate_students([examples[i] for i in order[start : start + STUDENT_BATCH]], pad)  # type: ignore[index]

    out[f"collate one epoch (batch {STUDENT_BATCH})"], _ = best(epoch, repeats)
    optimizer, scheduler = optimizer_for(student, params.train, 10)
    target = scratch / "student"
    out["save student"], _ = best(
        lambda: save_model(student, tokenizer, target, ModelInfo("student", "sst2", ref, layers), None), repeats
    )
    out["save checkpoint"], _ = best(lambda: save_checkpoint(target, 1, "{}", student, optimizer, scheduler), repeats)
    out["read dev cache"], (_, dev_rows) = best(lambda: read_cache(cache, "gradient", "dev"), repeats)  # type: ignore[misc]
    dev = to_student_examples(dev_rows)
    out["dev metrics (tiny student)"], _ = best(
        lambda: evaluate_examples(student, dev, get_task("sst2"), EvaluateParams(), pad), repeats
    )
    return out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _child(command: list[str], cwd: Path, env: dict[str, str]) -> Timing:
    """Wall seconds of a fresh process and the CPU seconds it used (itself and the processes it waited for)."""
    start, cpu = time.perf_counter(), _children_cpu()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    timing = Timing(time.perf_counter() - start, _children_cpu() - cpu)
    if done.returncode != 0:
        raise RuntimeError(f"{command[2:4]} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")
    return timing


def _egkd(args: list[str], cwd: Path, env: dict[str, str]) -> Timing:
    return _child([sys.executable, "-m", "stages.cli", *args], cwd, env)


def commands(teacher: Path, data: str, rows: int, dev_rows: int, scratch: Path, repeats: int) -> dict[str, Timing]:
    """Each command as a fresh process (the fastest of ``repeats`` by wall time)."""
    import shutil

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    scratch.mkdir(parents=True, exist_ok=True)
    cache = scratch / "cache"
    data = str(Path(data).resolve())

    def explain(split: str, limit: int, workers: int, fresh: bool, method: str = "gradient") -> Callable[[], Timing]:
        def run() -> Timing:
            if fresh:
                shutil.rmtree(cache / f"method={method}" / f"split={split}", ignore_errors=True)
            return _egkd(
                [
                    "explain",
                    "--teacher",
                    str(teacher),
                    "--data",
                    data,
                    "--task",
                    "sst2",
                    "--split",
                    split,
                    "--limit",
                    str(limit),
                    "--method",
                    method,
                    "--workers",
                    str(workers),
                    "--out",
                    str(cache),
                ],
                scratch,
                env,
            )

        return run

    def fastest(run: Callable[[], Timing]) -> Timing:
        return min((run() for _ in range(repeats)), key=lambda t: t.wall)

    out: dict[str, Timing] = {}
    out["import the command line"] = _child([sys.executable, "-c", "import stages.cli"], scratch, env)
    out[f"explain train x{rows}, --workers 1"] = fastest(explain("train", rows, 1, True))
    out[f"explain train x{rows}, --workers 0"] = fastest(explain("train", rows, 0, True))
    out["explain rerun, nothing to compute"] = fastest(explain("train", rows, 0, False))
    out[f"explain dev x{dev_rows}, --workers 0"] = fastest(explain("dev", dev_rows, 0, True))
    student = scratch / "student"
    distill = [
        "distill",
        "--cache",
        str(cache),
        "--out",
        str(student),
        "--method",
        "none",
        "--layers",
        "1",
        "--epochs",
        "1",
        "--batch-size",
        str(STUDENT_BATCH),
    ]
    out[f"distill x{rows} (1 epoch, batch {STUDENT_BATCH})"] = fastest(lambda: _egkd(distill, scratch, env))
    evaluate = [
        "evaluate",
        "--model",
        str(student),
        "--data",
        data,
        "--task",
        "sst2",
        "--split",
        "dev",
        "--cache",
        str(cache),
        "--out",
        str(scratch / "eval.json"),
    ]
    out[f"evaluate dev x{dev_rows} against the cache"] = fastest(lambda: _egkd(evaluate, scratch, env))
    return out


def markdown(results: dict) -> str:
    rows, machine = results["rows"], results["machine"]
    lines = [
        "# Host-side cost (benchmarks/host.py)",
        "",
        f"Machine: {machine['hostname']}, {machine['cpus']} CPUs, torch {machine['torch']}, 1 torch thread; "
        f"load average {machine['load_avg_1_5_15']} at start, {results['load_avg_end']} at the end. "
        f"Teacher: 1 layer, hidden 32, the MiniLM-L6 tokenizer; {rows} SST-2 training sentences, "
        f"{results['dev_rows']} dev sentences. Fastest of {results['repeats']} runs by wall time, and the "
        "CPU seconds of that run.",
        "",
    ]
    for title, key, count in (
        ("Stage one, in process", "stage_one", rows),
        ("Stage two, in process", "stage_two", rows),
    ):
        if key not in results:
            continue
        lines += [f"## {title}", "", "| phase | wall s | CPU s | rows/s (wall) |", "|---|---:|---:|---:|"]
        for phase, timing in results[key].items():
            n = results["dev_rows"] if "dev" in phase else count
            lines.append(f"| {phase} | {timing['wall']:.3f} | {timing['cpu']:.3f} | {n / timing['wall']:,.0f} |")
        lines.append("")
    if "commands" in results:
        lines += ["## Commands (fresh processes)", "", "| command | wall s | CPU s |", "|---|---:|---:|"]
        lines += [f"| {name} | {t['wall']:.2f} | {t['cpu']:.2f} |" for name, t in results["commands"].items()]
        lines.append("")
    return "\n".join(lines)


def _plain(timings: dict[str, Timing]) -> dict[str, dict[str, float]]:
    return {name: asdict(timing) for name, timing in timings.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=67349, help="SST-2 training sentences (default: all)")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-cli", action="store_true", help="in-process phases only")
    parser.add_argument("--out", type=Path, default=None, help="write host-<machine>.json and .md here")
    parser.add_argument("--machine", default="cpu-2core")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from benchmarks.measure import machine_info

    results: dict = {"rows": args.rows, "dev_rows": DEV_ROWS, "repeats": args.repeats, "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="egkd-host-") as folder:
        scratch = Path(folder)
        teacher = make_teacher(scratch / "teacher")
        results["stage_one"] = _plain(stage_one(teacher, args.data, args.rows, scratch / "inproc", args.repeats))
        print(json.dumps(results["stage_one"], indent=1), flush=True)
        if not args.skip_cli:
            cli = scratch / "cli"
            results["commands"] = _plain(commands(teacher, args.data, args.rows, DEV_ROWS, cli, args.repeats))
            print(json.dumps(results["commands"], indent=1), flush=True)
            results["stage_two"] = _plain(stage_two(cli / "cache", scratch / "two", args.repeats))
            print(json.dumps(results["stage_two"], indent=1), flush=True)
    results["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    text = markdown(results)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        name = f"host-{args.machine}"
        (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (args.out / f"{name}.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()

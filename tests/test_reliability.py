"""Reliability: interrupted runs resume to the same result, corrupt or mismatched caches and malformed
data or options are refused with one clear line (exit code 2) naming the file, part, field or key.

The two kill -9 tests run the real ``egkd`` executable in its own process group and kill the whole group,
as an out-of-memory killer or a lost machine would; everything else runs in-process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import make_tiny_model_dir, small_distill
from safetensors.torch import load_file
from test_cache import flip_byte_in_column
from test_cli import _one_line_error
from test_explain_run import assert_close
from typer.testing import CliRunner

from pipeline import training
from pipeline.cache.format import META_KEY
from pipeline.cache.schema import SCHEMA_VERSION
from pipeline.cache.store import part_path, read_cache, read_part, write_part
from pipeline.cache.verify import verify_cache
from pipeline.checkpoint import last_dir
from pipeline.config import EvaluateParams, ExplainParams, Params, TrainParams, apply_options, load_params
from pipeline.distill.job import DistillRequest, distill
from pipeline.errors import EgkdError
from pipeline.explain.run import ExplainRequest, run_explain
from pipeline.methods import Method
from pipeline.models import load_tokenizer
from pipeline.profiles import render
from stages.cli import app

EGKD = Path(sys.executable).parent / "egkd"
runner = CliRunner()


# --- shared fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    """A tiny seeded teacher whose tokenizer knows real words (so sentences are not all [UNK])."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("rel-teacher") / "teacher")


def explain_request(
    teacher: Path,
    data: Path,
    out: Path,
    split: str,
    limit: int | None,
    max_length: int = 16,
    method: Method = Method.GRADIENT,
    params: ExplainParams | None = None,
    **changes,
) -> ExplainRequest:
    params = params or ExplainParams()
    values = {"method": method.value, "split": split, "batch_size": 8, "partition_size": 8, "workers": 0, **changes}
    params = dataclasses.replace(params, **values)
    return ExplainRequest(
        method=method,
        teacher=str(teacher),
        data=str(data),
        task="sst2",
        split=split,
        out=out,
        limit=limit,
        max_length=max_length,
        params=params,
    )


@pytest.fixture(scope="module")
def cache(tmp_path_factory, teacher, glue_dir) -> Path:
    """A gradient cache of real SST-2 rows: train 24 rows (3 parts), dev 12 rows (2 parts), max_length 16."""
    out = tmp_path_factory.mktemp("rel-cache") / "cache"
    run_explain(explain_request(teacher, glue_dir, out, "train", 24))
    run_explain(explain_request(teacher, glue_dir, out, "dev", 12))
    return out


@pytest.fixture
def cache_copy(cache, tmp_path) -> Path:
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    return copy


def distill_params_file(folder: Path, **distill) -> Path:
    """A whole params.yaml of the tiny models' stage-two settings (conftest.small_distill), with ``distill``
    options (``lr`` and the other train keys too)."""
    values = {"epochs": 1, "batch_size": 8, "checkpoint_every": 100, **distill}
    path = folder / "params.yaml"
    path.write_text(render(Params(distill=apply_options(small_distill(), values))), encoding="utf-8")
    return path


def cli_distill(cache: Path, out: Path, *extra: str):
    return runner.invoke(
        app,
        [
            "distill",
            "--cache",
            str(cache),
            "--out",
            str(out),
            "--method",
            "gradient",
            "--params",
            str(distill_params_file(out.parent)),
            *extra,
        ],
    )


def rewrite_meta(path: Path, **changes) -> None:
    """Rewrite one part with other metadata (and a digest that matches it): a whole part of another run."""
    part = read_part(path)
    write_part(path, dataclasses.replace(part.meta, **changes), part.info.index, part.rows, part.info.truncated)


# --- subprocesses ------------------------------------------------------------------------------------


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _, group = text[text.rfind(")") + 2 :].split()[:3]
        if int(group) == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def assert_no_orphans(pgid: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() > deadline:
            pytest.fail(f"processes of the killed run are still alive: {_group_members(pgid)}")
        time.sleep(0.1)


def start(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    with log.open("wb") as handle:
        return subprocess.Popen(
            [str(EGKD), *args],
            cwd=cwd,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )


def kill_group_when(proc: subprocess.Popen, ready, log: Path, timeout: float = 240.0) -> None:
    """SIGKILL the whole process group (driver and dask workers) as soon as ``ready()``."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(
                    f"the run ended (exit {proc.returncode}) before it could be interrupted:\n"
                    + log.read_text(errors="replace")
                )
            if time.monotonic() > deadline:
                pytest.fail("the run made no progress in time:\n" + log.read_text(errors="replace"))
            time.sleep(0.02)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert_no_orphans(proc.pid)


def run_to_end(args: list[str], cwd: Path, log: Path, timeout: float = 300.0) -> str:
    proc = start(args, cwd, log)
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text(errors="replace")
    assert proc.returncode == 0, output
    assert_no_orphans(proc.pid)
    return output


def assert_same_rows(left, right) -> None:
    """Every field alike; the extras (arrays inside dataclasses, and views that follow the map) as
    :func:`test_explain_run.assert_close` compares them."""
    assert_close(left, right)
    for a, b in zip(left, right, strict=True):
        for field in dataclasses.fields(a):
            if field.name == "extras":
                continue
            x, y = getattr(a, field.name), getattr(b, field.name)
            if isinstance(x, np.ndarray) and x.dtype.kind == "f":
                np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=field.name)
            elif isinstance(x, np.ndarray):
                assert np.array_equal(x, y), field.name
            else:
                assert x == y, field.name


# --- interrupted stage one ----------------------------------------------------------------------------


def test_explain_killed_with_sigkill_resumes_to_the_same_cache(teacher, glue_dir, tmp_path):
    """kill -9 of `egkd explain --workers 2` mid-run: only whole parts remain, no worker survives, and the
    same command computes just the missing parts into the cache an uninterrupted run writes."""
    params = tmp_path / "params.yaml"  # integrated gradients: slow enough parts to stop the run half-way
    params.write_text(
        "data:\n  max_length: 32\nexplain:\n  gradient:\n    variant: integrated_gradients\n    ig_steps: 12\n",
        encoding="utf-8",
    )
    out = tmp_path / "cache"
    args = [
        "explain",
        "--method",
        "gradient",
        "--teacher",
        str(teacher),
        "--data",
        str(glue_dir),
        "--task",
        "sst2",
        "--split",
        "dev",
        "--limit",
        "32",
        "--partition-size",
        "4",
        "--batch-size",
        "4",
        "--workers",
        "2",
        "--out",
        str(out),
    ]
    partition = out / "method=gradient" / "split=dev"

    def parts() -> list[Path]:
        return sorted(partition.glob("part-*.parquet")) if partition.is_dir() else []

    proc = start(args, tmp_path, tmp_path / "first.log")
    kill_group_when(proc, lambda: len(parts()) >= 1, tmp_path / "first.log")
    survivors = parts()
    assert 1 <= len(survivors) < 8, "the run was not interrupted half-way"
    for path in survivors:  # atomic writes: every part left behind is whole and checks out
        read_part(path)

    output = run_to_end(args, tmp_path, tmp_path / "second.log")
    kept = len(survivors)
    assert f"computed {8 - kept} part(s), skipped {kept} already in the cache" in output, output
    assert not list(partition.glob(".part-*.tmp")) and verify_cache(out).ok

    reference = tmp_path / "reference"
    run_explain(
        explain_request(
            teacher,
            glue_dir,
            reference,
            "dev",
            32,
            max_length=32,
            params=load_params(params).explain,
            batch_size=4,
            partition_size=4,
        )
    )
    meta, rows = read_cache(out, "gradient", "dev")
    ref_meta, ref_rows = read_cache(reference, "gradient", "dev")
    assert meta == dataclasses.replace(ref_meta, teacher=meta.teacher)
    assert_same_rows(rows, ref_rows)


# --- interrupted stage two ----------------------------------------------------------------------------


def test_distill_killed_with_sigkill_resumes_to_the_same_weights(cache, tmp_path):
    """kill -9 of `egkd distill` after its first checkpoint; `--resume` restores weights, optimizer, scheduler
    and RNG states from it and ends with exactly the weights and log of an uninterrupted run."""
    params = distill_params_file(tmp_path, epochs=4, batch_size=4, checkpoint_every=2, lr=0.001)
    out = tmp_path / "student"
    args = ["distill", "--cache", str(cache), "--method", "gradient", "--out", str(out), "--params", str(params)]
    state = last_dir(out) / "state.pt"
    proc = start(args, tmp_path, tmp_path / "first.log")
    kill_group_when(proc, state.is_file, tmp_path / "first.log")
    assert not (out / "metrics.json").exists(), "the run finished before it was killed"
    saved_step = torch.load(state, weights_only=True)["step"]
    assert 2 <= saved_step < 24

    output = run_to_end([*args, "--resume"], tmp_path, tmp_path / "second.log")
    assert "resumed from the checkpoint at step" in output and "(24 steps" in output, output

    reference = tmp_path / "reference"
    distill(
        DistillRequest(
            cache=cache,
            out=reference,
            params=dataclasses.replace(load_params(params).distill, method="gradient"),
            evaluate=EvaluateParams(),
        )
    )
    resumed, uninterrupted = load_file(out / "model.safetensors"), load_file(reference / "model.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(resumed[k], uninterrupted[k]) for k in resumed)
    assert (out / "train_log.jsonl").read_text() == (reference / "train_log.jsonl").read_text()  # lr schedule too


def test_resume_after_a_kill_between_checkpoint_renames_and_mid_log_line(cache, tmp_path, monkeypatch):
    """A kill between save_checkpoint's two renames leaves the checkpoint as `.last.old`, and one while the log
    is written leaves half a line: resume uses the former, drops the latter, and matches an uninterrupted run."""
    params = small_distill(method=Method.GRADIENT)
    distill(DistillRequest(cache=cache, out=tmp_path / "full", params=params, evaluate=EvaluateParams()))
    original = training.Trainer.step

    def crash_at_step_4(self, batch, optimizer, scheduler, step, epoch):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, batch, optimizer, scheduler, step, epoch)

    out = tmp_path / "resumed"
    monkeypatch.setattr(training.Trainer, "step", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        distill(DistillRequest(cache=cache, out=out, params=params, evaluate=EvaluateParams()))
    monkeypatch.setattr(training.Trainer, "step", original)
    last_dir(out).rename(last_dir(out).with_name(".last.old"))
    with (out / "train_log.jsonl").open("a", encoding="utf-8") as log:
        log.write('{"step": 4, "epoch": 1, "lo')
    report = distill(DistillRequest(cache=cache, out=out, params=params, evaluate=EvaluateParams(), resume=True))
    assert report.training.resumed_from == 2
    first, second = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (out / "train_log.jsonl").read_text() == (tmp_path / "full" / "train_log.jsonl").read_text()


# --- corrupt caches -------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_distill_refuses_a_corrupt_part_naming_it(cache_copy, tmp_path, damage):
    path = part_path(cache_copy, "gradient", "train", 1)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-200])
    else:
        flip_byte_in_column(path, "attribution")
    result = cli_distill(cache_copy, tmp_path / "s")
    _one_line_error(result, str(path))
    assert "egkd explain" in result.stderr and "--verify" in result.stderr  # how to repair it
    assert not (tmp_path / "s" / "model.safetensors").exists()


# --- mismatched caches ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("teacher_weights_hash", "0" * 64),
        ("tokenizer_hash", "1" * 64),
        ("dataset_fingerprint", "2" * 64),
        ("max_length", 64),
        ("method_params", '{"seed": 1}'),
    ],
)
def test_train_parts_of_two_runs_are_refused(cache_copy, tmp_path, field, value):
    """Parts of another run (teacher, tokenizer, data, max_length...) mixed into one partition."""
    path = part_path(cache_copy, "gradient", "train", 2)
    have = getattr(read_part(path).meta, field)
    rewrite_meta(path, **{field: value})
    _one_line_error(
        cli_distill(cache_copy, tmp_path / "s"),
        f"{path}: cache field {field!r} differs: cache has {value!r}, expected {have!r}",
    )


@pytest.mark.parametrize(
    "field, value",
    [
        ("tokenizer_hash", "1" * 64),
        ("max_length", 64),
        ("task", "cola"),
        ("label_names", ("neg", "pos")),
    ],
)
def test_dev_partition_of_another_run_is_refused(cache_copy, tmp_path, field, value):
    """The dev partition that distill evaluates on must come from the train partition's teacher and tokenizer."""
    train_value = getattr(read_part(part_path(cache_copy, "gradient", "train", 0)).meta, field)
    for index in range(2):
        rewrite_meta(part_path(cache_copy, "gradient", "dev", index), **{field: value})
    _one_line_error(
        cli_distill(cache_copy, tmp_path / "s"),
        f"cache field {field!r} differs: cache has {value!r}, expected {train_value!r}",
    )


def test_partition_of_another_split_is_refused(cache_copy, tmp_path):
    """Dev parts moved into the train folder: the metadata's split wins over the folder name."""
    train = part_path(cache_copy, "gradient", "train", 0).parent
    shutil.rmtree(train)
    shutil.copytree(part_path(cache_copy, "gradient", "dev", 0).parent, train)
    _one_line_error(
        cli_distill(cache_copy, tmp_path / "s"), "cache field 'split' differs: cache has 'dev', expected 'train'"
    )


def write_future_part(path: Path) -> None:
    """A whole part as a later egkd might write it: the next schema version, with a field this egkd does not know."""
    table = pq.read_table(path)
    raw = json.loads(table.schema.metadata[META_KEY])
    raw.update(schema_version=SCHEMA_VERSION + 1, teacher_revision="abc")
    metadata = {**table.schema.metadata, META_KEY: json.dumps(raw).encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)


def test_cache_of_another_schema_version_is_refused_not_overwritten(cache_copy, tmp_path, teacher, glue_dir):
    path = part_path(cache_copy, "gradient", "train", 0)
    write_future_part(path)
    message = f"cache field 'schema_version' differs: cache has {SCHEMA_VERSION + 1}, this egkd reads {SCHEMA_VERSION}"
    _one_line_error(cli_distill(cache_copy, tmp_path / "s"), f"{path}: {message}")
    problems = [str(p) for p in verify_cache(cache_copy).problems]
    assert any(message in p for p in problems), problems
    before = path.read_bytes()
    with pytest.raises(EgkdError, match=f"{message}.*--overwrite"):  # another egkd's part is not corrupt
        run_explain(explain_request(teacher, glue_dir, cache_copy, "train", 24))
    assert path.read_bytes() == before


# --- malformed data ---------------------------------------------------------------------------------------


def write_sst2(root: Path, rows: list[str], header: str = "sentence\tlabel") -> Path:
    (root / "SST-2").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev"):
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return root


@pytest.mark.parametrize("method", list(Method), ids=lambda m: m.value)
def test_empty_sentences_are_explained_and_trained_on(teacher, tmp_path, method):
    """A sentence of only special tokens gets an all-zero map, no NaN, and trains without a NaN loss."""
    data = write_sst2(
        tmp_path / "glue",
        ["a good film\t1", "\t0", "   \t1", "the movie was bad\t0", "\t1", "very boring , not funny\t0"],
    )
    out = tmp_path / "cache"
    for split in ("train", "dev"):
        run_explain(explain_request(teacher, data, out, split, None, method=method))
    assert verify_cache(out).ok
    _, rows = read_cache(out, method.value, "train")
    empty = [r for r in rows if not r.text_a.strip()]
    assert len(empty) == 3
    for row in empty:
        assert row.special_mask.all() and not row.attribution.any()
        assert np.isfinite(row.teacher_logits).all()
        for item in row.extras.items:
            for spec, array in item.arrays():
                assert not array.any() if array.dtype == bool else np.isfinite(array).all(), spec.name
    params = small_distill(
        method=method, checkpoint_every=100, train=TrainParams(epochs=2, batch_size=2, lr=1e-3, min_steps=0)
    )
    report = distill(DistillRequest(cache=out, out=tmp_path / "s", params=params, evaluate=EvaluateParams()))
    assert report.training.steps == 6 and report.dev is not None and report.dev.count == 6
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and (r["explain"] is None or np.isfinite(r["explain"])) for r in log)
    assert all(torch.isfinite(w).all() for w in load_file(tmp_path / "s" / "model.safetensors").values())


def test_long_sentences_are_truncated_and_counted(teacher, tmp_path, monkeypatch):
    """Sentences longer than max_length are cut (keeping the final [SEP]); the count shows in `cache info`."""
    long = " ".join(["the film was very good and not boring"] * 3)
    data = write_sst2(tmp_path / "glue", [f"{long}\t1", "a good film\t1", f"{long} !\t0", "bad\t0", f"very {long}\t1"])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  max_length: 12\n", encoding="utf-8")
    out = tmp_path / "cache"
    args = [
        "explain",
        "--method",
        "gradient",
        "--teacher",
        str(teacher),
        "--data",
        str(data),
        "--task",
        "sst2",
        "--split",
        "dev",
        "--partition-size",
        "2",
        "--out",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "3 sentence(s) longer than max_length were truncated" in result.output
    meta, rows = read_cache(out, "gradient", "dev")
    tokenizer = load_tokenizer(str(teacher))
    sep = tokenizer.sep_token_id
    for row in rows:
        full = len(tokenizer(row.text_a)["input_ids"])
        assert len(row.input_ids) == min(full, 12) and row.input_ids[-1] == sep
    assert meta.max_length == 12
    info = runner.invoke(app, ["cache", "info", str(out)])
    assert info.exit_code == 0 and "3/3 parts, 5 rows, 3 truncated" in info.output, info.output


MALFORMED = [
    pytest.param("sst2", "SST-2", b"sentence\tscore\na film\t1\n", "missing column(s) 'label'", id="missing-column"),
    pytest.param(
        "sst2", "SST-2", b"sentence\tlabel\na film\t1\nshort\n", ".tsv:3: 1 fields, expected 2", id="missing-field"
    ),
    pytest.param(
        "sst2", "SST-2", b"sentence\tlabel\na film\t1\textra\n", ".tsv:2: 3 fields, expected 2", id="extra-field"
    ),
    pytest.param(
        "sst2",
        "SST-2",
        b"sentence\tlabel\na film\t1\nmeh\t3\n",
        ".tsv:3: label '3' not in ['0', '1']",
        id="label-outside",
    ),
    pytest.param(
        "sst2",
        "SST-2",
        b"sentence\tlabel\r\na film\t1\r\nbad \xe9 byte\t0\r\n",
        ".tsv:3: bytes that are not UTF-8",
        id="not-utf8",
    ),
    pytest.param(
        "rte",
        "RTE",
        b"index\tsentence1\tsentence2\tlabel\n4\ta\tb\tentailment\n4\tc\td\tentailment\n",
        ".tsv:3: duplicate id '4' (first at line 2)",
        id="duplicate-id",
    ),
    pytest.param("sst2", "SST-2", b"\xef\xbb\xbfsentence\tlabel\r\n\r\n", ": no examples", id="only-header"),
]


@pytest.mark.parametrize("command", ["explain", "finetune"])
@pytest.mark.parametrize("task, folder, content, message", MALFORMED)
def test_malformed_tsv_is_one_line_with_file_and_line(
    teacher, tmp_path, monkeypatch, command, task, folder, content, message
):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "glue"
    (data / folder).mkdir(parents=True)
    for split in ("train", "dev"):
        (data / folder / f"{split}.tsv").write_bytes(content)
    if command == "explain":
        args = [
            "explain",
            "--teacher",
            str(teacher),
            "--method",
            "gradient",
            "--split",
            "dev",
            "--out",
            str(tmp_path / "c"),
        ]
        expected_file = data / folder / "dev.tsv"
    else:
        args = ["finetune", "--model", str(teacher), "--out", str(tmp_path / "t")]
        expected_file = data / folder / "train.tsv"
    result = runner.invoke(app, [*args, "--task", task, "--data", str(data)])
    _one_line_error(result, message)
    assert str(expected_file) in result.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "t").exists()


# --- bad params and options ---------------------------------------------------------------------------------


BAD_EXPLAIN = [
    ("explain:\n  batchsize: 4\n", [], "unknown params key 'explain.batchsize'"),
    ("explain:\n  partition_size: many\n", [], "params key 'explain.partition_size' must be an integer, got 'many'"),
    ("explain:\n  gradient:\n    variant: saliency\n", [], "params key 'explain.gradient.variant' must be one of"),
    ("explain:\n  gradient:\n    ig_steps: 0\n", [], "explain.gradient.ig_steps must be positive, got 0"),
    ("data:\n  max_length: -4\n", [], "data.max_length must be positive, got -4"),
    ("", ["--batch-size", "0"], "batch_size must be positive, got 0"),
    ("", ["--partition-size", "-3"], "partition_size must be positive, got -3"),
    ("", ["--limit", "0"], "limit must be a positive number of examples, got 0"),
    ("", ["--task", "sst3"], "unknown task 'sst3'"),
    ("", ["--split", "validation"], "task sst2 has no split 'validation'"),
    (
        "",
        ["--method", "saliency"],
        "option 'method' must be one of ['gradient', 'perturbation', 'feature_selection'], got 'saliency'",
    ),
]


@pytest.mark.parametrize("params, options, message", BAD_EXPLAIN)
def test_explain_bad_params_and_options(teacher, glue_dir, tmp_path, params, options, message):
    (tmp_path / "p.yaml").write_text(params or "{}\n", encoding="utf-8")
    args = [
        "explain",
        "--teacher",
        str(teacher),
        "--data",
        str(glue_dir),
        "--split",
        "dev",
        "--method",
        "gradient",
        "--out",
        str(tmp_path / "c"),
        "--params",
        str(tmp_path / "p.yaml"),
        *options,
    ]
    _one_line_error(runner.invoke(app, args), message)
    assert not (tmp_path / "c").exists()


BAD_DISTILL = [
    ("distill:\n  epoch: 2\n", [], "unknown params key 'distill.epoch'"),
    ("distill:\n  train:\n    lr: fast\n", [], "params key 'distill.train.lr' must be a number, got 'fast'"),
    ("distill:\n  checkpoint_every: 0\n", [], "distill.checkpoint_every must be positive, got 0"),
    ("distill:\n  train:\n    batch_size: -8\n", [], "distill.train.batch_size must be positive, got -8"),
    ("distill:\n  beta: -1\n", [], "distill.beta must not be negative, got -1.0"),
    ("", ["--epochs", "0"], "epochs must be positive, got 0"),
    ("", ["--layers", "0"], "layers must be positive, got 0"),
    ("", ["--temperature", "-2"], "temperature must be positive, got -2.0"),
    ("", ["--layers", "5"], "has 2 layers; cannot keep the first 5"),
    (
        "",
        ["--method", "lime"],
        "option 'method' must be one of ['gradient', 'perturbation', 'feature_selection', 'none'], got 'lime'",
    ),
    ("", ["--student", "/nonexistent/student"], "model directory not found: /nonexistent/student"),
]


@pytest.mark.parametrize("params, options, message", BAD_DISTILL)
def test_distill_bad_params_and_options(cache, tmp_path, params, options, message):
    (tmp_path / "p.yaml").write_text(params or "{}\n", encoding="utf-8")
    args = [
        "distill",
        "--cache",
        str(cache),
        "--out",
        str(tmp_path / "s"),
        "--params",
        str(tmp_path / "p.yaml"),
        *options,
    ]
    _one_line_error(runner.invoke(app, args), message)
    assert not (tmp_path / "s" / "model.safetensors").exists()

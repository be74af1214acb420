"""Stage one end to end: a tiny teacher explains real SST-2 dev rows into the cache, resumably."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from test_cache import flip_byte_in_column
from typer.testing import CliRunner

from pipeline.cache.schema import CachedExample
from pipeline.cache.store import cache_info, part_path, read_cache, read_part_header
from pipeline.cache.verify import verify_cache
from pipeline.config import ExplainParams, TokenBudget
from pipeline.data import load_dataset
from pipeline.errors import EgkdError
from pipeline.explain import REGISTRY
from pipeline.explain.run import ExplainRequest, run_explain
from pipeline.methods import Method
from pipeline.tasks import get_task
from stages.cli import app

METHODS = sorted(REGISTRY, key=lambda m: m.value)
LIMIT, PART = 24, 8


def request(teacher: Path, glue: Path, out: Path, method: Method = Method.GRADIENT, **changes) -> ExplainRequest:
    params = ExplainParams(method=method.value, split="dev", batch_size=8, partition_size=PART, workers=0)
    param_changes = {k: changes.pop(k) for k in list(changes) if k in {f.name for f in dataclasses.fields(params)}}
    base = ExplainRequest(
        method=method,
        teacher=str(teacher),
        data=str(glue),
        task="sst2",
        split="dev",
        out=out,
        limit=LIMIT,
        max_length=16,
        params=dataclasses.replace(params, **param_changes),
    )
    return dataclasses.replace(base, **changes)


def digests(out: Path, method: Method) -> list[str]:
    return [read_part_header(part_path(out, method.value, "dev", i))[1].digest for i in range(LIMIT // PART)]


def assert_close(left: list[CachedExample], right: list[CachedExample]) -> None:
    assert [r.example_id for r in left] == [r.example_id for r in right]
    for a, b in zip(left, right, strict=True):
        assert np.array_equal(a.input_ids, b.input_ids) and np.array_equal(a.segments, b.segments)
        for name in ("attribution", "teacher_logits"):
            np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-4, atol=1e-5, err_msg=name)
        assert a.extras.kinds == b.extras.kinds
        same_map = np.array_equal(a.attribution, b.attribution)
        for x, y in zip(a.extras.items, b.extras.items, strict=True):
            if x.kind in ("preserving", "contrastive") and not same_map:
                # Views chosen by the map follow it: where another batching changed its last bits (the tiny
                # random teacher's feature-selection maps are noise of 1e-6), a near-tie may go the other way.
                assert np.array_equal(x.masks.sum(-1), y.masks.sum(-1)), x.kind  # the same k tokens per view
                continue
            for (spec, u), (_, v) in zip(x.arrays(), y.arrays(), strict=True):
                if spec.dtype == np.bool_:
                    assert np.array_equal(u, v), spec.name
                else:
                    np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5, err_msg=spec.name)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir: Path, glue_dir: Path) -> dict[Method, Path]:
    """One finished cache per registered method (24 SST-2 dev rows, 3 parts)."""
    out = tmp_path_factory.mktemp("cache")
    for method in METHODS:
        summary = run_explain(request(tiny_model_dir, glue_dir, out, method))
        assert len(summary.computed) == 3 and summary.skipped == 0 and summary.rows == LIMIT
    return {method: out for method in METHODS}


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.value)
def test_writes_rows_in_dataset_order(finished, method: Method, glue_dir: Path) -> None:
    meta, rows = read_cache(finished[method], method.value, "dev")
    dataset = load_dataset(glue_dir, get_task("sst2"), "dev", LIMIT)
    assert [r.example_id for r in rows] == [e.example_id for e in dataset.examples]
    assert [r.label for r in rows] == [e.label for e in dataset.examples]
    assert (meta.method, meta.num_parts, meta.num_examples, meta.max_length) == (method.value, 3, LIMIT, 16)
    assert all(len(r.attribution) == len(r.input_ids) <= 16 for r in rows)
    assert verify_cache(finished[method]).ok


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.value)
def test_batch_size_does_not_change_results(finished, method: Method, tiny_model_dir, glue_dir, tmp_path) -> None:
    run_explain(request(tiny_model_dir, glue_dir, tmp_path, method, batch_size=1))
    assert_close(read_cache(tmp_path, method.value, "dev")[1], read_cache(finished[method], method.value, "dev")[1])


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.value)
def test_token_budget_does_not_change_results(finished, method: Method, tiny_model_dir, glue_dir, tmp_path) -> None:
    """A budget of 48 tokens: many batches per pool and a pool per part, one batch in flight across them."""
    summary = run_explain(request(tiny_model_dir, glue_dir, tmp_path, method, tokens_per_forward=TokenBudget(cpu=48)))
    assert [r.index for r in sorted(summary.computed, key=lambda r: r.index)] == [0, 1, 2]
    assert_close(read_cache(tmp_path, method.value, "dev")[1], read_cache(finished[method], method.value, "dev")[1])


def test_rerun_computes_nothing(finished, tiny_model_dir, glue_dir) -> None:
    summary = run_explain(request(tiny_model_dir, glue_dir, finished[Method.GRADIENT]))
    assert summary.computed == () and summary.skipped == 3
    assert summary.lines()[0].startswith("nothing to compute: all 3 parts (24 rows)")


def test_the_teacher_is_loaded_once_and_not_at_all_by_a_rerun(tiny_model_dir, glue_dir, tmp_path, monkeypatch) -> None:
    """In process, the stream uses the model the head check loaded; a rerun whose parts show a trained head
    (same weights, no head seed) loads no model; one with a missing part loads it once to compute it."""
    import pipeline.models
    from pipeline.explain import part

    loads: list[str] = []
    real = pipeline.models.load_trained_classifier

    def counted(ref, *args, **kwargs):
        loads.append(ref)
        return real(ref, *args, **kwargs)

    monkeypatch.setattr(pipeline.models, "load_trained_classifier", counted)
    part._TEACHERS.clear()  # as a new process
    run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    assert loads == [str(tiny_model_dir)]
    part._TEACHERS.clear()
    assert run_explain(request(tiny_model_dir, glue_dir, tmp_path)).skipped == 3
    assert loads == [str(tiny_model_dir)]
    part_path(tmp_path, "gradient", "dev", 2).unlink()
    assert [r.index for r in run_explain(request(tiny_model_dir, glue_dir, tmp_path)).computed] == [2]
    assert loads == [str(tiny_model_dir)] * 2


def test_resume_computes_only_missing_parts(tiny_model_dir, glue_dir, tmp_path) -> None:
    first = run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    before, rows = digests(tmp_path, Method.GRADIENT), read_cache(tmp_path, "gradient", "dev")[1]
    part_path(tmp_path, "gradient", "dev", 1).unlink()
    summary = run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    assert [r.index for r in summary.computed] == [1] and summary.skipped == 2
    after = digests(tmp_path, Method.GRADIENT)
    assert (after[0], after[2]) == (before[0], before[2])  # kept parts are not rewritten
    assert_close(read_cache(tmp_path, "gradient", "dev")[1], rows)  # batched alone now, across parts before
    assert summary.truncated == first.truncated > 0  # max_length 16 cuts some SST-2 sentences
    assert cache_info(tmp_path).partitions[0].truncated == first.truncated


def test_replace_stale_resumes_this_run_s_parts_and_replaces_another_run_s(tiny_model_dir, glue_dir, tmp_path) -> None:
    """What dvc.yaml's stages pass, their outputs persisting: after an interruption only the missing parts are
    computed; after a change of settings the other run's parts are replaced, where a plain rerun refuses them."""
    run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    before = digests(tmp_path, Method.GRADIENT)
    part_path(tmp_path, "gradient", "dev", 2).unlink()  # an interrupted run
    resumed = run_explain(request(tiny_model_dir, glue_dir, tmp_path, replace_stale=True))
    assert [r.index for r in resumed.computed] == [2] and resumed.skipped == 2 and resumed.replaced == ""
    assert digests(tmp_path, Method.GRADIENT)[:2] == before[:2]  # kept, not rewritten
    with pytest.raises(
        EgkdError, match="cache field 'max_length' differs: cache has 16, expected 20; pass --overwrite"
    ):
        run_explain(request(tiny_model_dir, glue_dir, tmp_path, max_length=20))
    changed = run_explain(request(tiny_model_dir, glue_dir, tmp_path, max_length=20, replace_stale=True))
    assert len(changed.computed) == 3 and changed.skipped == 0
    assert changed.replaced.endswith("cache field 'max_length' differs: cache has 16, expected 20")
    assert "note: replaced the parts of another run: " in changed.lines()[0]
    fresh = tmp_path / "fresh"
    run_explain(request(tiny_model_dir, glue_dir, fresh, max_length=20))
    assert digests(tmp_path, Method.GRADIENT) == digests(fresh, Method.GRADIENT)  # as if made afresh


def test_corrupt_parts_are_reported_and_rewritten(tiny_model_dir, glue_dir, tmp_path) -> None:
    run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    before, rows = digests(tmp_path, Method.GRADIENT), read_cache(tmp_path, "gradient", "dev")[1]
    truncated, flipped = part_path(tmp_path, "gradient", "dev", 0), part_path(tmp_path, "gradient", "dev", 2)
    truncated.write_bytes(truncated.read_bytes()[:300])
    flip_byte_in_column(flipped, "attribution")
    assert verify_cache(tmp_path).bad_parts == [truncated, flipped]
    result = CliRunner().invoke(app, ["cache", "verify", str(tmp_path)])
    assert result.exit_code == 2
    assert "part-00000.parquet" in result.output and "part-00002.parquet" in result.output
    # A rerun reads part footers only: the truncated part is found, the flipped byte inside a page is not ...
    summary = run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    assert [r.index for r in summary.computed] == [0] and summary.corrupt == ("part-00000.parquet",)
    assert digests(tmp_path, Method.GRADIENT)[1] == before[1]
    # ... a rerun that verifies reads every part in full and recomputes the other one.
    summary = run_explain(request(tiny_model_dir, glue_dir, tmp_path, verify=True))
    assert [r.index for r in summary.computed] == [2] and summary.corrupt == ("part-00002.parquet",)
    assert verify_cache(tmp_path).ok and digests(tmp_path, Method.GRADIENT)[1] == before[1]
    assert_close(read_cache(tmp_path, "gradient", "dev")[1], rows)


def test_other_run_refused_naming_the_field_unless_overwrite(finished, tiny_model_dir, glue_dir, tmp_path) -> None:
    run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    with pytest.raises(EgkdError, match="cache field 'method_params' differs.*--overwrite"):
        run_explain(request(tiny_model_dir, glue_dir, tmp_path, seed=1))
    with pytest.raises(EgkdError, match="cache field 'limit' differs"):
        run_explain(request(tiny_model_dir, glue_dir, tmp_path, limit=16))
    summary = run_explain(request(tiny_model_dir, glue_dir, tmp_path, limit=16, overwrite=True))
    assert len(summary.computed) == 2 and verify_cache(tmp_path).ok


def test_precision_is_recorded_and_parts_of_another_are_never_mixed_in(tiny_model_dir, glue_dir, tmp_path) -> None:
    run_explain(request(tiny_model_dir, glue_dir, tmp_path, precision="auto"))  # auto is fp32 on a CPU
    assert read_part_header(part_path(tmp_path, "gradient", "dev", 0))[0].precision == "fp32"
    fp32 = read_cache(tmp_path, "gradient", "dev")[1]
    part_path(tmp_path, "gradient", "dev", 1).unlink()
    with pytest.raises(
        EgkdError, match="cache field 'precision' differs: cache has 'fp32', expected 'bf16'.*--overwrite"
    ):
        run_explain(request(tiny_model_dir, glue_dir, tmp_path, precision="bf16"))
    assert not part_path(tmp_path, "gradient", "dev", 1).exists()  # refused before computing anything
    summary = run_explain(request(tiny_model_dir, glue_dir, tmp_path, precision="bf16", overwrite=True))
    assert len(summary.computed) == 3 and verify_cache(tmp_path).ok
    meta, bf16 = read_cache(tmp_path, "gradient", "dev")
    assert meta.precision == "bf16"
    assert any(not np.array_equal(a.attribution, b.attribution) for a, b in zip(fp32, bf16, strict=True))
    for a, b in zip(fp32, bf16, strict=True):
        np.testing.assert_allclose(a.attribution, b.attribution, atol=0.05, rtol=0.05)


def test_local_dask_workers_keep_glibcs_adaptive_malloc_thresholds(monkeypatch) -> None:
    """dask's nanny would set MALLOC_TRIM_THRESHOLD_, which fixes glibc's mmap threshold too: stage one ran
    1.5x slower in such a worker than in process. A user's own setting is passed on."""
    from pipeline.explain.run import _dask_client

    def worker_setting(req: ExplainRequest) -> set:
        with _dask_client(req) as client:
            return set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values())

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    req = request(Path("unused"), Path("unused"), Path("unused"), workers=1)
    assert worker_setting(req) == {None}
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1048576")
    assert worker_setting(req) == {"1048576"}


def test_dask_tasks_are_runs_of_consecutive_parts() -> None:
    from pipeline.explain.run import _groups

    jobs: list = list(range(10))  # stand-ins for PartJobs: only their order matters
    assert _groups(jobs, 1, 256) == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]  # about 4 tasks per worker
    assert _groups(jobs, 8, 256) == [[i] for i in range(10)]
    assert [len(g) for g in _groups(list(range(1000)), 1, 256)][:2] == [64, 64]  # at most 16384 examples


@pytest.mark.parametrize("workers", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_dask_workers_give_the_same_cache(finished, tiny_model_dir, glue_dir, tmp_path, workers) -> None:
    """A local cluster of worker processes writes the same rows as the in-process run (~25 s each)."""
    reference = read_cache(finished[Method.PERTURBATION], "perturbation", "dev")[1]
    summary = run_explain(request(tiny_model_dir, glue_dir, tmp_path, Method.PERTURBATION, workers=workers))
    assert sorted(r.index for r in summary.computed) == [0, 1, 2]
    assert_close(read_cache(tmp_path, "perturbation", "dev")[1], reference)


# --- command line ---------------------------------------------------------------------------------


def test_cli_explain_info_verify(tiny_model_dir, glue_dir, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml here: defaults
    out = tmp_path / "cache"
    args = [
        "explain",
        "--method",
        "feature_selection",
        "--teacher",
        str(tiny_model_dir),
        "--data",
        str(glue_dir),
        "--task",
        "sst2",
        "--split",
        "dev",
        "--limit",
        "12",
        "--partition-size",
        "8",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "computed 2 part(s), skipped 0" in result.output and "12 of 12 rows" in result.output
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "nothing to compute" in result.output
    result = CliRunner().invoke(app, ["cache", "info", str(out)])
    assert result.exit_code == 0
    assert "method=feature_selection split=dev: 2/2 parts, 12 rows" in result.output
    assert "tokenizer_hash:" in result.output
    result = CliRunner().invoke(app, ["cache", "verify", str(out)])
    assert result.exit_code == 0 and "OK: 1 partition(s), 2 part(s), 12 rows" in result.output


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--method", "lime"],
            "error: option 'method' must be one of ['gradient', 'perturbation', 'feature_selection'], got 'lime'",
        ),
        (["--data", "/nonexistent/glue"], "error: data not found: /nonexistent/glue (no such file or folder)"),
        (["--workers", "-1"], "error: workers must not be negative, got -1"),
        (["--precision", "fp16"], "error: option 'precision' must be one of ['auto', 'fp32', 'bf16'], got 'fp16'"),
    ],
)
def test_cli_errors_are_one_line(tiny_model_dir, tmp_path, monkeypatch, extra, message) -> None:
    monkeypatch.chdir(tmp_path)
    args = [
        "explain",
        "--teacher",
        str(tiny_model_dir),
        "--data",
        str(tmp_path),
        "--split",
        "dev",
        "--out",
        str(tmp_path / "c"),
        *extra,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message)


def test_cli_cache_errors(tmp_path) -> None:
    result = CliRunner().invoke(app, ["cache", "info", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "error: cache not found" in result.output
    result = CliRunner().invoke(app, ["cache", "verify", str(tmp_path)])
    assert result.exit_code == 2 and "no cache partitions" in result.output


def test_a_teacher_without_a_trained_head_is_refused_unless_allowed(tmp_path, glue_dir, monkeypatch) -> None:
    """Bug 8: a checkpoint without a classification head (builtin:minilm-l6 is one) is refused, naming the new
    weights; with --allow-new-head the head is drawn from explain.seed, so two runs write the same cache."""
    from conftest import make_tiny_model_dir
    from rows import assert_rows_equal

    from pipeline.explain import part

    encoder = make_tiny_model_dir(tmp_path / "encoder", head=False)
    monkeypatch.chdir(tmp_path)

    def explain(out: str, *extra: str):
        part._TEACHERS.clear()  # each run loads its teacher afresh, as a new process would
        args = ["explain", "--teacher", str(encoder), "--data", str(glue_dir), "--split", "dev", "--limit", "8"]
        return CliRunner().invoke(app, [*args, "--partition-size", "4", "--out", out, *extra])

    refused = explain("refused")
    assert refused.exit_code == 2 and not (tmp_path / "refused").exists()
    (line,) = refused.output.strip().splitlines()
    assert line.startswith(f"error: teacher {encoder} has no trained classification head for 2 labels: ")
    assert "classifier.bias, classifier.weight would be newly initialised" in line and "--allow-new-head" in line

    for out in ("first", "second"):
        result = explain(out, "--allow-new-head")
        assert result.exit_code == 0, result.output
        assert "classifier.bias, classifier.weight drawn from seed 0" in result.output
    (first_meta, first), (second_meta, second) = (
        read_cache(tmp_path / o, "gradient", "dev") for o in ("first", "second")
    )
    assert first_meta == second_meta and first_meta.teacher_head_seed == 0
    assert_rows_equal(first, second)

    (tmp_path / "seed1.yaml").write_text("explain:\n  seed: 1\n", encoding="utf-8")
    other = explain("other", "--allow-new-head", "--params", "seed1.yaml")
    assert other.exit_code == 0, other.output
    _, rows = read_cache(tmp_path / "other", "gradient", "dev")
    assert not np.allclose(rows[0].teacher_logits, first[0].teacher_logits)
    mixed = explain("first", "--allow-new-head", "--params", "seed1.yaml")  # resuming with another head
    assert mixed.exit_code == 2 and "differs" in mixed.output

"""The fixed costs of a command (no timings here: benchmarks/fixed_costs.py prints them).

* ``egkd --help``, ``egkd cache info`` and a rerun of ``egkd explain`` with nothing to compute import neither torch
  nor transformers (checked in fresh processes);
* that rerun decides from the parts' footers, the data and the teacher's files alone, and anything that changed
  (the teacher's tokenizer, weights, the data, a setting, a library) sends it down the full path, which decides as
  it always has;
* several ``--split`` in one command write the same parts as one command per split.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_explain_run import LIMIT, request
from typer.testing import CliRunner

from pipeline import versions
from pipeline.cache.format import TEACHER_FILES_KEY
from pipeline.cache.store import part_path, read_teacher_files
from pipeline.errors import EgkdError
from pipeline.explain import REGISTRY, explainer_class
from pipeline.explain.record import cached_kinds
from pipeline.explain.run import run_explain, run_explain_splits
from pipeline.methods import Method
from pipeline.models import tokenizer_files_hash
from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "captum", "dask", "datasets")


def heavy_imports(args: list[str], cwd: Path) -> tuple[set[str], str]:
    """The heavy libraries that ``egkd args``, run in a fresh process, imported; and what it printed."""
    code = (
        "import sys\n"
        "from stages.cli import app\n"
        "try:\n"
        "    app(sys.argv[1:])\n"
        "except SystemExit as end:\n"
        "    assert end.code in (0, None), end.code\n"
        f"print('imported:', *[m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith("imported:"), done.stdout
    return set(last.split()[1:]), done.stdout


def test_the_command_line_and_its_help_import_no_heavy_library(tmp_path):
    assert heavy_imports(["--help"], tmp_path)[0] == set()
    assert heavy_imports(["cache", "info", "--help"], tmp_path)[0] == set()
    for command in ("explain", "distill", "evaluate", "finetune", "report"):
        assert heavy_imports([command, "--help"], tmp_path)[0] == set(), command


@pytest.fixture()
def explained(tiny_model_dir, glue_dir, tmp_path, monkeypatch):
    """A cache of SST-2 dev rows made by ``egkd explain``, and the command that made it."""
    monkeypatch.chdir(tmp_path)  # no params.yaml: the packaged defaults
    args = ["explain", "--teacher", str(tiny_model_dir), "--data", str(glue_dir), "--task", "sst2"]
    args += ["--split", "dev", "--limit", "12", "--partition-size", "4", "--out", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "computed 3 part(s)" in result.output, result.output
    return tmp_path / "cache", args


def test_cache_info_and_a_rerun_with_nothing_to_compute_import_no_heavy_library(explained, tmp_path):
    cache, args = explained
    imported, output = heavy_imports(["cache", "info", str(cache)], tmp_path)
    assert imported == set() and "method=gradient split=dev: 3/3 parts, 12 rows" in output
    imported, output = heavy_imports(args, tmp_path)
    assert imported == set() and "nothing to compute: all 3 parts (12 rows)" in output


def test_every_part_records_the_teacher_files_its_tokenizer_hash_came_from(explained, tiny_model_dir):
    cache, _ = explained
    files = tokenizer_files_hash(str(tiny_model_dir))
    assert files is not None and len(files) == 64
    assert {read_teacher_files(part_path(cache, "gradient", "dev", i)) for i in range(3)} == {files}
    assert tokenizer_files_hash("some-org/some-hub-model") is None  # a hub teacher: only its loaded tokenizer tells


def test_the_cached_kinds_read_without_the_explainers_are_theirs():
    assert set(REGISTRY) == set(Method)
    for method in Method:
        assert cached_kinds(method) == tuple(kind.kind for kind in explainer_class(method).cached_extras())


@pytest.fixture()
def tokenizer_loads(monkeypatch):
    """The references whose tokenizer stage one loads: none when a rerun decides from the footers alone."""
    import pipeline.models

    loads: list[str] = []
    real = pipeline.models.load_tokenizer

    def counted(ref):
        loads.append(ref)
        return real(ref)

    monkeypatch.setattr(pipeline.models, "load_tokenizer", counted)
    return loads


@pytest.fixture()
def teacher(tiny_model_dir, tmp_path) -> Path:
    """A copy of the tiny teacher that a test may change."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "teacher"))


def test_a_rerun_decides_from_the_footers_and_a_changed_file_sends_it_down_the_full_path(
    teacher, glue_dir, tmp_path, tokenizer_loads
):
    out = tmp_path / "cache"
    run_explain(request(teacher, glue_dir, out))
    assert tokenizer_loads == [str(teacher)]
    summary = run_explain(request(teacher, glue_dir, out))
    assert (summary.skipped, summary.computed, tokenizer_loads) == (3, (), [str(teacher)])  # no tokenizer loaded
    (teacher / "README.md").write_text("a file the tokenizer does not read, but may have", encoding="utf-8")
    summary = run_explain(request(teacher, glue_dir, out))
    assert summary.skipped == 3 and summary.computed == () and len(tokenizer_loads) == 2  # loaded: same hash, kept


def test_parts_without_the_teacher_files_record_take_the_full_path(teacher, glue_dir, tmp_path, tokenizer_loads):
    out = tmp_path / "cache"
    run_explain(request(teacher, glue_dir, out))
    for i in range(3):  # as parts written before the record was kept
        path = part_path(out, "gradient", "dev", i)
        table = pq.read_table(path)
        footer = {k: v for k, v in table.schema.metadata.items() if k != TEACHER_FILES_KEY}
        pq.write_table(table.replace_schema_metadata(footer), path)
        assert read_teacher_files(path) is None
    assert run_explain(request(teacher, glue_dir, out)).skipped == 3 and len(tokenizer_loads) == 2


def _retokenised(teacher: Path) -> None:
    config = json.loads((teacher / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["do_lower_case"] = not config["do_lower_case"]
    (teacher / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _reweighted(teacher: Path) -> None:
    from conftest import make_tiny_model_dir

    make_tiny_model_dir(teacher, seed=1)


def _data_changed(glue: Path, to: Path) -> Path:
    """A copy of the GLUE folder's SST-2 dev file with a line added after the rows the run explains."""
    (to / "SST-2").mkdir(parents=True)
    lines = (glue / "SST-2" / "dev.tsv").read_text(encoding="utf-8") + "a line beyond the rows explained\t1\n"
    (to / "SST-2" / "dev.tsv").write_text(lines, encoding="utf-8")
    return to


@pytest.mark.parametrize(
    "change, field",
    [
        ("tokenizer", "tokenizer_hash"),
        ("weights", "teacher_weights_hash"),
        ("data", "dataset_fingerprint"),
        ("setting", "method_params"),
        ("library", "libraries"),
    ],
)
def test_a_complete_cache_of_another_run_is_refused_as_before(
    change, field, teacher, glue_dir, tmp_path, monkeypatch, tokenizer_loads
):
    """Every part is there, but made by another run: the rerun refuses it naming the field, before computing."""
    from pipeline.explain import part

    out = tmp_path / "cache"
    run_explain(request(teacher, glue_dir, out))
    part._TEACHERS.clear()
    data, changes = glue_dir, {}
    if change == "tokenizer":
        _retokenised(teacher)
    elif change == "weights":
        _reweighted(teacher)
    elif change == "data":
        data = _data_changed(glue_dir, tmp_path / "glue")
    elif change == "setting":
        changes = {"seed": 1}
    else:
        other = dataclasses.replace(versions.current(), transformers="0.0.1")
        monkeypatch.setattr(versions, "current", lambda: other)
    with pytest.raises(EgkdError, match=f"cache field '{field}' differs.*--overwrite"):
        run_explain(request(teacher, data, out, **changes))
    assert len(tokenizer_loads) == 2  # the full path said so


def test_two_splits_in_one_call_write_what_two_calls_write(tiny_model_dir, glue_dir, tmp_path, monkeypatch):
    import pipeline.models
    from pipeline.explain import part

    loads: list[str] = []
    real = pipeline.models.load_trained_classifier
    monkeypatch.setattr(pipeline.models, "load_trained_classifier", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    dev = request(tiny_model_dir, glue_dir, tmp_path / "together")
    train = dataclasses.replace(dev, split="train", limit=16)
    part._TEACHERS.clear()
    together = list(run_explain_splits([train, dev]))
    assert [s.rows for s in together] == [16, LIMIT] and loads == [str(tiny_model_dir)]  # the teacher loaded once
    for one in (train, dev):
        part._TEACHERS.clear()  # each alone, as a new process
        run_explain(dataclasses.replace(one, out=tmp_path / "apart"))
    for split, parts in (("train", 2), ("dev", 3)):
        for i in range(parts):
            a, b = (pq.read_table(part_path(tmp_path / where, "gradient", split, i)) for where in ("together", "apart"))
            assert a.equals(b, check_metadata=True), (split, i)  # rows, metadata, digests: the same parts
    again = list(run_explain_splits([train, dev]))
    assert [(s.skipped, s.computed) for s in again] == [(2, ()), (3, ())]
    with pytest.raises(EgkdError, match="split dev is given twice"):
        list(run_explain_splits([dev, dev]))


def test_the_cli_pairs_each_split_with_its_limit(tiny_model_dir, glue_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = ["explain", "--teacher", str(tiny_model_dir), "--data", str(glue_dir), "--partition-size", "8"]
    base += ["--out", str(tmp_path / "cache")]
    result = CliRunner().invoke(app, [*base, "--split", "train", "--limit", "8", "--split", "dev", "--limit", "16"])
    assert result.exit_code == 0, result.output
    assert "8 of 8 rows" in result.output and "16 of 16 rows" in result.output
    assert result.output.index("split=train") < result.output.index("split=dev")
    result = CliRunner().invoke(app, [*base, "--split", "train", "--limit", "8", "--split", "dev", "--limit", "12"])
    assert result.exit_code == 2  # each split says its own outcome as it ends: train's before dev's refusal
    assert result.output.index("nothing to compute: all 1 parts (8 rows)") < result.output.index("error: ")
    assert "cache field 'limit' differs: cache has 16, expected 12" in result.output
    result = CliRunner().invoke(app, [*base, "--split", "train", "--split", "dev", "--limit", "8"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --limit is given 1 times for 2 splits: give none, or one per --split (paired by position)"
    )


def test_the_benchmark_times_every_fixed_cost(glue_dir):
    from benchmarks.fixed_costs import run

    found = run(rows=300, explain_rows=16, data=glue_dir, repeats=1, dev_rows=8)
    assert len(found) == 9 and all(0 < seconds < 300 for seconds in found.values()), found
    assert any(name.startswith("load: load_inputs (300 rows)") for name in found)


def test_the_benchmark_times_a_computing_process_start():
    from benchmarks.fixed_costs import process_start

    found = process_start("cpu", repeats=2)
    assert len(found) == 6 and all(0 < seconds < 300 for seconds in found.values()), found
    for run in ("first run", "fastest of the others"):
        wall, imports, context = (found[f"process start on cpu, {run}: {part}"] for part in
                                  ("wall", "imports", "device context"))  # fmt: skip
        assert wall > imports + context
    with pytest.raises(RuntimeError, match="a process on nosuch failed"):
        process_start("nosuch", repeats=2)

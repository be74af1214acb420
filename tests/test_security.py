"""Security: safetensors-only weights unless --allow-pickle, no remote code, no pickle in caches or checkpoints,
and nothing read from a cache's metadata used as a path to write to."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from test_cli import _one_line_error
from test_reliability import cache, cache_copy, distill_params_file, rewrite_meta, teacher  # noqa: F401
from typer.testing import CliRunner

from pipeline.cache.format import META_KEY, PART_KEY, TEACHER_FILES_KEY
from pipeline.cache.store import cache_info, part_path, read_cache, read_part
from pipeline.cache.verify import verify_cache
from pipeline.checkpoint import last_dir
from pipeline.distill.inputs import load_rows
from pipeline.errors import EgkdError
from pipeline.models import load_classifier, load_tokenizer
from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


# --- pickle weights ---------------------------------------------------------------------------------------


class _Marker:
    """Unpickling this creates a file: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.makedirs, (str(self.path),))


@pytest.fixture(scope="module")
def pickled(teacher, tmp_path_factory) -> Path:
    """The teacher with its weights as pytorch_model.bin (a pickle) instead of safetensors."""
    folder = tmp_path_factory.mktemp("pickled") / "model"
    shutil.copytree(teacher, folder)
    state = load_classifier(str(teacher), 2).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return folder


def test_pickle_weights_are_never_unpickled_without_the_flag(teacher, tmp_path):
    evil = tmp_path / "evil"
    shutil.copytree(teacher, evil)
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "unpickled"
    (evil / "pytorch_model.bin").write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(EgkdError, match="only pickle weights .* --allow-pickle"):
        load_classifier(str(evil), 2)
    assert not marker.exists()


def _commands(pickled: Path, cache: Path, glue_dir: Path, tmp_path: Path) -> dict[str, list[str]]:
    data = ["--data", str(glue_dir), "--task", "sst2"]
    (tmp_path / "distill").mkdir()
    return {
        "finetune": [
            "finetune",
            "--model",
            str(pickled),
            *data,
            "--limit",
            "8",
            "--dev-limit",
            "8",
            "--batch-size",
            "8",
            "--out",
            str(tmp_path / "teacher"),
        ],
        "explain": [
            "explain",
            "--teacher",
            str(pickled),
            *data,
            "--method",
            "gradient",
            "--split",
            "dev",
            "--limit",
            "4",
            "--out",
            str(tmp_path / "cache"),
        ],
        "distill": [
            "distill",
            "--cache",
            str(cache),
            "--method",
            "gradient",
            "--student",
            str(pickled),
            "--out",
            str(tmp_path / "student"),
            "--params",
            str(distill_params_file(tmp_path / "distill")),
        ],
        "evaluate": ["evaluate", "--model", str(pickled), *data, "--out", str(tmp_path / "eval.json")],
    }


@pytest.mark.parametrize("command", ["finetune", "explain", "distill", "evaluate"])
def test_every_model_loading_command_takes_allow_pickle(pickled, cache, glue_dir, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  dev_limit: 8\n", encoding="utf-8")
    args = _commands(pickled, cache, glue_dir, tmp_path)[command]
    _one_line_error(runner.invoke(app, args), "only pickle weights")
    result = runner.invoke(app, [*args, "--allow-pickle"])
    assert result.exit_code == 0, result.output


# --- remote code ------------------------------------------------------------------------------------------------


def _with_remote_code(source: Path, folder: Path, marker: Path, model_type: str | None = None) -> Path:
    """A model folder whose config and tokenizer config point at custom code that writes ``marker``."""
    shutil.copytree(source, folder)
    (folder / "evil.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "from transformers import BertConfig as EvilConfig\n"
        "from transformers import BertForSequenceClassification as EvilModel\n"
        "from transformers import BertTokenizer as EvilTokenizer\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig", "AutoModelForSequenceClassification": "evil.EvilModel"}
    if model_type is not None:
        config["model_type"] = model_type
    (folder / "config.json").write_text(json.dumps(config))
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config["auto_map"] = {"AutoTokenizer": ["evil.EvilTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    return folder


@pytest.mark.parametrize("model_type", [None, "evil"], ids=["known-type", "unknown-type"])
def test_remote_code_is_never_run(teacher, glue_dir, tmp_path, monkeypatch, model_type):
    marker = tmp_path / "remote-code-ran"
    folder = _with_remote_code(teacher, tmp_path / "model", marker, model_type)
    for load in (lambda: load_classifier(str(folder), 2), lambda: load_tokenizer(str(folder))):
        try:
            load()
        except EgkdError:
            pass  # refusing is fine; running the code is not
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "explain",
            "--teacher",
            str(folder),
            "--data",
            str(glue_dir),
            "--task",
            "sst2",
            "--method",
            "gradient",
            "--split",
            "dev",
            "--limit",
            "4",
            "--out",
            str(tmp_path / "c"),
        ],
    )
    assert result.exit_code in (0, 2) and "Traceback" not in result.output, result.output
    assert not marker.exists()


def test_source_never_enables_remote_code():
    """Every from_pretrained call of the library passes trust_remote_code=False; nothing passes True."""
    sources = [p for folder in ("pipeline", "stages", "benchmarks") for p in (REPO / folder).rglob("*.py")]
    calls = 0
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"trust_remote_code\s*=\s*True", text), path
        for match in re.finditer(r"\.from_pretrained\(", text):
            call = text[match.end() : text.find(")", match.end()) + 1]
            assert "trust_remote_code=False" in call, f"{path}: from_pretrained({call}"
            calls += 1
    assert calls >= 3


# --- no pickle in caches or checkpoints -------------------------------------------------------------------------


def test_cache_parts_hold_json_metadata_only(cache):
    parts = sorted(cache.rglob("part-*.parquet"))
    assert len(parts) == 5
    for path in parts:
        metadata = pq.ParquetFile(path).metadata.metadata
        assert set(metadata) == {META_KEY, PART_KEY, TEACHER_FILES_KEY, b"ARROW:schema"}, path
        for value in metadata.values():
            assert not value.startswith((b"\x80\x04", b"\x80\x05", b"\x80\x03", b"\x80\x02")), path
        for key in (META_KEY, PART_KEY):
            assert isinstance(json.loads(metadata[key]), dict)
        assert re.fullmatch(rb"[0-9a-f]{64}", metadata[TEACHER_FILES_KEY])  # a sha256, nothing else


def test_reading_a_cache_never_unpickles(cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used while reading a cache")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    assert verify_cache(cache).ok and cache_info(cache).rows == 36
    meta, rows = read_cache(cache, "gradient", "train")
    assert len(rows) == 24 and len(load_rows(cache, "gradient")[2]) == 12


def test_checkpoint_state_is_loaded_with_weights_only(cache, tmp_path, monkeypatch):
    out = tmp_path / "s"
    args = [
        "distill",
        "--cache",
        str(cache),
        "--method",
        "gradient",
        "--out",
        str(out),
        "--params",
        str(distill_params_file(tmp_path, checkpoint_every=1)),
    ]
    assert runner.invoke(app, args).exit_code == 0
    calls = []
    original = torch.load

    def recording(*a, **kw):
        calls.append(kw.get("weights_only"))
        return original(*a, **kw)

    monkeypatch.setattr(torch, "load", recording)
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0 and "resumed from the checkpoint at step 3" in result.output, result.output
    assert calls == [True]


@pytest.mark.parametrize("content", ["pickle", "truncated"])
def test_malicious_or_damaged_checkpoint_is_refused(cache, tmp_path, content):
    out = tmp_path / "s"
    args = [
        "distill",
        "--cache",
        str(cache),
        "--method",
        "gradient",
        "--out",
        str(out),
        "--params",
        str(distill_params_file(tmp_path, checkpoint_every=1)),
    ]
    assert runner.invoke(app, args).exit_code == 0
    state = last_dir(out) / "state.pt"
    marker = tmp_path / "unpickled"
    if content == "pickle":
        torch.save({"step": 1, "settings": _Marker(marker)}, state, _use_new_zipfile_serialization=True)
    else:
        state.write_bytes(state.read_bytes()[:100])
    _one_line_error(
        runner.invoke(app, [*args, "--resume"]), f"cannot resume: {state} is not a readable egkd checkpoint"
    )
    assert not marker.exists()


# --- metadata is never a path ----------------------------------------------------------------------------------


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_paths_in_cache_metadata_are_never_written_to(cache_copy, glue_dir, tmp_path, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = {"teacher": "../../evil-teacher", "dataset_source": str(outside / "x.tsv"), "egkd_version": "../../../v"}
    for path in sorted(cache_copy.rglob("part-*.parquet")):
        rewrite_meta(path, **hostile)
    assert verify_cache(cache_copy).ok
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    (work / "params.yaml").write_text(
        "data:\n  dev_limit: 8\ndistill:\n  train:\n    epochs: 1\n    batch_size: 8\n", encoding="utf-8"
    )
    before = _files(tmp_path)
    for args in (
        ["cache", "info", str(cache_copy)],
        ["cache", "verify", str(cache_copy)],
        ["distill", "--cache", str(cache_copy), "--method", "gradient", "--out", "student"]
        + ["--student", "base", "--layers", "2", "--min-steps", "0"],  # the tiny base model has 2 layers
        [
            "evaluate",
            "--model",
            "student",
            "--task",
            "sst2",
            "--data",
            str(glue_dir),
            "--cache",
            str(cache_copy),
            "--method",
            "gradient",
            "--out",
            "eval.json",
        ],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
    created = _files(tmp_path) - before
    assert created and all(p.is_relative_to(work / "student") or p == work / "eval.json" for p in created), created
    assert not (tmp_path / "evil-teacher").exists() and not list(outside.iterdir())
    assert read_part(part_path(cache_copy, "gradient", "train", 0)).meta.teacher == "../../evil-teacher"
    assert (
        dataclasses.asdict(read_part(part_path(cache_copy, "gradient", "dev", 0)).meta)["egkd_version"] == "../../../v"
    )

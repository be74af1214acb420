"""``egkd data digest``: the sha256 of the data folders the evaluations read, the file dvc.yaml's evaluations depend
on (:mod:`pipeline.data_digest`). Exact digests of hand-made folders; what changes them and what does not."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.config import EvalSetParams
from pipeline.data_digest import evaluation_digest, evaluation_folders, folder_digest
from pipeline.errors import EgkdError
from stages.cli import app

SETS = {"dev": EvalSetParams(split="dev"), "mpqa": EvalSetParams(data="mpqa", split="test")}


def make_sets(root: Path) -> Path:
    (root / "sst2" / "SST-2").mkdir(parents=True)
    (root / "sst2" / "SST-2" / "dev.tsv").write_bytes(b"sentence\tlabel\ngood\t1\n")
    (root / "mpqa").mkdir()
    (root / "mpqa" / "test.csv").write_bytes(b"text,label\nfine,1\n")
    (root / "trec").mkdir()
    (root / "trec" / "train.csv").write_bytes(b"text,label\nwhy,DESC\n")
    return root


def test_a_folder_digest_is_its_files_paths_sizes_and_bytes(tmp_path):
    root = make_sets(tmp_path)
    expected = hashlib.sha256(b"SST-2/dev.tsv\x0022\x00sentence\tlabel\ngood\t1\n").hexdigest()
    assert folder_digest(root / "sst2") == expected
    assert (
        folder_digest(root / "mpqa" / "test.csv")
        == hashlib.sha256(b"test.csv\x0018\x00text,label\nfine,1\n").hexdigest()
    )
    (root / "sst2" / "empty").mkdir()  # an empty folder counts nothing
    assert folder_digest(root / "sst2") == expected
    (root / "sst2" / "SST-2" / "dev.tsv").rename(root / "sst2" / "SST-2" / "dev2.tsv")  # a renamed file does
    assert folder_digest(root / "sst2") != expected


def test_the_evaluations_folders_are_the_tasks_and_each_sets_once(tmp_path):
    root = make_sets(tmp_path)
    twice = {**SETS, "mpqa-again": EvalSetParams(data="mpqa", split="test", skip=1)}
    assert evaluation_folders(root / "sst2", twice, root) == [root / "sst2", root / "mpqa"]
    digest = evaluation_digest(root / "sst2", SETS, root)
    assert digest == {(root / n).as_posix(): folder_digest(root / n) for n in ("sst2", "mpqa")}
    # a set no evaluation reads changes nothing; a file of one they read does
    (root / "trec" / "train.csv").write_bytes(b"text,label\nwho,HUM\n")
    (root / "yelp").mkdir()
    assert evaluation_digest(root / "sst2", SETS, root) == digest
    (root / "mpqa" / "test.csv").write_bytes(b"text,label\nfine,0\n")
    assert evaluation_digest(root / "sst2", SETS, root) != digest


@pytest.mark.parametrize(
    ("data", "sets", "message"),
    [
        ("nope", SETS, "data not found: "),
        ("sst2", {"shift": EvalSetParams(data="yelp")}, "eval set 'shift': data folder not found: "),
    ],
)
def test_a_missing_folder_is_named(tmp_path, data, sets, message):
    root = make_sets(tmp_path)
    with pytest.raises(EgkdError, match=message):
        evaluation_digest(root / data, sets, root)


def test_the_command_writes_the_digest_of_the_params_sets(tmp_path, monkeypatch):
    root = make_sets(tmp_path / "sets")
    monkeypatch.chdir(tmp_path)
    params = {"experiment": {"eval_sets": {"dev": {"split": "dev"}, "mpqa": {"data": "mpqa", "split": "test"}}}}
    Path("params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    args = ["data", "digest", "--data", "sets/sst2", "--sets-root", "sets", "--out", "out/digest.json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output == "out/digest.json: the digest of 2 data folder(s): sets/sst2, sets/mpqa\n"
    written = json.loads(Path("out/digest.json").read_text(encoding="utf-8"))
    assert written == {"sets/mpqa": folder_digest(root / "mpqa"), "sets/sst2": folder_digest(root / "sst2")}
    missing = CliRunner().invoke(app, [*args[:2], "--data", "sets/nope", *args[4:]])
    assert missing.exit_code == 2 and missing.output == "error: data not found: sets/nope\n"


def test_the_command_imports_no_heavy_library(tmp_path):
    """It reruns whenever anything under data/sets changes: it must stay a fraction of a second."""
    from test_fixed_costs import heavy_imports

    make_sets(tmp_path / "sets")
    args = ["data", "digest", "--data", "sets/sst2", "--sets-root", "sets", "--out", "digest.json"]
    imported, output = heavy_imports(args, tmp_path)
    assert imported == set() and "the digest of 2 data folder(s)" in output

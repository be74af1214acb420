"""``egkd data add``: a data set checked, copied under the workspace and tracked by DVC; ``egkd distill --variant``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
TEXT = DATA / "text-classification"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _here(tmp_path, monkeypatch):
    if not (DATA / "glue").is_dir() or not TEXT.is_dir():
        pytest.skip(f"the shared data is not at {DATA}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  max_length: 64\n", encoding="utf-8")


def add(*args: str):
    return runner.invoke(app, ["data", "add", *args])


def test_a_glue_folder_is_copied_and_tracked_by_dvc(tmp_path):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], check=True, env=env)
    result = add(str(DATA / "glue"), "--task", "sst2", "--out", "data/sets/sst2")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "added data/sets/sst2: SST-2/train.tsv, SST-2/dev.tsv",
        "text: 'sentence'; labels: 'label', 2 classes from the GLUE task sst2: 0, 1",
        "rows: train 67,349, dev 872",
        "tracked by data/sets/sst2.dvc: commit it with git (`git add data/sets/sst2.dvc`)",
    ]
    for name in ("train.tsv", "dev.tsv"):
        assert (tmp_path / "data/sets/sst2/SST-2" / name).read_bytes() == (DATA / "glue/SST-2" / name).read_bytes()
    tracked = yaml.safe_load((tmp_path / "data/sets/sst2.dvc").read_text())["outs"][0]
    # the same files give the same .dvc file as the repository's (./setup.sh relies on it)
    assert tracked == yaml.safe_load((REPO / "data/sets/sst2.dvc").read_text())["outs"][0]


def test_own_data_folders_and_files_are_copied_as_they_are(tmp_path):
    result = add(str(TEXT / "trec"), "--out", "sets/trec", "--no-dvc")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "sets/trec").iterdir()) == ["test.csv", "train.csv"]
    assert "tracked by" not in result.output
    # an evaluation set without a training split: its files are parsed in full, and copied
    assert add(str(TEXT / "mpqa"), "--out", "sets/mpqa", "--no-dvc").exit_code == 0
    assert (tmp_path / "sets/mpqa/test.csv").read_bytes() == (TEXT / "mpqa/test.csv").read_bytes()
    # one file is the training split, whatever its name
    assert add(str(TEXT / "sst5" / "dev.jsonl"), "--out", "sets/one", "--no-dvc").exit_code == 0
    assert [p.name for p in (tmp_path / "sets/one").iterdir()] == ["train.jsonl"]


def test_bad_data_is_refused_in_one_line_and_nothing_is_left(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "train.csv").write_text("text,y\ngood,a\nbad,b\n", encoding="utf-8")
    result = add(str(folder), "--out", "sets/bad", "--no-dvc")
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert (
        result.output.startswith("error: ")
        and "train.csv: no column 'label'; the file has columns ['text', 'y']" in result.output
    )
    assert not (tmp_path / "sets").exists() or not any((tmp_path / "sets").iterdir())


def test_an_existing_folder_is_replaced_only_when_asked(tmp_path):
    assert add(str(TEXT / "trec"), "--out", "sets/x", "--no-dvc").exit_code == 0
    again = add(str(TEXT / "mpqa"), "--out", "sets/x", "--no-dvc")
    assert (
        again.exit_code == 2
        and again.output == "error: sets/x exists: add the data under another folder, or pass --replace\n"
    )
    assert add(str(TEXT / "mpqa"), "--out", "sets/x", "--no-dvc", "--replace").exit_code == 0
    assert [p.name for p in (tmp_path / "sets/x").iterdir()] == ["test.csv"]


def test_distill_variant_names_an_entry_of_the_params(tmp_path):
    (tmp_path / "params.yaml").write_text(
        "experiment:\n  methods: [gradient]\n  variants:\n    kd: {cache: gradient, options: {method: none}}\n",
        encoding="utf-8",
    )
    result = runner.invoke(app, ["distill", "--variant", "kd2", "--cache", str(tmp_path), "--out", "s"])
    assert result.exit_code == 2 and result.output == "error: unknown variant 'kd2'; experiment.variants: kd\n"
    result = runner.invoke(app, ["distill", "--variant", "kd", "--cache", str(tmp_path), "--out", "s"])
    assert result.exit_code == 2
    assert (
        result.output
        == "error: no explanation cache in " + str(tmp_path) + " (a cache holds method=<m>/split=<s>/ folders)\n"
    )


def test_a_dev_split_is_held_out_of_data_without_one(tmp_path):
    import pyarrow.parquet as pq

    assert add(str(TEXT / "trec"), "--out", "trec", "--dev-size", "500", "--no-dvc").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "trec").iterdir()) == ["dev.parquet", "test.csv", "train.parquet"]
    train, dev = (pq.read_table(tmp_path / "trec" / f"{n}.parquet").to_pylist() for n in ("train", "dev"))
    assert (len(train), len(dev)) == (4952, 500)
    original = (TEXT / "trec" / "train.csv").read_text(encoding="utf-8")
    assert all(row["text"] in original for row in dev[:20]) and not {r["text"] for r in dev} & {
        r["text"] for r in train[:50]
    }
    # the same seed draws the same rows; a data set with a dev split is refused
    assert add(str(TEXT / "trec"), "--out", "again", "--dev-size", "500", "--no-dvc").exit_code == 0
    assert pq.read_table(tmp_path / "again" / "dev.parquet").to_pylist() == dev
    refused = add(str(TEXT / "sst5"), "--out", "sst5", "--dev-size", "100", "--no-dvc")
    assert refused.exit_code == 2 and "has a dev split already" in refused.output

"""``egkd data add`` reads a data set back as the stages will read it before adding it: what it found, in lines; data
the stages would refuse, refused in one line with nothing added (and nothing replaced); destinations it cannot use,
refused before anything is written. The data settings are options of the command line, lists included."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from stages.cli import app

REPO = Path(__file__).resolve().parents[1]
TEXT = REPO.parent / "shared" / "data" / "text-classification"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("data:\n  max_length: 64\n", encoding="utf-8")


def add(*args: str):
    return runner.invoke(app, ["data", "add", *args])


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


REVIEWS = "reviewer,review,sentiment\nann,great film,positive\nbob,awful plot,negative\ncid,lovely,positive\n"


def test_what_was_found_is_said_with_the_settings_the_stages_need(tmp_path):
    source = write(tmp_path / "reviews.csv", REVIEWS)
    args = ["--label-column-name", "sentiment", "--text-column-names", "review", "--no-dvc"]
    result = add(str(source), "--out", "sets/reviews", *args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "added sets/reviews: train.csv",
        "text: 'review'; labels: 'sentiment', 2 classes from the training split: negative, positive",
        "rows: train 3",
        'the stages read it with these data settings (params.yaml): data.text_column_names: ["review"], '
        "data.label_column_name: sentiment",
    ]
    # a list option repeated, once per entry: the labels in the order given
    args = ["--label-column-name", "sentiment", "--label-names", "positive", "--label-names", "negative", "--no-dvc"]
    result = add(str(source), "--out", "sets/ordered", *args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:3] == [
        "text: 'reviewer', 'review' (detected); labels: 'sentiment', 2 classes from data.label_names: positive, "
        "negative",
        "rows: train 3",
    ]
    # two string columns detected: a sentence-pair task, said with how to name the one text column
    assert result.output.splitlines()[3].startswith("note: two text columns were detected, 'reviewer', 'review'")


def test_an_evaluation_set_and_a_held_out_dev_split_are_read_back():
    result = add(str(TEXT / "mpqa"), "--out", "sets/mpqa", "--no-dvc")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        "text: 'text' (detected); labels: 'label', 2 classes from its files (no training split: an evaluation set, "
        "scored by label name): 0, 1",
        "rows: test 10,603",
    ]
    result = add(str(TEXT / "trec"), "--out", "sets/trec", "--dev-size", "500", "--no-dvc")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1:] == [
        "text: 'text' (detected); labels: 'label', 6 classes from the training split: ABBR, DESC, ENTY, HUM, LOC, NUM",
        "rows: train 4,952, dev 500, test 500",
    ]


BAD_ROWS = [
    ("train.csv", "text,label\ngood,a\n,b\nok,a\n", (), "train.csv:3: empty text in column 'text'"),
    ("train.jsonl", '{"text": "good", "label": 1}\n{"text": null, "label": 0}\n', (), "empty text in column 'text'"),
    ("train.jsonl", '{"text": "a", "label": 1}\n{"text": "b", "label": "1"}\n', (), "one type of label per column"),
    ("train.csv", "id,text,label\n1,a,x\n1,b,y\n", ("--id-column-name", "id"), "duplicate id '1' in column 'id'"),
    ("train.csv", "text,label\na,positive\nb,negative\n", ("--do-regression",), "does not parse as a number"),
    ("dev.csv", "text,label\na,WRONG\n", (), "label 'WRONG' is not in the training split's labels"),
]


@pytest.mark.parametrize(("name", "content", "options", "message"), BAD_ROWS)
def test_rows_the_stages_would_refuse_are_refused_and_nothing_is_replaced(tmp_path, name, content, options, message):
    good = write(tmp_path / "good" / "train.csv", "text,label\nfine,a\nbad,b\n")
    assert add(str(good.parent), "--out", "sets/x", "--no-dvc").exit_code == 0
    folder = tmp_path / "bad"
    if not name.startswith("train."):
        write(folder / "train.csv", "text,label\nfine,a\nbad,b\n")  # a good training split beside a bad dev split
    write(folder / name, content)
    result = add(str(folder), "--out", "sets/x", "--replace", "--no-dvc", *options)
    assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
    assert result.output.startswith("error: ") and message in result.output
    assert str(folder) in result.output  # the user's own file, not the copy
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == ["x"]  # nothing staged is left
    assert (tmp_path / "sets/x/train.csv").read_text(encoding="utf-8") == good.read_text(encoding="utf-8")


def test_a_held_out_dev_split_of_one_class_is_refused_naming_where_it_would_be(tmp_path):
    source = write(tmp_path / "one.csv", "text,label\na,x\nb,y\nc,x\nd,y\n")
    result = add(str(source), "--out", "sets/one", "--dev-size", "1", "--no-dvc")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: sets/one/dev.parquet: every example has the label ")
    assert not (tmp_path / "sets").exists() or not any((tmp_path / "sets").iterdir())


def test_files_not_named_by_their_split_are_refused(tmp_path):
    write(tmp_path / "named" / "trec_train.csv", "text,label\na,x\nb,y\n")
    result = add(str(tmp_path / "named"), "--out", "sets/named", "--no-dvc")
    assert result.exit_code == 2
    assert result.output == (
        f"error: {tmp_path / 'named'}: no train, dev or test file among trec_train.csv: name each file by its split "
        "(train.csv, dev.jsonl, test.parquet...)\n"
    )


def test_destinations_that_cannot_be_used_are_refused_before_anything_is_written(tmp_path):
    source = write(tmp_path / "in" / "train.csv", "text,label\na,x\nb,y\n")
    write(tmp_path / "a-file", "not a folder")
    result = add(str(source), "--out", "a-file/sub", "--no-dvc")
    assert result.exit_code == 2 and result.output.startswith("error: cannot write a-file/sub: Not a directory")
    # a tracked data set that is not checked out is not overwritten unasked
    write(tmp_path / "sets" / "trec.dvc", "outs:\n- md5: 0123\n  path: trec\n")
    result = add(str(source), "--out", "sets/trec", "--no-dvc")
    assert result.exit_code == 2 and result.output == (
        "error: sets/trec.dvc exists (a tracked data set, not checked out: `dvc checkout sets/trec.dvc`): add the "
        "data under another folder, or pass --replace\n"
    )
    assert not (tmp_path / "sets" / "trec").exists()
    # in a DVC repository, a folder outside it is refused up front (DVC could not track it)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q", "ws"], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], check=True, env=env, cwd=tmp_path / "ws")
    os.chdir(tmp_path / "ws")
    outside = tmp_path / "outside"
    result = add(str(source), "--out", str(outside))
    assert result.exit_code == 2 and result.output == (
        f"error: {outside} is outside the workspace, where DVC cannot track it: name a folder inside it "
        "(data/sets/<name>), or pass --no-dvc\n"
    )
    assert not outside.exists()


def test_float_labels_are_said_to_make_a_regression_task(tmp_path):
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.table({"text": ["a b", "c d", "e f"], "label": [0.0, 1.0, 0.5]}), folder / "train.parquet")
    result = add(str(folder), "--out", "sets/pq", "--no-dvc")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[1] == "text: 'text' (detected); labels: 'label', numbers: a regression task"


def test_tracking_asked_for_outside_a_dvc_repository_is_said_not_done(tmp_path):
    source = write(tmp_path / "in" / "train.csv", "text,label\na,x\nb,y\n")
    result = add(str(source), "--out", "sets/y")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == (
        "not tracked: this folder is not a DVC repository's root (run `dvc add` from there)"
    )

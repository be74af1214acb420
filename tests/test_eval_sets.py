"""Evaluation sets (experiment.eval_sets): params, labels mapped by name, `egkd evaluate --sets-root` on real data."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.config import DataParams, EvalSetParams, Params, load_params
from pipeline.errors import EgkdError
from pipeline.evaluate.sets import open_set, training_notes
from pipeline.sources import DataSource
from pipeline.tasks import get_task
from stages.cli import app

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SETS_ROOT = SHARED / "text-classification"  # holds mpqa/test.csv


def test_the_default_sets_are_sst2_dev_its_held_out_training_rows_and_mpqa():
    sets = Params().experiment.eval_sets
    assert sets == {
        "dev": EvalSetParams(split="dev"),
        "heldout": EvalSetParams(split="train", skip=62000),
        "mpqa": EvalSetParams(data="mpqa", split="test"),
    }
    # no stage of the default (4,000) or medium (20,000) profile reads SST-2's training rows from 62,000 on
    assert training_notes(sets, DataParams(train_limit=20000)) == []


def test_eval_sets_load_from_params_and_name_a_bad_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(
        "experiment:\n  eval_sets:\n    tail: {split: train, skip: 10, limit: 5}\n"
        "    trec: {data: trec, text_column_names: [text], label_column_name: label}\n",
        encoding="utf-8",
    )
    sets = load_params(path).experiment.eval_sets
    assert sets == {
        "tail": EvalSetParams(split="train", skip=10, limit=5),
        "trec": EvalSetParams(data="trec", text_column_names=("text",)),
    }
    for text, message in [
        ("    a: {skip: -1}\n", "experiment.eval_sets.a.skip must not be negative, got -1"),
        ("    a: {limit: 0}\n", "experiment.eval_sets.a.limit must be positive, got 0"),
        ("    a: {splt: dev}\n", "unknown params key 'experiment.eval_sets.a.splt'"),
        ("    a: dev\n", "params key 'experiment.eval_sets.a' must be a mapping, got 'dev'"),
        ("    'a/b': {}\n", "experiment.eval_sets: set name 'a/b': use letters, digits"),
    ]:
        path.write_text("experiment:\n  eval_sets:\n" + text, encoding="utf-8")
        with pytest.raises(EgkdError, match=re.escape(message)):
            load_params(path)
    path.write_text("experiment:\n  eval_sets: [dev]\n", encoding="utf-8")
    with pytest.raises(EgkdError, match="'experiment.eval_sets' must be a mapping of names to entries"):
        load_params(path)


def test_a_held_out_set_within_the_teachers_training_rows_is_noted():
    sets = {"tail": EvalSetParams(split="train", skip=100), "dev": EvalSetParams()}
    assert training_notes(sets, DataParams(train_limit=200)) == [
        "note: eval set 'tail' reads the training split from row 100, and the teacher trains on the first 200 rows "
        "(data.train_limit): it is not held out"
    ]
    assert "teacher trains on every row" in training_notes(sets, DataParams(train_limit=None))[0]
    assert training_notes(sets, DataParams(train_limit=100)) == []


def _labels(folder: Path, name: str, text: str, task: str, **chosen) -> list[int | float | None]:
    (folder / name).mkdir(parents=True, exist_ok=True)
    (folder / name / "test.csv").write_text(text, encoding="utf-8")
    source = DataSource(get_task(task), glue="unused")  # the model's task; its own data is not read here
    params = EvalSetParams(data=name, split="test", **chosen)
    return [e.label for e in open_set(name, params, source, DataParams(task=task), folder).load().examples]


def test_a_sets_labels_are_the_tasks_by_name_in_the_tasks_order(tmp_path):
    # MNLI's labels are entailment, neutral, contradiction: not the file's sorted order
    text = "premise,hypothesis,label\np1,h1,contradiction\np2,h2,entailment\np3,h3,neutral\np4,h4, entailment\n"
    assert _labels(tmp_path, "nli", text, "mnli", text_column_names=("premise", "hypothesis")) == [2, 0, 1, 0]
    # SST-2's labels are the names 0 and 1: integers of a CSV file, or strings, are those names
    assert _labels(tmp_path, "sst", "text,label\ngood,1\nbad,0\nfine,1\n", "sst2") == [1, 0, 1]
    assert _labels(tmp_path, "col", "sentence,polarity\ngood,1\nbad,0\n", "sst2", label_column_name="polarity") == [
        1,
        0,
    ]


@pytest.mark.parametrize(
    "name, text, task, message",
    [
        (
            "three",
            "text,label\ngood,1\nbad,2\n",
            "sst2",
            "eval set 'three': {folder}/three/test.csv:3: label '2' is not in the sst2 task's labels ['0', '1']",
        ),
        ("words", "text,label\ngood,positive\nbad,negative\n", "sst2", "label 'positive' is not in the sst2 task"),
        ("blank", "text,label\ngood,1\nbad,0\nfine,\n", "sst2", "blank/test.csv: example test-2 has no label"),
        ("pair", "text,label\ngood,entailment\nbad,not_entailment\n", "qnli", "gives 1 text column(s), the qnli"),
    ],
)
def test_a_bad_set_is_a_one_line_error_naming_the_file_and_row(tmp_path, name, text, task, message):
    with pytest.raises(EgkdError, match=re.escape(message.format(folder=tmp_path))) as caught:
        _labels(tmp_path, name, text, task)
    assert "\n" not in str(caught.value)


def test_a_set_needs_its_folder_and_examples_after_the_skip(tmp_path):
    source = DataSource(get_task("sst2"), glue=str(SHARED / "glue"))
    params = DataParams()
    with pytest.raises(EgkdError, match=re.escape("eval set 'mpqa': data folder not found: ")):
        open_set("mpqa", EvalSetParams(data="mpqa", split="test"), source, params, tmp_path)
    with pytest.raises(EgkdError, match="eval set 'mpqa' reads the data folder 'mpqa': name the folder"):
        open_set("mpqa", EvalSetParams(data="mpqa", split="test"), source, params, None)
    beyond = open_set("late", EvalSetParams(split="dev", skip=872), source, params, None)
    with pytest.raises(EgkdError, match=r"eval set 'late': .*dev.tsv has 872 examples, none after skipping 872"):
        beyond.load()
    missing = open_set("test", EvalSetParams(split="test"), source, params, None)
    with pytest.raises(EgkdError, match=r"^eval set 'test': sst2 test file not found: "):
        missing.load()
    # dev_limit caps the task's dev split, the skipped examples included; the set's own limit counts after them
    capped = open_set("dev", EvalSetParams(split="dev", skip=3, limit=10), source, DataParams(dev_limit=8), None)
    assert [e.example_id for e in capped.load().examples] == [f"dev-{i}" for i in range(3, 8)]
    tail = open_set("tail", EvalSetParams(split="train", skip=67340), source, DataParams(train_limit=10), None)
    assert [e.example_id for e in tail.load().examples] == [f"train-{i}" for i in range(67340, 67349)]


def _evaluate(model: Path, out: Path, params: Path, *options: str):
    args = [
        "evaluate",
        "--model",
        str(model),
        "--data",
        str(SHARED / "glue"),
        "--out",
        str(out),
        "--params",
        str(params),
    ]
    return CliRunner().invoke(app, [*args, *options])


def _tsv_labels(split: str) -> list[int]:
    lines = (SHARED / "glue" / "SST-2" / f"{split}.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [int(line.split("\t")[1]) for line in lines]


def test_evaluate_scores_every_set_on_the_real_data(tmp_path, tiny_model_dir):
    """The default sets with a tiny model: dev is the evaluation's own examples, heldout SST-2's training rows from
    62,000, MPQA's 10,603 phrases with their 0/1 labels as SST-2's classes; each scored with its task's metrics."""
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  dev_limit: 40\n", encoding="utf-8")
    out = tmp_path / "teacher.json"  # no cache: what the teacher's evaluation stage runs
    result = _evaluate(tiny_model_dir, out, params, "--sets-root", str(SETS_ROOT))
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    sets = report["sets"]
    assert list(sets) == ["dev", "heldout", "mpqa"]
    dev = sets["dev"]
    assert dev["metrics"] == report["metrics"] and (dev["split"], dev["skip"]) == ("dev", 0)
    ids = report["predictions"]["example_ids"]
    assert dev["predictions"] == {
        "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "classes": report["predictions"]["classes"],
        "labels": report["predictions"]["labels"],
    }
    heldout = sets["heldout"]
    assert (heldout["split"], heldout["skip"], heldout["metrics"]["count"]) == ("train", 62000, 5349)
    assert heldout["source"].endswith("SST-2/train.tsv")
    assert heldout["predictions"]["labels"] == _tsv_labels("train")[62000:]
    held_ids = "\n".join(f"train-{i}" for i in range(62000, 67349))
    assert heldout["predictions"]["ids_sha256"] == hashlib.sha256(held_ids.encode()).hexdigest()
    mpqa = sets["mpqa"]
    rows = (SETS_ROOT / "mpqa" / "test.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert mpqa["predictions"]["labels"] == [int(row.rsplit(",", 1)[1]) for row in rows]
    assert mpqa["metrics"]["count"] == 10603 and mpqa["source"].endswith("mpqa/test.csv")
    for entry in sets.values():
        classes, labels = (np.array(entry["predictions"][k]) for k in ("classes", "labels"))
        assert entry["metrics"]["main"] == entry["metrics"]["values"][0][1] == np.mean(classes == labels)
    assert [name for name, _ in mpqa["metrics"]["values"]] == ["accuracy", "macro_f1", "f1"]
    assert [name for name, _ in heldout["metrics"]["values"]] == ["accuracy"]
    assert "set mpqa (test of " in result.stdout and "(10603 examples)" in result.stdout
    # the per-example lists stay one line each
    assert len(out.read_text().splitlines()) < 150
    # without --sets-root the report is as before: no sets
    plain = tmp_path / "plain.json"
    assert _evaluate(tiny_model_dir, plain, params).exit_code == 0
    assert "sets" not in json.loads(plain.read_text())
    assert json.loads(plain.read_text())["predictions"] == report["predictions"]


def test_evaluate_refuses_a_missing_set_folder_in_one_line(tmp_path, tiny_model_dir):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  dev_limit: 4\n", encoding="utf-8")
    result = _evaluate(tiny_model_dir, tmp_path / "e.json", params, "--sets-root", str(tmp_path / "sets"))
    assert result.exit_code == 2
    assert result.stderr == f"error: eval set 'mpqa': data folder not found: {tmp_path / 'sets' / 'mpqa'}\n"
    assert not (tmp_path / "e.json").exists()


def test_a_set_read_at_its_start_is_the_same_as_the_evaluation(tmp_path, tiny_model_dir):
    """A set of the dev split with a skip is read and scored itself; its examples are the evaluation's after them."""
    params = tmp_path / "params.yaml"
    params.write_text(
        "data:\n  dev_limit: 30\nexperiment:\n  eval_sets:\n    late: {split: dev, skip: 10}\n", encoding="utf-8"
    )
    out = tmp_path / "e.json"
    assert _evaluate(tiny_model_dir, out, params, "--sets-root", str(tmp_path)).exit_code == 0
    report = json.loads(out.read_text())
    late = report["sets"]["late"]
    assert late["metrics"]["count"] == 20 and late["predictions"]["labels"] == _tsv_labels("dev")[10:30]
    assert late["predictions"]["classes"] == report["predictions"]["classes"][10:]

"""Your own data through the whole command line: finetune, explain (every family), cache verify, distill (every
objective, with views), evaluate on the test file, and report; on real TREC questions (CSV, six string labels)
and on a sentence-pair CSV of three classes, with a tiny seeded teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cache.store import read_cache
from pipeline.explain import REGISTRY
from pipeline.sources import task_of
from stages.cli import app

runner = CliRunner()
TREC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text-classification" / "trec"
METHODS = sorted(m.value for m in REGISTRY)
PAIR_LABELS = ("contradiction", "entailment", "neutral")


def egkd(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def pair_data(folder: Path) -> Path:
    """A folder of pair splits (CSV) with three string labels and an id column."""
    words = ["the film", "a movie", "the plot", "this story", "the acting", "a scene"]
    folder.mkdir(parents=True)
    for split, rows in (("train", 36), ("test", 12)):
        lines = ["pair_id,sentence1,sentence2,label"]
        for i in range(rows):
            lines.append(f"{split[:2]}{i},{words[i % 6]} is good,{words[(i + 1) % 6]} is bad,{PAIR_LABELS[i % 3]}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def trec_run(tmp_path_factory, tiny_model_dir) -> Path:
    """TREC's first 48 questions: a teacher, and a cache of every family (train 48, test 24)."""
    root = tmp_path_factory.mktemp("trec")
    egkd("finetune", "--model", tiny_model_dir, "--data", TREC, "--limit", "48", "--epochs", "1", "--out", root / "t")
    for method in METHODS:
        for split, limit in (("train", "48"), ("test", "24")):
            egkd(
                "explain",
                *("--teacher", root / "t", "--data", TREC, "--method", method, "--split", split, "--limit", limit),
                *("--out", root / "cache" / f"trec-{method}.parquet"),
            )
    return root


def test_a_teacher_of_your_own_labels(trec_run) -> None:
    config = json.loads((trec_run / "t" / "config.json").read_text())
    names = ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"]
    assert config["id2label"] == {str(i): name for i, name in enumerate(names)}
    assert json.loads((trec_run / "t" / "metrics.json").read_text())["dev"] is None  # TREC has no dev file
    assert json.loads((trec_run / "t" / "egkd_model.json").read_text())["task"] == "trec"


@pytest.mark.parametrize("method", METHODS)
def test_the_cache_records_the_task_it_can_be_rebuilt_from(trec_run, method) -> None:
    assert "OK: 2 partition(s)" in egkd("cache", "verify", trec_run / "cache" / f"trec-{method}.parquet")
    meta, rows = read_cache(trec_run / "cache" / f"trec-{method}.parquet", method, "test")
    assert (meta.task, meta.num_labels, meta.text_columns) == ("trec", 6, ("text",))
    task = task_of(meta)
    assert task.labels == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM") and not task.is_pair and not task.is_glue
    assert [r.example_id for r in rows[:2]] == ["test-0", "test-1"] and rows[0].teacher_logits.shape == (6,)


@pytest.mark.parametrize("method", ["none", *METHODS])
def test_every_objective_distills_your_own_data_and_scores_on_the_test_file(trec_run, method, tmp_path) -> None:
    cache = trec_run / "cache" / f"trec-{'gradient' if method == 'none' else method}.parquet"
    student = tmp_path / "s"
    egkd(
        "distill",
        *("--cache", cache, "--view-cache", trec_run / "cache", "--method", method, "--student", "base"),
        *("--layers", "1", "--epochs", "1", "--min-steps", "0", "--batch-size", "16", "--views", "1"),
        *("--out", student),
    )
    assert json.loads((student / "config.json").read_text())["id2label"]["3"] == "HUM"
    out = egkd("evaluate", "--model", student, "--data", TREC, "--split", "test", "--out", tmp_path / "e.json")
    assert out.startswith("trec test: accuracy ") and "macro_f1" in out and "(500 examples)" in out
    report = json.loads((tmp_path / "e.json").read_text())
    assert [name for name, _ in report["metrics"]["values"]] == ["accuracy", "macro_f1"]  # six classes: no binary F1
    assert len(report["predictions"]["classes"]) == 500


def test_a_pair_task_of_three_classes_through_the_whole_flow(tmp_path, tiny_model_dir) -> None:
    data = pair_data(tmp_path / "nli")
    common = ("--data", data, "--id-column-name", "pair_id")
    egkd("finetune", "--model", tiny_model_dir, *common, "--epochs", "1", "--out", tmp_path / "t")
    cache = tmp_path / "cache" / "nli-gradient.parquet"
    for split in ("train", "test"):
        egkd("explain", "--teacher", tmp_path / "t", *common, "--split", split, "--out", cache)
    meta, rows = read_cache(cache, "gradient", "train")
    assert meta.text_columns == ("sentence1", "sentence2") and meta.label_names == PAIR_LABELS
    assert rows[0].example_id == "train-tr0" and rows[0].text_b is not None and 1 in rows[0].segments
    egkd("distill", "--cache", cache, "--student", "base", "--layers", "1", "--min-steps", "0", "--out", tmp_path / "s")
    out = egkd("evaluate", "--model", tmp_path / "s", *common, "--split", "test", "--cache", cache)
    assert out.startswith("nli test: accuracy ") and "(12 examples)" in out and "agreement (gradient)" in out


def test_a_cache_of_one_file_is_refused_for_another(trec_run, tmp_path) -> None:
    """The dataset fingerprint covers the files and the column settings: resuming with another is refused."""
    other = tmp_path / "trec"
    other.mkdir()
    train = (TREC / "train.csv").read_text(encoding="utf-8").splitlines()
    (other / "train.csv").write_text("\n".join([train[0], *reversed(train[1:])]) + "\n", encoding="utf-8")
    result = runner.invoke(
        app,
        [
            *("explain", "--teacher", str(trec_run / "t"), "--data", str(other), "--split", "train", "--limit", "48"),
            *("--out", str(trec_run / "cache" / "trec-gradient.parquet")),
        ],
    )
    assert result.exit_code == 2 and "cache field 'dataset_fingerprint' differs" in result.stderr


def test_a_teacher_whose_labels_are_in_another_order_is_refused_before_it_runs(trec_run, tmp_path) -> None:
    """The order a model outputs its classes in is its config's; data naming the same classes in another order
    (here, given by data.label_names) would read its predictions as the wrong labels."""
    order = ["NUM", "LOC", "HUM", "ENTY", "DESC", "ABBR"]
    given = [arg for name in order for arg in ("--label-names", name)]
    for command in (
        ["explain", "--teacher", trec_run / "t", "--method", "gradient", "--limit", "8", "--out", tmp_path / "c"],
        ["evaluate", "--model", trec_run / "t", "--split", "test", "--out", tmp_path / "e.json"],
    ):
        result = runner.invoke(app, [str(a) for a in [*command, "--data", TREC, *given]])
        assert result.exit_code == 2 and result.output.count("\n") == 1, result.output
        assert "outputs its labels in the order ['ABBR', 'DESC', 'ENTY', 'HUM', 'LOC', 'NUM']" in result.output
    assert not (tmp_path / "c").exists() and not (tmp_path / "e.json").exists()

"""A transfer set (``distill.gold_labels``): training sentences the student learns from the teacher alone."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import small_distill
from distill_cache import tiny_cache
from typer.testing import CliRunner

from pipeline import losses
from pipeline.cache.project import StudentExample, collate_students
from pipeline.config import EvaluateParams
from pipeline.distill.inputs import with_gold_labels
from pipeline.distill.job import DistillRequest, distill
from pipeline.errors import EgkdError
from pipeline.models import load_classifier
from stages.cli import app

FAST = small_distill()


# --- the loss ------------------------------------------------------------------------------------------


def test_transfer_loss_exact_values_on_a_hand_made_batch():
    kd = torch.tensor([1.0, 2.0, 3.0])
    ce = torch.tensor([0.5, float("nan"), 4.0])  # the unlabelled example's entry is never read
    labelled = torch.tensor([True, False, True])
    # (0.25 * 1 + 0.75 * 0.5) + 2 + (0.25 * 3 + 0.75 * 4) = 0.625 + 2 + 3.75, over three examples
    assert losses.transfer_loss(kd, ce, labelled, alpha=0.25).item() == 2.125


def test_transfer_loss_of_a_fully_labelled_batch_is_the_usual_mix():
    kd, ce = torch.tensor([1.0, 2.0, 3.0, 6.0]), torch.tensor([0.5, 1.5, 4.0, 2.0])
    every = torch.ones(4, dtype=torch.bool)
    assert losses.transfer_loss(kd, ce, every, alpha=0.5).item() == 0.5 * 3.0 + 0.5 * 2.0
    assert losses.transfer_loss(kd, ce, ~every, alpha=0.5).item() == 3.0  # no gold label: KD alone


@pytest.mark.parametrize("classes", [1, 3], ids=["regression", "classification"])
def test_per_example_terms_average_to_the_batch_losses(classes):
    generator = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, classes, generator=generator), torch.randn(5, classes, generator=generator)
    labels = torch.randn(5, generator=generator) if classes == 1 else torch.tensor([0, 2, 1, 1, 0])
    kd = losses.kd_per_example(student, teacher, 2.0, True)
    assert kd.shape == (5,)
    torch.testing.assert_close(kd.mean(), losses.kd_loss(student, teacher, 2.0, True))
    torch.testing.assert_close(losses.ce_per_example(student, labels).mean(), losses.ce_loss(student, labels))


# --- the batch -----------------------------------------------------------------------------------------


def _example(example_id: str, label: int | None) -> StudentExample:
    ids = np.array([101, 7, 102])
    return StudentExample(
        example_id=example_id, label=label, input_ids=ids, token_type_ids=np.zeros(3, np.int64), special_mask=np.array([True, False, True]), attribution=np.zeros(3, np.float32),
        teacher_logits=np.zeros(2, np.float32),
    )  # fmt: skip


def test_a_batch_marks_the_examples_without_a_gold_label():
    batch = collate_students([_example("a", 1), _example("b", None), _example("c", 0)], 0)
    assert batch.labels is not None and batch.labels.tolist() == [1, 0, 0]  # 0: a placeholder
    assert batch.labelled is not None and batch.labelled.tolist() == [True, False, True]
    full = collate_students([_example("a", 1), _example("c", 0)], 0)
    assert full.labels is not None and full.labels.tolist() == [1, 0] and full.labelled is None
    none = collate_students([_example("a", None), _example("b", None)], 0)
    assert none.labels is None and none.labelled is not None and none.labelled.tolist() == [False, False]


def test_with_gold_labels_keeps_the_first_ones(cache):
    from pipeline.distill.inputs import load_rows

    _, rows, _ = load_rows(cache, "gradient")
    examples = rows[:4]
    assert [e.label for e in examples] == [0, 0, 1, 0]  # SST-2's first training sentences
    assert [e.label for e in with_gold_labels(examples, 3)] == [0, 0, 1, None]
    assert [e.label for e in with_gold_labels(examples, None)] == [0, 0, 1, 0]
    assert [e.label for e in with_gold_labels(examples, 0)] == [None] * 4
    with pytest.raises(EgkdError, match="distill.gold_labels is 5 but the cache has 4 training sentences"):
        with_gold_labels(examples, 5)


# --- stage two -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory, glue_dir) -> Path:
    """A cache of every method (train 24, dev 12) from a tiny teacher."""
    return tiny_cache(tmp_path_factory.mktemp("transfer"), glue_dir)


@pytest.fixture(scope="module")
def relabelled(cache, tmp_path_factory) -> Path:
    """A copy of ``cache`` whose gradient train rows from the ninth on have the other gold label."""
    from pipeline.cache.store import part_path, read_part, write_part

    copy = tmp_path_factory.mktemp("relabelled") / "cache"
    shutil.copytree(cache, copy)
    part = read_part(part_path(copy, "gradient", "train", 0))
    rows = [r if i < 8 else dataclasses.replace(r, label=1 - int(r.label)) for i, r in enumerate(part.rows)]
    write_part(part.path, part.meta, 0, rows, truncated=0)
    return copy


def run(cache: Path, out: Path, method: str = "gradient", epochs: int = 2, **changes):
    train = dataclasses.replace(FAST.train, epochs=epochs)
    params = dataclasses.replace(FAST, method=method, train=train, **changes)
    return distill(DistillRequest(cache=cache, out=out, params=params, evaluate=EvaluateParams()))


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_classifier(str(out), 2).state_dict()


def same(a: Path, b: Path) -> bool:
    first, second = weights(a), weights(b)
    return all(torch.equal(first[k], second[k]) for k in first)


def test_the_transfer_set_is_learnt_from_the_teacher_alone(cache, relabelled, tmp_path):
    report = run(cache, tmp_path / "kept", gold_labels=8)
    run(relabelled, tmp_path / "relabelled", gold_labels=8)
    assert same(tmp_path / "kept", tmp_path / "relabelled")  # the hidden labels were never read
    run(cache, tmp_path / "all")
    run(relabelled, tmp_path / "all-relabelled")
    assert not same(tmp_path / "all", tmp_path / "all-relabelled")  # but they are read without gold_labels
    assert not same(tmp_path / "kept", tmp_path / "all")
    assert (report.train_examples, report.gold_labels) == (24, 8)
    assert any("8 of the 24 training sentences keep their gold label" in note for note in report.notes)
    assert json.loads((tmp_path / "kept" / "metrics.json").read_text())["gold_labels"] == 8
    assert "24 train examples, 8 of them with their gold label" in (tmp_path / "kept" / "README.md").read_text()


def test_gold_labels_for_every_sentence_is_the_usual_run_exactly(cache, tmp_path):
    report = run(cache, tmp_path / "every", gold_labels=24)
    run(cache, tmp_path / "default")
    assert same(tmp_path / "every", tmp_path / "default")
    assert report.gold_labels == 24 and not any("gold label" in note for note in report.notes)


def test_no_gold_label_at_all_trains_on_kd_alone(cache, tmp_path):
    report = run(cache, tmp_path / "s", gold_labels=0, method="none", epochs=1)
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert report.gold_labels == 0 and all(r["ce"] == 0.0 and r["loss"] == pytest.approx(r["kd"]) for r in log)


def test_the_cli_refuses_more_gold_labels_than_sentences_in_one_line(cache, tmp_path):
    args = ["distill", "--cache", str(cache), "--out", str(tmp_path / "s"), "--params", "params.yaml"]
    for value, message in (
        ("25", "error: distill.gold_labels is 25 but the cache has 24 training sentences"),
        ("-1", "error: gold_labels must not be negative, got -1"),
    ):
        result = CliRunner().invoke(app, [*args, "--gold-labels", value])
        assert result.exit_code == 2 and "Traceback" not in result.output
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "s").exists()


def test_gold_labels_loads_from_params_and_a_variant(tmp_path):
    from pipeline.config import load_params

    path = tmp_path / "params.yaml"
    path.write_text(
        "distill:\n  gold_labels: 2000\nexperiment:\n  methods: [gradient]\n"
        "  variants: {kd-transfer: {cache: gradient, options: {method: none, gold_labels: 500}}}\n",
        encoding="utf-8",
    )
    params = load_params(path)
    assert params.distill.gold_labels == 2000 and params.experiment.variants[0].options.get("gold_labels") == 500
    path.write_text("distill:\n  gold_labels: -3\n", encoding="utf-8")
    with pytest.raises(EgkdError, match="distill.gold_labels must not be negative, got -3"):
        load_params(path)

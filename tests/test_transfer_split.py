"""The transfer split: unlabelled sentences from a text file, explained by stage one, learnt in stage two."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_tiny_model_dir
from distill_cache import build_cache
from test_explain_run import METHODS, request
from test_transfer_set import run, same
from typer.testing import CliRunner

from pipeline.cache.store import part_path, read_cache, read_part, write_part
from pipeline.config import load_params
from pipeline.data import load_dataset, load_text
from pipeline.errors import EgkdError
from pipeline.explain.run import run_explain
from pipeline.methods import Method
from pipeline.tasks import get_task
from stages.cli import app

SST2, QNLI = get_task("sst2"), get_task("qnli")


# --- reading the text file -----------------------------------------------------------------------------


def test_a_text_file_gives_unlabelled_examples_with_ids_from_their_line(tmp_path):
    path = tmp_path / "more.txt"
    path.write_text("a gripping film\n\n  \nflat and dull\nwarm\n", encoding="utf-8")
    data = load_text(path, SST2)
    assert [(e.example_id, e.split, e.text_a, e.text_b, e.label) for e in data.examples] == [
        ("transfer-0", "transfer", "a gripping film", None, None),
        ("transfer-3", "transfer", "flat and dull", None, None),
        ("transfer-4", "transfer", "warm", None, None),
    ]
    assert data.split == "transfer" and data.source == str(path)
    assert data.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()
    assert [e.example_id for e in load_text(path, SST2, limit=2).examples] == ["transfer-0", "transfer-3"]


def test_a_pair_task_reads_two_texts_per_line(tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("what is it?\tit is a cat.\nwho?\tnobody.\n", encoding="utf-8")
    examples = load_text(path, QNLI).examples
    assert [(e.text_a, e.text_b, e.label) for e in examples] == [
        ("what is it?", "it is a cat.", None),
        ("who?", "nobody.", None),
    ]


@pytest.mark.parametrize(
    "task, content, message",
    [
        (SST2, "fine\nbad\tworse\n", "more.txt:2: expected one text and no tab per line (sst2), found 2 field(s)"),
        (QNLI, "a\tb\nonly one\n", "more.txt:2: expected two texts separated by a tab per line (qnli), found 1"),
        (QNLI, "a\t \n", "more.txt:1: an empty text (qnli expects two texts separated by a tab per line)"),
        (SST2, "\n \n", "more.txt: no examples (one per line)"),
    ],
    ids=["tab", "no-tab", "empty-text", "empty-file"],
)
def test_a_malformed_text_file_is_refused_naming_the_line(tmp_path, task, content, message):
    path = tmp_path / "more.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EgkdError, match=message.replace("(", r"\(").replace(")", r"\)").replace("?", r"\?")):
        load_text(path, task)


def test_a_missing_or_binary_text_file_is_refused(tmp_path):
    with pytest.raises(EgkdError, match="text file not found: "):
        load_text(tmp_path / "none.txt", SST2)
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine\ncaf\xe9\n")
    with pytest.raises(EgkdError, match=r"latin1.txt:2: bytes that are not UTF-8"):
        load_text(path, SST2)


# --- stage one -----------------------------------------------------------------------------------------


def transfer_request(teacher: Path, out: Path, method: Method = Method.GRADIENT, **changes):
    """``test_explain_run``'s request (24 rows, parts of 8, batches of 8) for the transfer split."""
    return dataclasses.replace(request(teacher, Path("unused"), out, method, **changes), split="transfer", data=None)


def dev_sentences(glue_dir: Path, path: Path, count: int) -> Path:
    """The first ``count`` SST-2 dev sentences as a text file, one per line."""
    path.write_text("".join(e.text_a + "\n" for e in load_dataset(glue_dir, SST2, "dev", count).examples))
    return path


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.value)
def test_stage_one_explains_a_text_file_as_it_explains_the_same_sentences(tiny_model_dir, glue_dir, tmp_path, method):
    text = dev_sentences(glue_dir, tmp_path / "dev.txt", 24)
    run_explain(request(tiny_model_dir, glue_dir, tmp_path / "glue", method))
    summary = run_explain(transfer_request(tiny_model_dir, tmp_path / "text", method, text=text))
    assert summary.rows == 24 and summary.partition.name == "split=transfer"
    meta, rows = read_cache(tmp_path / "text", method.value, "transfer")
    _, reference = read_cache(tmp_path / "glue", method.value, "dev")
    assert [r.example_id for r in rows] == [f"transfer-{i}" for i in range(24)]
    assert all(r.label is None for r in rows) and all(r.label is not None for r in reference)
    assert (meta.split, meta.dataset_source, meta.num_examples) == ("transfer", str(text), 24)
    for row, ref in zip(rows, reference, strict=True):
        assert np.array_equal(row.input_ids, ref.input_ids)
        assert np.array_equal(row.teacher_logits, ref.teacher_logits)
        if method == Method.GRADIENT:  # no random draws: the same map to the last bit (others draw by example id)
            assert np.array_equal(row.attribution, ref.attribution)


def test_a_rerun_on_the_same_file_resumes_and_one_on_a_changed_file_is_refused(tiny_model_dir, glue_dir, tmp_path):
    text = dev_sentences(glue_dir, tmp_path / "dev.txt", 12)
    out = tmp_path / "c"
    assert len(run_explain(transfer_request(tiny_model_dir, out, text=text)).computed) == 2
    assert run_explain(transfer_request(tiny_model_dir, out, text=text)).computed == ()
    text.write_text(text.read_text() + "one more sentence\n")
    with pytest.raises(EgkdError, match="cache field 'dataset_fingerprint' differs.*pass --overwrite"):
        run_explain(transfer_request(tiny_model_dir, out, text=text))
    summary = run_explain(transfer_request(tiny_model_dir, out, text=text, overwrite=True))
    assert summary.rows == 13 and len(summary.computed) == 2  # parts of 8: the appended line is in part 2


def test_stage_one_refuses_a_text_file_for_another_split_and_the_transfer_split_without_one(
    tiny_model_dir, glue_dir, tmp_path
):
    text = dev_sentences(glue_dir, tmp_path / "dev.txt", 4)
    with pytest.raises(EgkdError, match="--text is read into the transfer split only, not dev"):
        run_explain(request(tiny_model_dir, glue_dir, tmp_path / "c", text=text))
    with pytest.raises(EgkdError, match="the transfer split is read from a text file of unlabelled examples"):
        run_explain(transfer_request(tiny_model_dir, tmp_path / "c"))
    with pytest.raises(EgkdError, match="the dev split is read from the data: pass --data"):
        run_explain(dataclasses.replace(request(tiny_model_dir, glue_dir, tmp_path / "c"), data=None))


def test_the_cli_explains_a_text_file_without_glue_data(tiny_model_dir, glue_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: defaults
    text = dev_sentences(glue_dir, tmp_path / "dev.txt", 6)
    base = ["explain", "--teacher", str(tiny_model_dir), "--task", "sst2", "--out", str(tmp_path / "c")]
    result = CliRunner().invoke(app, [*base, "--text", str(text)])
    assert result.exit_code == 0, result.output
    assert "6 of 6 rows" in result.output and "split=transfer" in result.output
    for extra, message in (
        (["--split", "dev", "--text", str(text)], "error: --text is read into the transfer split only, not dev"),
        (["--split", "transfer"], "error: the transfer split is read from a text file of unlabelled examples"),
        (["--text", str(tmp_path / "none.txt")], "error: text file not found: "),
    ):
        result = CliRunner().invoke(app, [*base, *extra])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(message), result.output


# --- stage two -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def caches(tmp_path_factory, glue_dir) -> tuple[Path, Path]:
    """A cache of 24 training sentences, and a copy whose sentences 9-24 are its transfer split instead."""
    root = tmp_path_factory.mktemp("transfer-split")
    teacher = make_tiny_model_dir(root / "teacher", seed=0)
    make_tiny_model_dir(root / "base", seed=1)
    whole = build_cache(root / "whole", teacher, root / "base", glue_dir)
    split = build_cache(root / "split", teacher, root / "base", glue_dir)
    for method in Method:
        part = read_part(part_path(whole, method.value, "train", 0))
        meta = dataclasses.replace(part.meta, num_examples=8)
        write_part(part_path(split, method.value, "train", 0), meta, 0, part.rows[:8], truncated=0)
        moved = [dataclasses.replace(r, split="transfer", label=None) for r in part.rows[8:]]
        meta = dataclasses.replace(part.meta, split="transfer", num_examples=16)
        write_part(part_path(split, method.value, "transfer", 0), meta, 0, moved, truncated=0)
    return whole, split


@pytest.mark.parametrize("method", ["none", *(m.value for m in Method)])
def test_the_transfer_split_trains_as_unlabelled_training_sentences(caches, tmp_path, method):
    whole, split = caches
    run(whole, tmp_path / "hidden", method=method, epochs=1, gold_labels=8)
    report = run(split, tmp_path / "transfer", method=method, epochs=1, transfer=True)
    assert same(tmp_path / "hidden", tmp_path / "transfer")
    assert (report.train_examples, report.gold_labels, report.transfer_examples) == (24, 8, 16)
    assert any("16 sentences of the cache's transfer split" in note for note in report.notes)
    metrics = json.loads((tmp_path / "transfer" / "metrics.json").read_text())
    assert (metrics["train_examples"], metrics["gold_labels"], metrics["transfer_examples"]) == (24, 8, 16)
    run(split, tmp_path / "without", method=method, epochs=1)
    assert not same(tmp_path / "without", tmp_path / "transfer")  # off by default


def test_stage_two_refuses_a_missing_or_mismatched_transfer_split(caches, tmp_path):
    whole, split = caches
    with pytest.raises(
        EgkdError, match="distill.transfer is set but cache .* has no transfer split for method gradient"
    ):
        run(whole, tmp_path / "s", transfer=True)
    part = read_part(part_path(split, "gradient", "transfer", 0))
    write_part(part.path, dataclasses.replace(part.meta, method_params='{"other": 1}'), 0, part.rows, truncated=0)
    try:
        with pytest.raises(EgkdError, match=r"\(transfer vs train partition\): cache field 'method_params' differs"):
            run(split, tmp_path / "s", transfer=True)
    finally:
        write_part(part.path, part.meta, 0, part.rows, truncated=0)
    assert not (tmp_path / "s").exists()


def test_transfer_loads_from_params_and_a_variant_either_way(tmp_path):
    """A variant's `transfer: false` turns off `distill.transfer: true` (dvc.yaml passes it as --no-transfer)."""
    path = tmp_path / "params.yaml"
    variant = "kd-transfer: {cache: gradient, options: {method: none, transfer: %s}}"
    path.write_text(f"experiment:\n  methods: [gradient]\n  variants: {{{variant % 'true'}}}\n", encoding="utf-8")
    params = load_params(path)
    assert params.distill.transfer is False and params.experiment.variants[0].options.get("transfer") is True
    assert params.experiment.variants[0].options.apply(params.distill).transfer is True
    path.write_text(
        f"distill:\n  transfer: true\nexperiment:\n  methods: [gradient]\n  variants: {{{variant % 'false'}}}\n",
        encoding="utf-8",
    )
    params = load_params(path)
    assert params.experiment.variants[0].options.apply(params.distill).transfer is False

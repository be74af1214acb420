"""Every encoder architecture through the whole command line, as a teacher and as a student.

For each architecture (tests/tiny_models.py: a tiny seeded random classifier with a tokenizer of its own kind,
trained offline) and each task kind, a single text (real TREC questions: CSV, six string labels) and a pair (real
QNLI in its GLUE folder), the teacher is fine-tuned, explained with every family, its caches verified, students
distilled with every objective and the view term, evaluated with explanation agreement, and reported. The
student side: the first k layers of the teacher itself, and a student of another architecture and tokenizer,
whose maps are re-projected through character offsets.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_models import ARCHITECTURES, QNLI, TREC, make_tiny_architecture
from typer.testing import CliRunner

from pipeline.cache.store import read_cache
from pipeline.config import ExplainParams, GradientParams
from pipeline.data import Example
from pipeline.encoding import collate, encode
from pipeline.errors import EgkdError
from pipeline.explain import REGISTRY
from pipeline.explain.base import make_explainer
from pipeline.methods import Method
from pipeline.models import keep_layers, load_classifier, load_tokenizer, takes_token_types
from pipeline.report.heatmaps import teacher_row
from stages.cli import app

runner = CliRunner()
METHODS = sorted(m.value for m in REGISTRY)
OBJECTIVES = ("none", *METHODS)
TASKS = {  # the data options, the split explained beside train (and evaluated on), its size
    "single": (("--data", TREC), "test", 500),
    "pair": (("--data", QNLI, "--task", "qnli", "--max-length", "48"), "dev", 1000),
}
TRAIN, HELD_OUT = "24", "8"
SENTENCES = [  # of different lengths: the batch is padded
    ("What is the capital of Peru ?", "Lima is the capital of Peru ."),
    ("Who wrote it ?", "The film was written by two brothers in a year ."),
    ("How far is the moon from the earth and how long does light take ?", "About a second ."),
]


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """architecture -> a tiny random 3-label classifier of it (made on first use)."""
    made: dict[str, Path] = {}

    def get(architecture: str) -> Path:
        if architecture not in made:
            made[architecture] = make_tiny_architecture(
                architecture, tmp_path_factory.mktemp(architecture) / "m", num_labels=3
            )
        return made[architecture]

    return get


def batch_of(tokenizer, pairs: bool):
    examples = [Example(f"e{i}", "dev", a, b if pairs else None, 0) for i, (a, b) in enumerate(SENTENCES)]
    return encode(tokenizer, examples, 64), collate(encode(tokenizer, examples, 64), tokenizer.pad_token_id)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_padded_batch_explains_as_each_example_alone(bases, architecture) -> None:
    """Every family's forwards (ready SDPA masks, token type ids only where taken) give each example's own logits,
    and a pair's second text gets its own segment, whatever the tokenizer's token type ids say."""
    tokenizer, model = load_tokenizer(str(bases(architecture))), load_classifier(str(bases(architecture)), 3).eval()
    items, batch = batch_of(tokenizer, pairs=True)
    assert takes_token_types(model) == (architecture not in ("distilbert", "modernbert"))
    alone = torch.cat([model(**collate([item], tokenizer.pad_token_id).model_inputs(model)).logits for item in items])
    params = ExplainParams()
    for method in Method:
        explanation = make_explainer(method, model, params, tokenizer.mask_token_id).explain(batch)
        torch.testing.assert_close(explanation.logits, alone, atol=1e-5, rtol=1e-4)
        assert not explanation.attribution[batch.special_mask].any()
    for item in items:
        assert set(item.segments[~item.special_mask].tolist()) == {0, 1}
        assert item.segments[item.special_mask].tolist() == [-1] * int(item.special_mask.sum())


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_token_spans_cover_each_word_without_its_spaces(bases, architecture) -> None:
    """Whatever the tokenizer (WordPiece, byte-level BPE with or without trimmed offsets, sentencepiece), a token's
    span is the characters of its own text it stands for, without spaces; together they cover every other one."""
    tokenizer = load_tokenizer(str(bases(architecture)))
    examples = [Example("a", "dev", "  What  is the  Daleks' weak-ness ?", "Their one .  ", 0)]
    (item,) = encode(tokenizer, examples, 64)
    texts = (examples[0].text_a, examples[0].text_b)
    covered: tuple[set[int], set[int]] = (set(), set())
    for segment, (start, end) in zip(item.segments.tolist(), item.offsets.tolist(), strict=True):
        if segment >= 0:
            assert texts[segment][start:end] == texts[segment][start:end].strip()
            covered[segment].update(range(start, end))
    for text, chars in zip(texts, covered, strict=True):
        assert chars == {i for i, c in enumerate(text) if not c.isspace()}
    assert item.token_type_ids.any() == ("token_type_ids" in tokenizer.model_input_names)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_integrated_gradients_are_complete_at_each_architectures_word_embeddings(bases, architecture) -> None:
    """The gradient family differentiates at the word embeddings (``get_input_embeddings``), before position,
    segment and norm layers: IG's attributions sum to the target logit's change from the [PAD] baseline."""
    tokenizer, model = load_tokenizer(str(bases(architecture))), load_classifier(str(bases(architecture)), 3).eval()
    _, batch = batch_of(tokenizer, pairs=False)
    gradient = GradientParams(variant="integrated_gradients", ig_steps=24)
    params = dataclasses.replace(ExplainParams(), gradient=gradient)
    explanation = make_explainer(Method.GRADIENT, model, params, tokenizer.mask_token_id).attribute(batch)
    embed = model.get_input_embeddings()
    baseline = batch.input_ids.masked_fill(~batch.special_mask, model.config.pad_token_id or 0)
    with torch.no_grad():
        logits = [
            model(inputs_embeds=embed(ids), **batch.model_inputs(model) | {"input_ids": None}).logits
            for ids in (batch.input_ids, baseline)
        ]
    target = explanation.logits.argmax(-1, keepdim=True)
    change = (logits[0].gather(1, target) - logits[1].gather(1, target))[:, 0]
    torch.testing.assert_close(explanation.attribution.sum(1), change, atol=2e-3, rtol=2e-2)


def test_the_first_layers_of_a_config_without_a_layer_count_are_refused_in_one_line() -> None:
    config = SimpleNamespace(model_type="odd", layer_types=["full", "sliding"])
    with pytest.raises(EgkdError, match=r"^odd \(m\): its config has no num_hidden_layers") as err:
        keep_layers(config, 1, "m")
    assert "\n" not in str(err.value)
    config.num_hidden_layers = 2
    with pytest.raises(EgkdError, match="m has 2 layers; cannot keep the first 3"):
        keep_layers(config, 3, "m")
    keep_layers(config, 1, "m")
    assert (config.num_hidden_layers, config.layer_types) == (1, ["full"])


def egkd(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout


def run_flow(root: Path, architecture: str, kind: str) -> Path:
    """A tiny ``architecture`` teacher fine-tuned on the task, and its cache of every family (train and held out)."""
    data, held_out, _ = TASKS[kind]
    base = make_tiny_architecture(architecture, root / "base")
    egkd("finetune", "--model", base, *data, "--limit", TRAIN, "--epochs", "1", "--out", root / "teacher")
    for method in METHODS:
        for split, limit in (("train", TRAIN), (held_out, HELD_OUT)):
            egkd(
                "explain",
                *("--teacher", root / "teacher", *data, "--method", method, "--split", split, "--limit", limit),
                *("--out", root / "cache" / f"{method}.parquet"),
            )
    return root


@pytest.fixture(scope="module")
def flows(tmp_path_factory):
    """(architecture, kind) -> the folder of its flow, made on first use."""
    made: dict[tuple[str, str], Path] = {}

    def get(architecture: str, kind: str) -> Path:
        if (architecture, kind) not in made:
            root = tmp_path_factory.mktemp(f"{architecture}-{kind}")
            made[architecture, kind] = run_flow(root, architecture, kind)
        return made[architecture, kind]

    return get


def distill(root: Path, method: str, out: Path, *student: str | Path) -> Path:
    cache = root / "cache" / f"{'gradient' if method == 'none' else method}.parquet"
    egkd(
        "distill",
        *("--cache", cache, "--view-cache", root / "cache", "--method", method, *student),
        *("--epochs", "1", "--min-steps", "0", "--batch-size", "8", "--views", "1", "--out", out),
    )
    return out


@pytest.mark.parametrize("kind", TASKS)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_the_whole_flow(flows, architecture, kind, tmp_path) -> None:
    """Finetune, explain (every family), verify, distill (every objective, with views), evaluate, report."""
    root = flows(architecture, kind)
    data, held_out, size = TASKS[kind]
    teacher_config = json.loads((root / "teacher" / "config.json").read_text())
    assert teacher_config["model_type"] == architecture
    for method in METHODS:
        cache = root / "cache" / f"{method}.parquet"
        assert "OK: 2 partition(s)" in egkd("cache", "verify", cache)
        meta, rows = read_cache(cache, method, held_out)
        assert len(rows) == int(HELD_OUT) and meta.teacher.endswith("teacher")
        for row in rows:  # the maps live on the texts' own tokens, never on special tokens
            assert not row.attribution[row.special_mask].any() and row.attribution[~row.special_mask].any()
            assert set(row.segments[~row.special_mask].tolist()) == ({0, 1} if kind == "pair" else {0})
            shown = {token.segment for token in teacher_row(meta, row).tokens}  # the report's heatmap
            assert shown == ({0, 1} if kind == "pair" else {0})
    evals = tmp_path / "eval"
    for method in OBJECTIVES:
        variant = "kd" if method == "none" else method
        student = distill(root, method, tmp_path / "students" / f"{variant}-s0", "--student", "base", "--layers", "1")
        assert json.loads((student / "config.json").read_text())["model_type"] == architecture
        out = egkd(
            "evaluate",
            *("--model", student, *data, "--split", held_out, "--cache", root / "cache"),
            *("--out", evals / f"{variant}-s0.json"),
        )
        assert f"({size} examples)" in out and all(f"agreement ({m})" in out for m in METHODS), out
    summary = tmp_path / "summary.json"
    egkd(
        "report",
        *("--evals", evals, "--out", tmp_path / "report.html", "--summary", summary),
        *("--cache", root / "cache", "--teacher", root / "teacher"),
    )
    students = json.loads(summary.read_text())["students"]
    assert set(students) == {"kd", *METHODS} and all("accuracy_vs_kd" in students[m] for m in METHODS)
    assert "<svg" in (tmp_path / "report.html").read_text()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_a_student_of_the_teachers_first_layers(flows, architecture, tmp_path) -> None:
    """``--student teacher --layers 1``: the fine-tuned teacher's first layer under a new head."""
    root = flows(architecture, "single")
    student = distill(root, "gradient", tmp_path / "s", "--student", "teacher", "--layers", "1")
    info = json.loads((student / "egkd_model.json").read_text())
    assert info["num_layers"] == 1
    config = json.loads((student / "config.json").read_text())
    assert config["model_type"] == architecture and config.get("num_hidden_layers", config.get("n_layers")) == 1


@pytest.mark.parametrize(
    ("teacher", "student"), [("roberta", "bert"), ("bert", "xlm-roberta"), ("deberta-v2", "modernbert")]
)
def test_a_student_of_another_architecture_and_tokenizer(flows, teacher, student, tmp_path) -> None:
    """Six classes; the teacher's maps are re-projected onto the student's tokens through character offsets."""
    root = flows(teacher, "single")
    other = make_tiny_architecture(student, tmp_path / student, num_labels=6, seed=1)
    for method in OBJECTIVES:
        result = runner.invoke(
            app,
            [
                str(a)
                for a in (
                    *("distill", "--cache", root / "cache" / f"{'gradient' if method == 'none' else method}.parquet"),
                    *("--view-cache", root / "cache", "--method", method, "--student", other, "--epochs", "1"),
                    *("--min-steps", "0", "--batch-size", "8", "--views", "1", "--out", tmp_path / method),
                )
            ],
        )
        assert result.exit_code == 0, result.output
        assert "teacher maps re-projected" in result.output
    out = egkd(
        "evaluate",
        *("--model", tmp_path / "gradient", "--data", TREC, "--split", "test", "--cache", root / "cache"),
    )
    assert "(500 examples)" in out and all(f"agreement ({m})" in out for m in METHODS), out

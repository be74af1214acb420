"""Stage two end to end on a tiny teacher's real cache: every method, reproducibility, resume, re-projection."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import VOCAB, make_tiny_model_dir, small_distill
from distill_cache import build_cache, tiny_cache
from typer.testing import CliRunner

from pipeline import training, versions
from pipeline.cache.extras import Extras, Selection, Views
from pipeline.cache.project import to_student_examples
from pipeline.cache.schema import CachedExample
from pipeline.config import DistillParams, EvaluateParams, Params, TrainParams, load_params
from pipeline.distill.job import DistillRequest, distill
from pipeline.distill.trainer import first_explained_step
from pipeline.errors import EgkdError
from pipeline.methods import Method
from pipeline.models import load_classifier, load_tokenizer
from pipeline.profiles import render
from stages.cli import app

FAST = small_distill()
FAST1 = dataclasses.replace(FAST.train, epochs=1)  # one pass of batch 8
TRAIN_KEYS = {f.name for f in dataclasses.fields(TrainParams)}


@pytest.fixture(scope="module")
def cache(tmp_path_factory, glue_dir) -> Path:
    """A cache of every method (train 24, dev 12) whose teacher directory is deleted afterwards."""
    root = tmp_path_factory.mktemp("stage2")
    cache = tiny_cache(root, glue_dir)
    shutil.rmtree(root / "teacher")
    return cache


def run(cache: Path, out: Path, resume: bool = False, resume_matching: bool = False, **changes):
    """Distill with FAST params, ``changes`` to distill or its training section (``epochs=1``)."""
    train = dataclasses.replace(FAST.train, **{k: v for k, v in changes.items() if k in TRAIN_KEYS})
    params = dataclasses.replace(FAST, train=train, **{k: v for k, v in changes.items() if k not in TRAIN_KEYS})
    request = DistillRequest(cache=cache, out=out, params=params, evaluate=EvaluateParams(), resume=resume)
    return distill(dataclasses.replace(request, resume_matching=resume_matching))


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_classifier(str(out), 2).state_dict()


@pytest.mark.parametrize("method", [m.value for m in Method] + ["none"])
def test_distill_every_method_without_the_teacher(cache, tmp_path, method):
    report = run(cache, tmp_path / "s", method=method)
    assert report.training.steps == 6 and report.dev is not None and report.dev.count == 12
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    assert set(log[0]) == {"step", "epoch", "loss", "ce", "kd", "explain", "lr", "views"}
    assert all((r["explain"] is None) == (method == "none") for r in log)
    assert all(r["views"] is None for r in log)  # the view term is off by default
    metrics = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert metrics["method"] == method and metrics["dev"]["count"] == 12
    card = (tmp_path / "s" / "README.md").read_text()
    assert "explanation method: " + method in card and "dev metrics: accuracy" in card
    assert metrics["versions"] == versions.current().as_dict()  # the libraries it trained with, and the cache's
    assert f"- libraries: {versions.current().describe()}\n" in card
    assert "- the cache's teacher forwards ran with: not recorded\n" in card  # this test cache records none


def test_a_student_that_predicts_one_class_is_flagged(cache, tmp_path, monkeypatch):
    from pipeline.evaluate import metrics

    monkeypatch.setattr(metrics, "one_class", lambda preds: metrics.OneClass(1, 0.975))
    report = run(cache, tmp_path / "s", method="none", epochs=1)
    assert report.dev is not None and report.dev.one_class == metrics.OneClass(1, 0.975)
    assert report.notes[-1].startswith("warning: the student predicts class 1 for 97.5% of the examples")
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["dev"]["one_class"] == {"label": 1, "share": 0.975}


def test_min_steps_adds_epochs_to_a_small_training_set(cache, tmp_path):
    report = run(cache, tmp_path / "s", method="none", epochs=1, min_steps=5)  # 24 examples, batch 8: 3 a pass
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert report.training.steps == 6 and [r["epoch"] for r in log] == [0, 0, 0, 1, 1, 1]


def test_explain_every_skips_steps(cache, tmp_path):
    run(cache, tmp_path / "s", method="perturbation", explain_every=3)
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert [r["explain"] is not None for r in log] == [True, False, False, True, False, False]


@pytest.mark.parametrize("method", [m.value for m in Method])
def test_explain_start_leaves_the_first_steps_to_kd(cache, tmp_path, method):
    """6 steps (24 examples, batch 8, 2 epochs); 0.4 of them is 2.4: the term starts at step 3 (0-based), with
    explain_every 2 at the next even step; the card says when it started."""
    run(cache, tmp_path / "a", method=method, epochs=2, explain_start=0.4)
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [r["explain"] is not None for r in log] == [False, False, False, True, True, True]
    assert "after 40% of the steps" in (tmp_path / "a" / "README.md").read_text()
    run(cache, tmp_path / "b", method=method, epochs=2, explain_start=0.4, explain_every=2)
    log = [json.loads(line) for line in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()]
    assert [r["explain"] is not None for r in log] == [False, False, False, False, True, False]


@pytest.mark.parametrize("method", [m.value for m in Method])
def test_explain_start_max_steps_caps_the_wait(cache, tmp_path, method):
    """6 steps; half of them is 3, capped at 1: the term starts at step 1 (0-based), and the card says so."""
    run(cache, tmp_path / "s", method=method, epochs=2, explain_start=0.5, explain_start_max_steps=1)
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert [r["explain"] is not None for r in log] == [False, True, True, True, True, True]
    assert "after 1 of the 6 steps (explain_start_max_steps)" in (tmp_path / "s" / "README.md").read_text()


@pytest.mark.parametrize(
    ("share", "cap", "total", "first"),
    [
        (0.5, None, 160, 80),
        (0.5, 80, 160, 80),  # the default profile: the cap does not bind
        (0.5, 80, 750, 80),  # a long run waits 80 steps, not 375
        (0.1, 80, 750, 75),  # the share binds when it is smaller
        (0.0, 80, 750, 0),
        (0.5, 0, 750, 0),
        (0.4, None, 6, 3),  # ceil(2.4)
    ],
)
def test_first_explained_step(share, cap, total, first):
    params = DistillParams(explain_start=share, explain_start_max_steps=cap)
    assert first_explained_step(params, total) == first


def test_a_negative_explain_start_max_steps_is_refused(tmp_path):
    (tmp_path / "params.yaml").write_text("distill:\n  explain_start_max_steps: -1\n")
    with pytest.raises(EgkdError, match="distill.explain_start_max_steps must not be negative, got -1"):
        load_params(tmp_path / "params.yaml")


def test_saved_student_loads_in_a_transformers_pipeline(cache, tmp_path):
    from transformers import pipeline

    run(cache, tmp_path / "s", method="gradient", epochs=1)
    classify = pipeline("text-classification", model=str(tmp_path / "s"))
    assert classify("a good film")[0]["label"] in {"0", "1"}


@pytest.mark.parametrize("method", ["gradient", "perturbation"])
def test_two_runs_give_identical_weights(cache, tmp_path, method):
    run(cache, tmp_path / "a", method=method)
    run(cache, tmp_path / "b", method=method)
    first, second = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(first[k], second[k]) for k in first)


@pytest.mark.parametrize("views", [{}, {"views": 2, "view_kind": "contrastive"}], ids=["plain", "views"])
def test_resume_equals_an_uninterrupted_run(cache, tmp_path, monkeypatch, views):
    run(cache, tmp_path / "full", method="perturbation", **views)
    original = training.Trainer.step

    def crash_at_step_4(self, batch, optimizer, scheduler, step, epoch):
        if step == 3:  # 0-based step index: steps 1..3 are done, the checkpoint holds step 2
            raise KeyboardInterrupt
        return original(self, batch, optimizer, scheduler, step, epoch)

    monkeypatch.setattr(training.Trainer, "step", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run(cache, tmp_path / "resumed", method="perturbation", **views)
    monkeypatch.setattr(training.Trainer, "step", original)
    report = run(cache, tmp_path / "resumed", resume=True, method="perturbation", **views)
    assert report.training.resumed_from == 2
    first, second = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (tmp_path / "full" / "train_log.jsonl").read_text() == (tmp_path / "resumed" / "train_log.jsonl").read_text()


@pytest.mark.parametrize("kind", ["preserving", "contrastive", "random"])
@pytest.mark.parametrize("method", ["none", "gradient"])
def test_distill_on_the_cached_views_of_every_kind(cache, tmp_path, kind, method):
    """The view term works with every view kind and beside any objective (none: KD with views)."""
    report = run(cache, tmp_path / "s", method=method, views=2, view_kind=kind, view_weight=0.5)
    assert report.training.steps == 6 and report.dev is not None
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["views"] is not None and np.isfinite(r["views"]) and r["views"] > 0 for r in log)
    first = log[0]  # the total is the sum of its weighted terms
    explain = 0.0 if first["explain"] is None else FAST.beta * first["explain"]
    expected = FAST.alpha * first["kd"] + (1 - FAST.alpha) * first["ce"] + explain + 0.5 * first["views"]
    assert first["loss"] == pytest.approx(expected, rel=1e-5)
    assert f"KD on 2 cached {kind} view(s) per example per step" in (tmp_path / "s" / "README.md").read_text()


def test_the_view_term_changes_training_and_its_kind_matters(cache, tmp_path):
    run(cache, tmp_path / "kd", method="none", epochs=1)
    run(cache, tmp_path / "random", method="none", epochs=1, views=1, view_kind="random")
    run(cache, tmp_path / "preserving", method="none", epochs=1, views=1, view_kind="preserving")
    kd, random, preserving = (weights(tmp_path / name) for name in ("kd", "random", "preserving"))
    assert any(not torch.equal(kd[k], random[k]) for k in kd)
    assert any(not torch.equal(random[k], preserving[k]) for k in kd)


def test_more_views_per_step_than_the_cache_holds_are_refused(cache, tmp_path):
    with pytest.raises(EgkdError, match=r"asks for 5 random view\(s\) per example, the cache has 4"):
        run(cache, tmp_path / "s", method="none", views=5, view_kind="random")


@pytest.mark.parametrize("loss", ["adkd"])
def test_every_other_gradient_loss_trains_and_differs_from_cosine(cache, tmp_path, loss):
    """adkd reads the cached magnitude maps (cosine the signed ones)."""
    report = run(cache, tmp_path / "s", method="gradient", gradient_loss=loss)
    log = [json.loads(line) for line in (tmp_path / "s" / "train_log.jsonl").read_text().splitlines()]
    assert report.training.steps == 6 and all(r["explain"] is not None and r["explain"] > 0 for r in log)
    cosine = run(cache, tmp_path / "c", method="gradient")
    assert cosine.training.last is not None and report.training.last is not None
    assert cosine.training.last.explain != report.training.last.explain
    assert f"L_gradient (every 1 steps, from the first step) ({loss})" in (tmp_path / "s" / "README.md").read_text()


@pytest.mark.parametrize(
    "method, kind, options, message",
    [
        (
            "perturbation",
            "contrastive",
            {"views": 1, "view_kind": "contrastive"},
            "distill.view_kind contrastive needs",
        ),
        ("gradient", "magnitude", {"gradient_loss": "adkd"}, "method gradient needs"),
    ],
)
def test_a_cache_without_the_extras_a_run_reads_is_refused_before_training(
    cache, tmp_path, monkeypatch, method, kind, options, message
):
    copy = _without(cache, tmp_path / "cache", method, kind)  # as a cache made before views and magnitudes were
    monkeypatch.setattr(training.Trainer, "run", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(EgkdError, match=f"has no {kind} extras, which {message}"):
        run(copy, tmp_path / "s", method=method, **options)


def _without(cache: Path, copy: Path, method: str, kind: str) -> Path:
    """A copy of ``cache`` whose ``method`` train partition lacks the extra ``kind`` (and has no dev partition)."""
    from pipeline.cache.store import part_path, read_part, write_part

    shutil.copytree(cache, copy)
    part = read_part(part_path(copy, method, "train", 0))
    keep = tuple(k for k in part.meta.extras if k != kind)
    rows = [
        dataclasses.replace(r, extras=Extras(tuple(x for x in r.extras.items if x.kind in keep))) for r in part.rows
    ]
    write_part(part.path, dataclasses.replace(part.meta, extras=keep), 0, rows, truncated=0)
    shutil.rmtree(part_path(copy, method, "dev", 0).parent)
    return copy


def test_resume_refuses_other_settings(cache, tmp_path):
    run(cache, tmp_path / "s", method="none", epochs=1)
    with pytest.raises(EgkdError, match="alpha: checkpoint 0.5, now 0.9"):
        run(cache, tmp_path / "s", resume=True, method="none", epochs=1, alpha=0.9)


def test_resume_refuses_a_checkpoint_trained_from_another_teacher_s_cache(cache, tmp_path, glue_dir):
    other = build_cache(
        tmp_path / "other", make_tiny_model_dir(tmp_path / "t5", seed=5), cache.parent / "base", glue_dir
    )
    run(cache, tmp_path / "s", method="none", epochs=1)
    with pytest.raises(EgkdError, match="cannot resume: .* other settings \\(cache_digest: checkpoint "):
        run(other, tmp_path / "s", resume=True, method="none", epochs=1)


def test_resume_matching_continues_this_run_s_checkpoint_and_starts_over_from_another_s(cache, tmp_path):
    """What dvc.yaml's stages pass, their outputs persisting."""
    fresh = run(cache, tmp_path / "fresh", method="gradient", epochs=1)
    run(cache, tmp_path / "s", method="gradient", epochs=1)
    again = run(cache, tmp_path / "s", method="gradient", epochs=1, resume_matching=True)  # the final checkpoint
    assert again.training.resumed_from == again.training.steps == fresh.training.steps and not again.training.replaced
    torch.testing.assert_close(weights(tmp_path / "s"), weights(tmp_path / "fresh"), rtol=0, atol=0)
    other = run(cache, tmp_path / "s", method="gradient", epochs=1, alpha=0.9, resume_matching=True)
    assert other.training.resumed_from == 0 and "alpha: checkpoint 0.5, now 0.9" in other.training.replaced
    assert f"note: trained from the first step: the checkpoint in {tmp_path / 's' / 'checkpoints' / 'last'}" in (
        " ".join(other.notes)
    )
    run(cache, tmp_path / "alone", method="gradient", epochs=1, alpha=0.9)
    torch.testing.assert_close(weights(tmp_path / "s"), weights(tmp_path / "alone"), rtol=0, atol=0)


def test_an_interruption_says_what_is_left_to_continue_from(cache, tmp_path):
    from pipeline.distill.job import interrupted

    assert interrupted(tmp_path / "s", 25) == (
        "no checkpoint was written yet (one every 25 steps: distill.checkpoint_every); a rerun starts over"
    )
    run(cache, tmp_path / "s", method="none", epochs=1)
    assert interrupted(tmp_path / "s", 25) == (
        f"the last checkpoint in {tmp_path / 's'} is kept: rerun with --resume to continue from it"
    )
    report = run(cache, tmp_path / "fresh", resume=True, method="none", epochs=1)
    assert f"note: --resume: no checkpoint in {tmp_path / 'fresh'}: trained from the first step" in report.notes


def _other_tokenizer_model(path: Path) -> Path:
    """A tiny student whose vocabulary differs (``films`` is one token), so its tokenizer hash differs."""
    vocab = [{"an": "films", "one": "movies"}.get(w, w) for w in VOCAB]
    return make_tiny_model_dir(path, seed=2, vocab=vocab)


def test_reprojection_onto_another_tokenizer_exact(tmp_path):
    teacher_tok = load_tokenizer(str(make_tiny_model_dir(tmp_path / "t")))
    student_tok = load_tokenizer(str(_other_tokenizer_model(tmp_path / "other")))
    enc = teacher_tok("good films", "films", return_offsets_mapping=True, return_special_tokens_mask=True)
    assert teacher_tok.convert_ids_to_tokens(enc["input_ids"]) == [
        "[CLS]",
        "good",
        "film",
        "##s",
        "[SEP]",
        "film",
        "##s",
        "[SEP]",
    ]
    n = len(enc["input_ids"])
    special = np.array(enc["special_tokens_mask"], bool)
    types = np.array(enc["token_type_ids"], np.int8)
    extras = Extras(
        (
            Views(np.eye(n, dtype=bool)[[3, 5]], np.zeros((2, 2), np.float32)),
            Selection(np.arange(n) == 6, np.zeros(2, np.float32)),
        )
    )
    row = CachedExample(
        example_id="dev-0",
        split="dev",
        label=1,
        text_a="good films",
        text_b="films",
        input_ids=np.array(enc["input_ids"], np.int32),
        token_type_ids=types,
        segments=np.where(special, -1, types).astype(np.int8),
        special_mask=special,
        offsets=np.array(enc["offset_mapping"], np.int32),
        attribution=np.array([0, 1, 2, 4, 0, 8, 16, 0], np.float32),
        teacher_logits=np.array([0.0, 1.0], np.float32),
        extras=extras,
    )
    (example,) = to_student_examples([row], student_tok, 64)
    assert student_tok.convert_ids_to_tokens(example.input_ids.tolist()) == [
        "[CLS]",
        "good",
        "films",
        "[SEP]",
        "films",
        "[SEP]",
    ]
    assert example.attribution.tolist() == [0, 1, 6, 0, 24, 0]
    views, selection = example.extras.get(Views), example.extras.get(Selection)
    assert views.masks.tolist() == [
        [False, False, True, False, False, False],
        [False, False, False, False, True, False],
    ]
    assert selection.mask.tolist() == [False, False, False, False, True, False]


def bpe_tokenizer(folder: Path):
    """A tiny RoBERTa-style byte-level BPE tokenizer, written offline: its token type ids are all zero."""
    from transformers import RobertaTokenizer

    merges = [
        ("Ġ", "g"),
        ("Ġg", "o"),
        ("Ġgo", "o"),
        ("Ġgoo", "d"),
        ("f", "i"),
        ("fi", "l"),
        ("fil", "m"),
        ("Ġ", "film"),
    ]
    vocab = ["<s>", "<pad>", "</s>", "<unk>", "<mask>", "Ġ", *"abcdefghijklmnopqrstuvwxyz"] + [a + b for a, b in merges]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({token: i for i, token in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    return RobertaTokenizer.from_pretrained(str(folder))


def test_pair_reprojection_from_a_tokenizer_without_token_type_ids(tmp_path):
    """Second-segment teacher scores land on second-segment student tokens, though the teacher's
    tokenizer (RoBERTa-style) gives every token type id 0; the segments travel through the cache."""
    from rows import make_meta

    from pipeline.cache.store import part_path, read_cache, write_part
    from pipeline.data import Example
    from pipeline.encoding import encode

    teacher_tok = bpe_tokenizer(tmp_path / "bpe")
    (item,) = encode(teacher_tok, [Example("dev-0", "dev", "good film", "film good", 1)], 64)
    assert teacher_tok.convert_ids_to_tokens(item.input_ids.tolist()) == [
        "<s>", "g", "o", "o", "d", "Ġfilm", "</s>", "</s>", "film", "Ġgood", "</s>"
    ]  # fmt: skip
    assert not item.token_type_ids.any()
    attribution = np.array([0, 1, 2, 3, 4, 16, 0, 0, 20, 40, 0], np.float32)
    views = Views(np.arange(11)[None, :] == 8, np.zeros((1, 2), np.float32))  # one view masking the second "film"
    row = CachedExample(
        example_id="dev-0", split="dev", label=1, text_a="good film", text_b="film good", input_ids=item.input_ids, token_type_ids=item.token_type_ids, segments=item.segments,
        special_mask=item.special_mask, offsets=item.offsets, attribution=attribution, teacher_logits=np.zeros(2, np.float32), extras=Extras((views,)),
    )  # fmt: skip
    write_part(
        part_path(tmp_path / "cache", "perturbation", "dev", 0),
        make_meta(num_examples=1, extras=("view",)),
        0,
        [row],
        0,
    )
    _, (cached,) = read_cache(tmp_path / "cache", "perturbation", "dev")

    student_tok = load_tokenizer(str(make_tiny_model_dir(tmp_path / "student")))
    (example,) = to_student_examples([cached], student_tok, 64)
    tokens = student_tok.convert_ids_to_tokens(example.input_ids.tolist())
    assert tokens == ["[CLS]", "good", "film", "[SEP]", "film", "good", "[SEP]"]
    assert example.attribution.tolist() == [0, 10, 16, 0, 20, 40, 0]
    assert example.extras.get(Views).masks.tolist() == [[False, False, False, False, True, False, False]]


def test_distill_with_a_student_of_another_tokenizer(cache, tmp_path):
    other = _other_tokenizer_model(tmp_path / "other")
    report = run(cache, tmp_path / "s", method="gradient", epochs=1, student=str(other))
    assert not report.same_tokenizer and report.dev is not None


@pytest.fixture(scope="module")
def kept_teacher(tmp_path_factory, glue_dir) -> Path:
    """A cache (train 8, dev 4) whose 2-layer teacher stays where the cache names it."""
    root = tmp_path_factory.mktemp("kept-teacher")
    teacher = make_tiny_model_dir(root / "teacher", seed=3)
    build_cache(root / "cache", teacher, make_tiny_model_dir(root / "base", seed=1), glue_dir, train=8, dev=4)
    return root


def test_a_student_starts_from_the_fine_tuned_teachers_first_layers(kept_teacher, tmp_path):
    """student: teacher keeps the teacher's embeddings, first `layers` layers, pooler and classifier, exactly;
    the default (null) starts from the base model's; the run records the teacher as the student's origin."""
    from pipeline.cache.store import read_cache
    from pipeline.distill.job import build_student

    meta, _ = read_cache(kept_teacher / "cache", "gradient", "train")
    teacher = load_classifier(str(kept_teacher / "teacher"), 2).state_dict()
    student, _, ref, layers = build_student(meta, dataclasses.replace(FAST, student="teacher", layers=1))
    assert (ref, layers, student.config.num_hidden_layers) == (str(kept_teacher / "teacher"), 1, 1)
    state = student.state_dict()
    assert not any(".layer.1." in name for name in state)
    for name, value in state.items():
        assert torch.equal(value, teacher[name]), name
    base, _, base_ref, _ = build_student(meta, dataclasses.replace(FAST, layers=1))
    assert base_ref == str(kept_teacher / "base") and base.config.num_hidden_layers == 1
    named, _, named_ref, _ = build_student(meta, dataclasses.replace(FAST, student="base", layers=1))
    assert named_ref == base_ref and all(torch.equal(v, base.state_dict()[k]) for k, v in named.state_dict().items())
    assert not torch.equal(base.state_dict()["classifier.weight"], teacher["classifier.weight"])
    report = run(kept_teacher / "cache", tmp_path / "s", method="gradient", epochs=1, student="teacher", layers=1)
    assert report.student == str(kept_teacher / "teacher") and report.dev is not None
    info = json.loads((tmp_path / "s" / "egkd_model.json").read_text())
    assert info["num_layers"] == 1  # and the teacher whose cache it learnt from, for egkd evaluate to check
    assert (
        info["teacher_weights_hash"] == read_cache(kept_teacher / "cache", "gradient", "train")[0].teacher_weights_hash
    )


def test_a_student_from_a_teacher_that_is_gone_or_changed_is_refused(kept_teacher, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(kept_teacher, copy)
    from pipeline.cache.store import part_path, read_part, write_part

    for method in Method:  # the copied cache names the copied teacher
        for split in ("train", "dev"):
            part = read_part(part_path(copy / "cache", method.value, split, 0))
            meta = dataclasses.replace(part.meta, teacher=str(copy / "teacher"))
            write_part(part.path, meta, 0, part.rows, truncated=0)
    make_tiny_model_dir(copy / "teacher", seed=4)  # other weights where the cache's teacher was
    with pytest.raises(EgkdError, match="student teacher: the weights at .* are not those of the teacher that made"):
        run(copy / "cache", tmp_path / "s", method="none", student="teacher")
    shutil.rmtree(copy / "teacher")
    with pytest.raises(EgkdError, match="student teacher: cannot read the cache's teacher .*--student base"):
        run(copy / "cache", tmp_path / "s", method="none", student="teacher")
    assert not (tmp_path / "s").exists()


def test_dev_partition_of_another_teacher_is_refused(cache, tmp_path):
    from pipeline.cache.store import part_path, read_part, write_part

    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    part = read_part(part_path(copy, "gradient", "dev", 0))
    meta = dataclasses.replace(part.meta, teacher_weights_hash="0" * 64)
    write_part(part.path, meta, 0, part.rows, truncated=0)
    with pytest.raises(EgkdError, match="teacher_weights_hash"):
        run(copy, tmp_path / "s", method="gradient")


def test_cli_distill(cache, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(render(Params(distill=small_distill(checkpoint_every=100, train=FAST1))), encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "distill",
            "--cache",
            str(cache),
            "--method",
            "feature_selection",
            "--alpha",
            "0.8",
            "--out",
            str(tmp_path / "s"),
            "--params",
            str(params),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "student saved to" in result.output
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["steps"] == 3


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--method", "saliency"],
            "option 'method' must be one of ['gradient', 'perturbation', 'feature_selection', 'none'], got 'saliency'",
        ),
        (["--alpha", "1.5"], "alpha must be between 0 and 1"),
        (["--lr", "0"], "lr must be positive"),
    ],
)
def test_cli_distill_errors(cache, tmp_path, args, message):
    result = CliRunner().invoke(app, ["distill", "--cache", str(cache), "--out", str(tmp_path / "s"), *args])
    assert result.exit_code == 2 and message in result.output


def test_cli_distill_missing_cache(tmp_path):
    result = CliRunner().invoke(app, ["distill", "--cache", str(tmp_path / "nope"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "cache not found" in result.output

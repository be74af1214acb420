"""The one-off study scripts of research/ on small inputs: exact values on hand-made rows, and two command lines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import EgkdError


def test_view_shift_exact_on_a_hand_made_row():
    """[CLS] a b c d e [SEP], |scores| rank b (3.0) first: the top ceil(0.2 * 5) = 1 token. Teacher logits (2, 0)
    at temperature 1: p = (0.8808, 0.1192). Preserving views (logits (2, 0) and (1, 0)) replace d, then e; the
    contrastive ones (0, 1) and (1, 1) replace b, then b and c; the random ones (2, 0) and (2, 0), a twice: one
    distinct view."""
    import numpy as np

    from pipeline.cache.extras import ContrastiveViews, Extras, PreservingViews, RandomViews
    from pipeline.cache.schema import CachedExample
    from research.view_shift import ViewShift, table, view_shift

    def masks(*tokens: tuple[int, ...]) -> np.ndarray:
        out = np.zeros((len(tokens), 7), dtype=bool)
        for view, positions in enumerate(tokens):
            out[view, list(positions)] = True
        return out

    def logits(*rows: tuple[float, float]) -> np.ndarray:
        return np.array(rows, dtype=np.float32)

    special = np.array([True, False, False, False, False, False, True])
    row = CachedExample(
        example_id="dev-0", split="dev", label=1, text_a="a b c d e", text_b=None, input_ids=np.arange(7, dtype=np.int32), token_type_ids=np.zeros(7, np.int8),
        segments=np.where(special, -1, 0).astype(np.int8), special_mask=special, offsets=np.zeros((7, 2), np.int32),
        attribution=np.array([0, 0.5, -3.0, 1.0, 0.1, -0.2, 0], dtype=np.float32), teacher_logits=np.array([2.0, 0.0], dtype=np.float32),
        extras=Extras((
            PreservingViews(masks((4,), (5,)), logits((2, 0), (1, 0))),
            ContrastiveViews(masks((2,), (2, 3)), logits((0, 1), (1, 1))),
            RandomViews(masks((1,), (1,)), logits((2, 0), (2, 0))),
        )),
    )  # fmt: skip

    def kl(first: tuple[float, float], second: tuple[float, float]) -> float:
        p, q = np.exp(first) / np.exp(first).sum(), np.exp(second) / np.exp(second).sum()
        return float((p * np.log(p / q)).sum())

    shifts = view_shift([row], temperature=1.0)
    # contrastive (1, 1): a tie, class 0
    expected = [
        ViewShift("preserving", 2, (kl((2, 0), (2, 0)) + kl((2, 0), (1, 0))) / 2, 0.0, 0.0, 2.0),
        ViewShift("contrastive", 2, (kl((2, 0), (0, 1)) + kl((2, 0), (1, 1))) / 2, 0.5, 1.0, 2.0),
        ViewShift("random", 2, 0.0, 0.0, 0.0, 1.0),
    ]
    for got, want in zip(shifts, expected, strict=True):
        assert (got.kind, got.views, got.flips, got.top_masked, got.distinct) == (
            want.kind, want.views, want.flips, want.top_masked, want.distinct
        )  # fmt: skip
        assert got.kl == pytest.approx(want.kl, abs=1e-9)
    assert shifts[0].kl == pytest.approx(0.03357, abs=1e-5)  # KL((0.881, 0.119) || (0.731, 0.269)) / 2
    assert table(shifts).splitlines()[3] == "| contrastive | 2 | 0.5783 | 0.500 | 1.000 | 2.00 |"


def test_coverage_exact_on_hand_made_examples():
    """Training words {good, film, bad, it's}. Dev: "good film" (0 unseen), "a bad plot" (a, plot: 2 unseen),
    "it's a dull , dull plot" (a, dull, dull, plot: 4; the comma is no word). Occurrences 10, seen 4 (good, film,
    bad, it's); distinct words 7, seen 4; sentences with every word seen 1 of 3. Each dev sentence falls in its own
    bin (0 / 1-2 / 3+ unseen), so a run's accuracy per bin is 0 or 1."""
    from pipeline.data import Example
    from pipeline.report.compare import RunPredictions
    from pipeline.report.data import StudentRun
    from research.coverage import GroupAccuracy, coverage, group_accuracy, table, words

    def example(i: str, text: str, pair: str | None = None) -> Example:
        return Example(i, "x", text, pair, 1)

    train = [example("train-0", "Good film"), example("train-1", "bad", "It's")]
    dev = [example("dev-0", "good film"), example("dev-1", "a bad plot"), example("dev-2", "it's a dull , dull plot")]
    assert words(train[1]) == ["bad", "it's"]
    summary, unseen = coverage(train, dev)
    assert (summary.train_examples, summary.train_words) == (2, 4)
    assert (summary.tokens, summary.types, summary.sentences) == (4 / 10, 4 / 7, 1 / 3)
    assert unseen == {"dev-0": 0, "dev-1": 2, "dev-2": 4}

    def run(variant: str, seed: int, classes: tuple[int, ...]) -> StudentRun:
        ids = ("dev-0", "dev-1", "dev-2")
        return StudentRun(name=f"{variant}-s{seed}", variant=variant, seed=seed, model=Path("m"), main_name="accuracy", main=0.0,
                          predictions=RunPredictions(ids, classes, (1, 1, 1)))  # fmt: skip

    runs = [run("kd", 0, (1, 0, 0)), run("kd", 1, (1, 1, 0)), run("views", 0, (0, 1, 1)), run("views", 2, (1, 1, 1))]
    groups = group_accuracy(runs, unseen, reference="kd")
    assert groups == [
        GroupAccuracy("kd", 2, (1.0, 0.5, 0.0), None),
        GroupAccuracy("views", 2, (0.5, 1.0, 1.0), (-100.0, 100.0, 100.0)),  # paired on seed 0 only
    ]
    lines = table(groups, unseen, "kd").splitlines()
    assert lines[0].startswith("| variant | seeds | 0 unseen (1) | 1-2 unseen (1) | 3+ unseen (1) | 0: vs kd")
    assert lines[3] == "| views | 2 | 0.5000 | 1.0000 | 1.0000 | -100.00 | +100.00 | +100.00 |"
    with pytest.raises(EgkdError, match="dev-9 is not in the split"):
        group_accuracy([StudentRun(name="kd-s0", variant="kd", seed=0, model=Path("m"), main_name="accuracy", main=0.0,
                                   predictions=RunPredictions(("dev-9",), (1,), (1,)))], unseen)  # fmt: skip


def test_coverage_cli_on_sst2(tmp_path, capsys, glue_dir):
    """The first 50 SST-2 training sentences against the dev set, with one hand-written evaluation JSON."""
    from pipeline.data import load_dataset
    from pipeline.tasks import get_task
    from research import coverage

    dev = load_dataset(glue_dir, get_task("sst2"), "dev").examples
    report = {
        "model": str(tmp_path / "kd-s0"),
        "task": "sst2",
        "metrics": {"main_name": "accuracy", "main": 1.0, "count": len(dev)},
        "predictions": {
            "example_ids": [e.example_id for e in dev],
            "classes": [int(e.label) for e in dev],
            "labels": [int(e.label) for e in dev],
        },
    }
    (tmp_path / "kd-s0.json").write_text(json.dumps(report), encoding="utf-8")
    coverage.main(["--data", str(glue_dir), "--train-limit", "50", "--evals", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sst2 dev: the first 50 training examples hold ")
    assert out[3].startswith("| kd | 1 | 1.0000 | 1.0000 | 1.0000 |")
    with pytest.raises(SystemExit, match="error: .*limit must be a positive number"):
        coverage.main(["--data", str(glue_dir), "--train-limit", "0"])


def test_word_views_neighbours_and_positions():
    """Four candidate words at angles 0, 10, 80 and 90 degrees (lengths differ: only the angle counts): "good"
    is nearest "great", then "bad"; "awful" nearest "bad", then "great". Words outside the pool get no entry.
    Both modes replace the same positions; "a", "film" and "," are not in the table, so never replaced."""
    import torch

    from research.word_views import candidates, neighbour_table, views_of

    vocab = {"[PAD]": 0, "[MASK]": 1, "a": 2, "##s": 3, ",": 4, "good": 5, "great": 6, "bad": 7, "awful": 8, "it's": 9}
    pool = candidates(vocab)
    assert pool == {"good": 5, "great": 6, "bad": 7, "awful": 8}
    angles = torch.deg2rad(torch.tensor([0.0, 0, 0, 0, 0, 0.0, 10.0, 80.0, 90.0, 0]))
    embeddings = torch.stack([torch.cos(angles), torch.sin(angles)], 1) * torch.arange(1, 11)[:, None]
    table = neighbour_table(["good", "awful", "plot", "good"], pool, embeddings, count=2)
    assert table == {"good": ("great", "bad"), "awful": ("bad", "great")}
    table = {"good": ("great", "fine"), "bad": ("awful",)}
    text = "a good film , not bad"
    masked = views_of(text, table, views=3, fraction=0.2, mode="mask", seed=0, index=4)
    swapped = views_of(text, table, views=3, fraction=0.2, mode="neighbours", seed=0, index=4)
    assert len(masked) == 3 and masked == views_of(text, table, 3, 0.2, "mask", 0, 4)  # seeded
    for mask_view, word_view in zip(masked, swapped, strict=True):
        m, w = mask_view.split(), word_view.split()
        changed = [i for i, word in enumerate(text.split()) if m[i] != word]
        assert len(changed) == 2 and set(changed) == {1, 5}  # ceil(0.2 * 6) = 2 of the 2 replaceable words
        assert all(m[i] == "[MASK]" for i in changed)
        assert w[1] in table["good"] and w[5] == "awful" and w[:1] + w[2:5] == m[:1] + m[2:5]
    assert views_of("a film ,", table, 3, 0.2, "mask", 0, 0) == []


def test_word_views_cli_writes_a_glue_folder(tmp_path, tiny_model_dir, glue_dir):
    from research import word_views

    out = tmp_path / "aug"
    word_views.main(["--data", str(glue_dir), "--teacher", str(tiny_model_dir), "--limit", "30", "--views", "2",
                     "--mode", "mask", "--out", str(out)])  # fmt: skip
    lines = (out / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    source = (glue_dir / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[:31] == source[:31]  # the header and the 30 sentences, unchanged
    views = lines[31:]
    assert views and len(views) % 2 == 0 and all("[MASK]" in line for line in views)
    assert (out / "SST-2" / "dev.tsv").read_bytes() == (glue_dir / "SST-2" / "dev.tsv").read_bytes()
    with pytest.raises(SystemExit, match="error: --limit, --views and --neighbours must be positive"):
        word_views.main(["--data", str(glue_dir), "--teacher", str(tiny_model_dir), "--limit", "0",
                         "--mode", "mask", "--out", str(out)])  # fmt: skip


def test_by_length_exact_on_hand_made_hits():
    """Four examples of 1, 2, 3 and 6 words, two seeds: each bucket's reference accuracy and paired differences in
    points, and the row over all examples."""
    from research.by_length import by_length

    words = np.array([1, 2, 3, 6])
    hits = {
        "ref": [np.array([1, 1, 0, 0], bool), np.array([1, 0, 0, 0], bool)],
        "a": [np.array([1, 1, 1, 0], bool), np.array([1, 1, 0, 1], bool)],
    }
    rows = by_length(words, hits, "ref")
    assert [(b.label, b.count, b.reference_accuracy) for b in rows] == [
        ("1", 1, 1.0),
        ("2", 1, 0.5),
        ("3-4", 1, 0.0),
        ("5-9", 1, 0.0),
        ("all", 4, 0.375),
    ]
    diffs = [b.differences["a"] for b in rows]
    assert [d.mean for d in diffs] == [0.0, 50.0, 50.0, 50.0, 37.5]
    assert (diffs[0].low, diffs[0].high) == (0.0, 0.0)  # the same on both seeds: no spread
    assert diffs[4].std == pytest.approx(17.677669529663689)  # differences 25 and 50 points

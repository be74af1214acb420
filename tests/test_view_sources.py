"""The view term on another family's views (``distill.view_method``, ``egkd distill --view-cache``)."""

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

from pipeline.cache.extras import ContrastiveViews, Magnitude, PreservingViews, RandomViews
from pipeline.cache.store import part_path, read_cache, read_part, write_part
from pipeline.config import EvaluateParams, TrainParams
from pipeline.distill.job import DistillRequest, distill
from pipeline.distill.view_term import view_source, views_from
from pipeline.errors import EgkdError
from pipeline.methods import Method
from pipeline.models import load_classifier
from stages.cli import app

PARAMS = small_distill(
    method=Method.GRADIENT,
    views=1,
    view_kind="contrastive",
    checkpoint_every=10,
    train=TrainParams(epochs=1, batch_size=8, lr=1e-3, min_steps=0),
)
GUIDED = (PreservingViews, ContrastiveViews, RandomViews)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, glue_dir) -> Path:
    """A cache of every method's partitions (train 24, dev 12), as `egkd explain` writes into one folder."""
    return tiny_cache(tmp_path_factory.mktemp("view-sources"), glue_dir)


def one_family(cache: Path, method: str, folder: Path) -> Path:
    """A cache folder holding ``method``'s partitions alone, as the DVC pipeline writes one per family."""
    shutil.copytree(cache / f"method={method}", folder / f"method={method}")
    return folder


def run(cache: Path, out: Path, view_cache: Path | None = None, **changes):
    params = dataclasses.replace(PARAMS, **changes)
    return distill(
        DistillRequest(cache=cache, out=out, params=params, evaluate=EvaluateParams(), view_cache=view_cache)
    )


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_classifier(str(out), 2).state_dict()


@pytest.mark.parametrize("source", [m.value for m in Method])
def test_rows_keep_their_map_and_take_every_kind_of_view_of_the_other_family(cache, source):
    meta, rows = read_cache(cache, "gradient", "train")
    _, theirs = read_cache(cache, source, "train")
    merged, view_meta = views_from(rows, meta, cache, Method(source), ["train"])
    assert view_meta.method == source and len(merged) == len(rows) == 24
    for row, mine, other in zip(merged, rows, theirs, strict=True):
        assert row.example_id == mine.example_id == other.example_id
        np.testing.assert_array_equal(row.attribution, mine.attribution)  # the objective's map is untouched
        np.testing.assert_array_equal(row.extras.get(Magnitude).scores, mine.extras.get(Magnitude).scores)
        for kind in GUIDED:
            np.testing.assert_array_equal(row.extras.get(kind).masks, other.extras.get(kind).masks)
            np.testing.assert_array_equal(row.extras.get(kind).logits, other.extras.get(kind).logits)


def test_the_families_choose_different_contrastive_views(cache):
    """So that a test of the borrowed views can fail: the perturbation family's are not the gradient family's."""
    _, gradient = read_cache(cache, "gradient", "train")
    _, perturbation = read_cache(cache, "perturbation", "train")
    assert any(
        not np.array_equal(g.extras.get(ContrastiveViews).masks, p.extras.get(ContrastiveViews).masks)
        for g, p in zip(gradient, perturbation, strict=True)
    )


def test_the_gradient_objective_trains_on_the_occlusion_maps_views(cache, tmp_path):
    own = run(cache, tmp_path / "own")
    other = run(cache, tmp_path / "other", view_method=Method.PERTURBATION)
    assert own.views_from is None
    assert other.views_from == f"the perturbation family's, from {cache}"
    assert other.notes[0] == f"the view term's views: the perturbation family's, from {cache}"
    a, b = weights(tmp_path / "own"), weights(tmp_path / "other")
    assert any(not torch.equal(a[k], b[k]) for k in a)
    metrics = json.loads((tmp_path / "other" / "metrics.json").read_text())
    assert metrics["views_from"] == other.views_from and metrics["method"] == "gradient"
    card = (tmp_path / "other" / "README.md").read_text()
    assert f"KD on 1 cached contrastive view(s) per example per step ({other.views_from})" in card


def test_the_own_family_named_is_the_plain_run(cache, tmp_path):
    run(cache, tmp_path / "plain")
    report = run(cache, tmp_path / "named", view_method=Method.GRADIENT)
    assert report.views_from is None
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "named")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_separate_cache_of_one_family_gives_the_same_student(cache, tmp_path):
    run(cache, tmp_path / "named", view_method=Method.PERTURBATION)
    separate = one_family(cache, "perturbation", tmp_path / "perturbation.parquet")
    report = run(cache, tmp_path / "separate", view_cache=separate)
    assert report.views_from == f"the perturbation family's, from {separate}"
    a, b = weights(tmp_path / "named"), weights(tmp_path / "separate")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def folder(cache, tmp_path) -> Path:
    """A folder of one cache per family, as dvc.yaml's stage one writes data/cache/."""
    for method in Method:
        one_family(cache, method.value, tmp_path / "caches" / f"tiny-{method.value}.parquet")
    return tmp_path / "caches"


def test_a_folder_of_caches_gives_the_named_familys_views(cache, folder, tmp_path):
    """The student equals the one trained on the same views from a cache of every family, weight for weight."""
    run(cache, tmp_path / "named", view_method=Method.PERTURBATION)
    own = folder / "tiny-gradient.parquet"
    report = run(own, tmp_path / "folder", view_cache=folder, view_method=Method.PERTURBATION)
    assert report.views_from == f"the perturbation family's, from {folder / 'tiny-perturbation.parquet'}"
    a, b = weights(tmp_path / "named"), weights(tmp_path / "folder")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("views, view_method", [(1, None), (1, Method.GRADIENT), (0, None)])
def test_a_folder_of_caches_leaves_a_student_of_its_own_views_alone(cache, folder, tmp_path, views, view_method):
    """dvc.yaml passes the folder to every student: KD without views and an objective on its own views ignore it."""
    own = folder / "tiny-gradient.parquet"
    plain = run(own, tmp_path / "plain", views=views)
    report = run(own, tmp_path / "folder", view_cache=folder, views=views, view_method=view_method)
    assert plain.views_from is None and report.views_from is None
    a, b = weights(tmp_path / "plain"), weights(tmp_path / "folder")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_view_source_of_a_cache_a_folder_or_nothing(cache, folder):
    own = folder / "tiny-gradient.parquet"
    occl, gradient = Method.PERTURBATION, Method.GRADIENT
    assert view_source(own, None, None, gradient) is None
    assert view_source(own, None, gradient, gradient) is None
    assert view_source(cache, None, occl, gradient) == cache  # another family, from the cache itself
    assert view_source(own, cache, None, gradient) == cache  # a cache named is always read
    assert view_source(own, folder, None, gradient) is None
    assert view_source(own, folder, occl, gradient) == folder / "tiny-perturbation.parquet"
    assert view_source(own, folder, gradient, Method.FEATURE_SELECTION) == own


def test_a_folder_without_the_family_or_with_two_of_it_is_refused(cache, folder, tmp_path):
    shutil.rmtree(folder / "tiny-perturbation.parquet")
    own = folder / "tiny-gradient.parquet"
    with pytest.raises(EgkdError, match=r"0 hold the perturbation family's train split \(none\); name one with"):
        view_source(own, folder, Method.PERTURBATION, Method.GRADIENT)
    shutil.copytree(cache, folder / "every.parquet")
    one_family(cache, "perturbation", folder / "occl.parquet")
    with pytest.raises(
        EgkdError, match=r"2 hold the perturbation family's train split \(every.parquet, occl.parquet\)"
    ):
        view_source(own, folder, Method.PERTURBATION, Method.GRADIENT)
    with pytest.raises(EgkdError, match="view cache not found"):
        view_source(own, tmp_path / "nowhere", Method.PERTURBATION, Method.GRADIENT)


def test_a_view_cache_of_several_families_needs_one_named(cache, tmp_path):
    with pytest.raises(
        EgkdError, match="holds the train partitions of feature_selection, gradient, perturbation; name"
    ):
        run(cache, tmp_path / "s", view_cache=cache)


def test_views_of_other_sentences_are_refused(cache, tmp_path):
    fewer = one_family(cache, "perturbation", tmp_path / "fewer")
    part = read_part(part_path(fewer, "perturbation", "train", 0))
    write_part(part.path, dataclasses.replace(part.meta, num_examples=23), 0, part.rows[:23], truncated=0)
    with pytest.raises(EgkdError, match="has no row for example train-23: not the same sentences"):
        run(cache, tmp_path / "s", view_cache=fewer)


def test_views_of_another_teacher_are_refused(cache, tmp_path):
    other = one_family(cache, "perturbation", tmp_path / "other")
    part = read_part(part_path(other, "perturbation", "train", 0))
    write_part(part.path, dataclasses.replace(part.meta, teacher_weights_hash="0" * 64), 0, part.rows, truncated=0)
    with pytest.raises(EgkdError, match="cache field 'teacher_weights_hash' differs"):
        run(cache, tmp_path / "s", view_cache=other)


def test_another_familys_views_without_a_view_term_are_refused(cache, tmp_path):
    with pytest.raises(EgkdError, match=r"the view term is off \(distill.views is 0\)"):
        run(cache, tmp_path / "s", views=0, view_method=Method.PERTURBATION)


def test_a_missing_view_cache_is_refused(cache, tmp_path):
    with pytest.raises(EgkdError, match="view cache not found"):
        run(cache, tmp_path / "s", view_cache=tmp_path / "nowhere")


def test_the_cli_passes_both_options_and_refuses_an_unknown_family(cache, tmp_path):
    separate = one_family(cache, "perturbation", tmp_path / "p")
    common = [
        "distill",
        "--cache",
        str(cache),
        "--method",
        "gradient",
        "--views",
        "1",
        "--epochs",
        "1",
        "--layers",
        "1",
    ]
    ok = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "s"), "--view-cache", str(separate)])
    assert ok.exit_code == 0, ok.output
    assert "the view term's views: the perturbation family's" in ok.output
    bad = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "b"), "--view-method", "occlusion"])
    assert bad.exit_code == 2
    assert bad.output.strip().splitlines()[-1].startswith("error: option 'view_method' must be one of")

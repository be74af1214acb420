"""The views every family caches: which tokens each kind replaces, their seeded draws, the cache, stage two's picks."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from conftest import make_tiny_model_dir
from test_explain_run import request
from test_explainers import CASES, SINGLES, explain, make_batch, make_params, model, tokenizer, toy_model  # noqa: F401  (the module's fixtures)

from pipeline.cache.extras import (
    VIEW_KINDS,
    ContrastiveViews,
    Extras,
    PreservingViews,
    RandomViews,
    project,
    stack,
)
from pipeline.cache.project import overlap_matrix
from pipeline.cache.store import read_cache
from pipeline.cache.verify import verify_cache
from pipeline.config import DistillParams, ExplainParams, ViewParams
from pipeline.distill.view_term import ViewTerm
from pipeline.encoding import TokenBatch
from pipeline.errors import EgkdError
from pipeline.explain import REGISTRY, explainer_class, make_explainer
from pipeline.explain.record import explain_params_from_cache, method_params_json
from pipeline.explain.run import run_explain
from pipeline.explain.view_masks import replaced_count
from pipeline.methods import Method
from pipeline.models import load_tokenizer


def with_views(params: ExplainParams, **changes) -> ExplainParams:
    return dataclasses.replace(params, views=dataclasses.replace(params.views, **changes))


def explain_views(model, tokenizer, batch, method, variant, **changes):
    params = with_views(make_params(method, variant), **changes)
    return make_explainer(method, model, params, tokenizer.mask_token_id).explain(batch)


def test_every_registered_method_caches_every_kind_of_view():
    for method in REGISTRY:
        kinds = explainer_class(method).cached_extras()
        assert kinds[-len(VIEW_KINDS) :] == VIEW_KINDS and len(set(kinds)) == len(kinds), method


def test_replaced_tokens_are_a_fraction_of_the_sentence_and_at_least_one():
    real = np.zeros((5, 12), dtype=bool)
    for row, n in enumerate((0, 1, 4, 5, 11)):
        real[row, 1 : 1 + n] = True
    assert replaced_count(0.2, real).tolist() == [0, 1, 1, 1, 3]
    assert replaced_count(0.5, real).tolist() == [0, 1, 2, 3, 6]


@pytest.mark.parametrize("method,variant", CASES)
def test_views_on_an_additive_model_exact(tokenizer, method, variant):
    """Output = sum of token values; "good film but bad" has scores 2, 0.5, 0, -1 under every method.

    k = ceil(0.2 * 4) = 1. Label-preserving views replace a token of the lower half by |score| ("film",
    "but"), contrastive ones a token of the top 2k = 2 by signed score ("good", "film"), random ones any;
    the teacher's output on a view is the sum without the replaced token.
    """
    model = toy_model(tokenizer, {"good": [2.0], "bad": [-1.0], "film": [0.5]})
    batch = make_batch(tokenizer, ["good film but bad"])
    overrides = {"ridge": 0.0} if method is Method.FEATURE_SELECTION else {}
    result = explain(model, tokenizer, batch, method, variant, **overrides)
    values = torch.tensor([0.0, 2.0, 0.5, 0.0, -1.0, 0.0])
    allowed = {PreservingViews: {2, 3}, ContrastiveViews: {1, 2}, RandomViews: {1, 2, 3, 4}}
    for kind in VIEW_KINDS:
        views = result.extras.get(kind)
        assert views.masks.shape == (1, 4, 6) and views.logits.shape == (1, 4, 1)
        assert (views.masks.sum(-1) == 1).all()
        positions = set(views.masks[0].nonzero()[:, 1].tolist())
        assert positions <= allowed[kind], kind.kind
        expected = 1.5 - (views.masks[0].float() * values).sum(-1)
        torch.testing.assert_close(views.logits[0, :, 0], expected, atol=1e-5, rtol=0)
    drawn = set(result.extras.get(RandomViews).masks[0].nonzero()[:, 1].tolist())
    assert len(drawn) > 1  # four random views do not all replace the same token


def _rank(values: torch.Tensor, descending: bool) -> torch.Tensor:
    order = values.argsort(descending=descending, stable=True)
    return torch.empty_like(order).scatter_(0, order, torch.arange(len(order)))


@pytest.mark.parametrize("method,variant", CASES)
def test_guided_views_replace_only_tokens_of_their_pool(model, tokenizer, method, variant):
    """Label-preserving views touch only the lower half by |score|, contrastive ones only the top 2k by signed
    score, and every view replaces exactly k = ceil(0.2 n) real tokens; the logits are the teacher's on it."""
    batch = make_batch(tokenizer, SINGLES)
    result = explain(model, tokenizer, batch, method, variant)
    real = ~batch.special_mask
    for b in range(batch.size):
        scores = result.attribution[b][real[b]]
        n = len(scores)
        k = max(1, math.ceil(0.2 * n - 1e-9))
        low = _rank(scores.abs(), descending=False) < max(k, n // 2)
        top = _rank(scores, descending=True) < 2 * k
        for kind, pool in ((PreservingViews, low), (ContrastiveViews, top), (RandomViews, torch.ones(n, dtype=bool))):
            masks = result.extras.get(kind).masks[b]
            assert (masks.sum(-1) == k).all() and not masks[:, ~real[b]].any(), kind.kind
            assert not (masks[:, real[b]] & ~pool).any(), (kind.kind, b)
    for kind in VIEW_KINDS:
        views = result.extras.get(kind)
        ids = (
            batch.input_ids[:, None, :]
            .masked_fill(views.masks, tokenizer.mask_token_id)
            .reshape(-1, batch.input_ids.shape[1])
        )
        with torch.no_grad():
            direct = model(
                input_ids=ids,
                attention_mask=batch.attention_mask.repeat_interleave(4, 0),
                token_type_ids=batch.token_type_ids.repeat_interleave(4, 0),
            ).logits
        torch.testing.assert_close(views.logits.reshape(-1, 2), direct, atol=1e-5, rtol=1e-4)


def test_random_views_are_seeded_shared_by_the_families_and_the_same_in_any_batch(model, tokenizer):
    batch = make_batch(tokenizer, SINGLES)
    by_method = {
        method: explain(model, tokenizer, batch, method, variant).extras.get(RandomViews).masks
        for method, variant in CASES
    }
    first = next(iter(by_method.values()))
    assert all(torch.equal(first, masks) for masks in by_method.values())  # a draw of (seed, example) alone
    other_seed = dataclasses.replace(make_params(Method.GRADIENT, "input_x_gradient"), seed=1)
    reseeded = make_explainer(Method.GRADIENT, model, other_seed, tokenizer.mask_token_id).explain(batch)
    assert not torch.equal(reseeded.extras.get(RandomViews).masks, first)
    for i in (0, 5, 6):
        alone = make_batch(tokenizer, [SINGLES[i]])
        alone = dataclasses.replace(alone, example_ids=[f"dev-{i}"])
        masks = explain(model, tokenizer, alone, Method.GRADIENT, "input_x_gradient").extras.get(RandomViews).masks
        assert torch.equal(masks[0], first[i, :, : alone.input_ids.shape[1]])


def test_the_view_count_and_fraction_are_honoured(model, tokenizer):
    batch = make_batch(tokenizer, SINGLES)
    result = explain_views(model, tokenizer, batch, Method.PERTURBATION, "occlusion", count=2, fraction=0.5)
    expected = replaced_count(0.5, (~batch.special_mask).numpy())
    for kind in VIEW_KINDS:
        views = result.extras.get(kind)
        assert views.masks.shape[1] == views.logits.shape[1] == 2
        assert (views.masks.sum(-1) == expected[:, None]).all()


def test_no_views_give_an_empty_view_axis_through_the_cache(tiny_model_dir, glue_dir, tmp_path):
    """explain.views.count 0: every kind is cached with no views; reading, verifying, re-projecting and
    batching keep the token and class axes."""
    params = with_views(ExplainParams(), count=0)
    run_explain(request(tiny_model_dir, glue_dir, tmp_path, Method.FEATURE_SELECTION, views=params.views))
    assert verify_cache(tmp_path).ok
    meta, rows = read_cache(tmp_path, "feature_selection", "dev")
    assert json.loads(meta.method_params)["views"] == {"count": 0, "fraction": 0.2}
    for row in rows:
        for kind in VIEW_KINDS:
            views = row.extras.get(kind)
            assert views.masks.shape == (0, len(row.input_ids)) and views.logits.shape == (0, 2)
    other = load_tokenizer(str(make_tiny_model_dir(tmp_path / "other", vocab=_other_vocab())))
    from pipeline.cache.project import layout
    from pipeline.data import Example
    from pipeline.encoding import encode

    row = rows[0]
    (item,) = encode(other, [Example(row.example_id, "dev", row.text_a, row.text_b, row.label)], 64)
    projected = project(row.extras, overlap_matrix(layout(row), layout(item)))
    assert projected.get(PreservingViews).masks.shape == (0, len(item.input_ids))
    batch = stack([r.extras for r in rows[:3]], 20)
    assert batch.get(RandomViews).masks.shape == (3, 0, 20) and batch.get(RandomViews).logits.shape == (3, 0, 2)


def _other_vocab() -> list[str]:
    from conftest import VOCAB

    return [{"an": "films"}.get(w, w) for w in VOCAB]


def test_other_views_make_another_run(tiny_model_dir, glue_dir, tmp_path):
    run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    with pytest.raises(EgkdError, match="cache field 'method_params' differs"):
        run_explain(request(tiny_model_dir, glue_dir, tmp_path, views=ViewParams(count=2)))


def test_the_record_keeps_the_views_and_a_student_is_explained_without_them():
    recorded = with_views(ExplainParams(seed=3), count=6, fraction=0.3)
    record = method_params_json(Method.PERTURBATION, recorded)
    assert json.loads(record)["views"] == {"count": 6, "fraction": 0.3}
    back = explain_params_from_cache(ExplainParams(), Method.PERTURBATION, record)
    assert back.seed == 3 and back.views.count == 0  # the map is the same; views would only cost forwards


# --- stage two: which cached views a step trains on ---------------------------------------------------


def view_batch(views: int = 4, size: int = 3, length: int = 6) -> object:
    """A stand-in student batch: each kind's view v of example b masks token (b + v) % length, logits (v, kind)."""
    items = []
    for index, kind in enumerate(VIEW_KINDS):
        masks = torch.zeros(size, views, length, dtype=torch.bool)
        for b in range(size):
            for v in range(views):
                masks[b, v, (b + v) % length] = True
        logits = torch.stack([torch.tensor([[float(v), float(index)] for v in range(views)]) for _ in range(size)])
        items.append(kind(masks, logits))
    return dataclasses.make_dataclass("Batch", ["extras"])(Extras(tuple(items)))


@pytest.mark.parametrize("kind", ["preserving", "contrastive", "random"])
def test_a_step_picks_distinct_views_of_its_kind_from_its_seed(kind):
    term = ViewTerm(kind, 3, 2.0, True, 4)
    batch = view_batch()
    masks, logits = term.pick(batch, 0, torch.Generator().manual_seed(5))
    again, _ = term.pick(batch, 0, torch.Generator().manual_seed(5))
    other, _ = term.pick(batch, 0, torch.Generator().manual_seed(6))
    assert masks.shape == (3, 3, 6) and logits.shape == (3, 3, 2) and torch.equal(masks, again)
    assert not torch.equal(masks, other)
    index = [k.kind for k in VIEW_KINDS].index(kind)
    assert (logits[..., 1] == index).all()  # the kind asked for
    for b in range(3):
        picked = logits[b, :, 0].long()
        assert len(set(picked.tolist())) == 3  # without replacement
        for slot, v in enumerate(picked.tolist()):  # masks and logits of the same view
            assert masks[b, slot].nonzero().item() == (b + v) % 6


def test_the_view_term_is_off_without_views_or_weight_and_refuses_too_many():
    assert (
        ViewTerm.of(DistillParams(views=0), 4) is None and ViewTerm.of(DistillParams(views=2, view_weight=0), 4) is None
    )
    term = ViewTerm.of(DistillParams(views=2, view_kind="random"), 4)
    assert term is not None and term.requires == (RandomViews,)
    with pytest.raises(EgkdError, match="asks for 5 preserving view"):
        ViewTerm("preserving", 5, 2.0, True, 4).pick(view_batch(), 0, torch.Generator())


def test_the_view_term_is_kd_on_the_masked_inputs():
    """The student runs once on every picked view, [MASK] in place of the view's tokens."""
    from pipeline import losses

    calls = []

    class Student(torch.nn.Module):
        def forward(self, input_ids, attention_mask, token_type_ids):
            calls.append(input_ids.clone())
            return type("Out", (), {"logits": (input_ids == 4).float()[:, :2]})()

    from pipeline.cache.project import StudentBatch

    extras = view_batch(views=2, size=2, length=4).extras
    tokens = TokenBatch(
        example_ids=["a", "b"],
        input_ids=torch.tensor([[2, 7, 8, 3], [2, 9, 3, 0]]),
        attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        token_type_ids=torch.zeros(2, 4, dtype=torch.long),
        special_mask=torch.tensor([[True, False, False, True], [True, False, True, True]]),
    )
    batch = StudentBatch(
        tokens=tokens,
        labels=torch.tensor([0, 1]),
        teacher_logits=torch.zeros(2, 2),
        attribution=torch.zeros(2, 4),
        extras=extras,
    )
    term = ViewTerm("random", 2, 2.0, False, 4)
    value = term.compute(Student(), batch, 0, torch.Generator().manual_seed(1))
    masks, teacher = term.pick(batch, 0, torch.Generator().manual_seed(1))
    assert len(calls) == 1 and calls[0].shape == (4, 4)  # one forward of B * views rows
    replaced = masks & ~tokens.special_mask[:, None, :]  # special tokens and padding are never replaced
    expected_ids = tokens.input_ids[:, None, :].masked_fill(replaced, 4).reshape(4, 4)
    assert torch.equal(calls[0], expected_ids)
    student = (expected_ids == 4).float()[:, :2].view(2, 2, 2)
    assert value.item() == pytest.approx(losses.view_loss(student, teacher, 2.0, False).item())


def test_random_views_depend_on_the_run_seed_not_on_the_family_parameters(model, tokenizer):
    batch = make_batch(tokenizer, SINGLES[:3])
    a = explain(model, tokenizer, batch, Method.PERTURBATION, "occlusion", mask_fraction=0.5)
    b = explain(model, tokenizer, batch, Method.PERTURBATION, "shapley")
    assert torch.equal(a.extras.get(RandomViews).masks, b.extras.get(RandomViews).masks)

"""Occlusion with spans (explain.perturbation.window and stride): captum's sliding windows over the real tokens,
exact values on an additive toy model, the cost in copies, and what the cache records."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_explainers import explain, make_batch, make_params, model, tokenizer, toy_model  # noqa: F401

from pipeline.config import ExplainParams, PerturbationParams, load_params
from pipeline.errors import EgkdError
from pipeline.explain import make_explainer
from pipeline.explain.perturbation import window_starts
from pipeline.explain.record import explain_params_from_cache, method_params_json
from pipeline.methods import Method


@pytest.mark.parametrize(
    "real, window, stride, starts",
    [
        (4, 1, 1, [0, 1, 2, 3]),
        (10, 3, 2, [0, 2, 4, 6, 7]),  # the last window ends at the last token
        (9, 3, 3, [0, 3, 6]),
        (2, 8, 8, [0]),  # shorter than the window: one copy, every token masked
        (0, 2, 1, []),
        (512, 8, 8, list(range(0, 512, 8))),  # 64 forwards for 512 tokens instead of 512
    ],
)
def test_window_starts(real, window, stride, starts):
    assert window_starts(real, window, stride) == starts


def test_a_token_gets_the_mean_drop_of_the_windows_that_cover_it(tokenizer):
    """Output = sum of token values ([MASK] worth 0): a window's drop is its tokens' sum. With window 2 and stride 1
    over "good film but bad" (2, 0.5, 0, -1) the windows drop 2.5, 0.5 and -1: "film" gets (2.5 + 0.5) / 2."""
    model = toy_model(tokenizer, {"good": [2.0], "bad": [-1.0], "film": [0.5]})
    batch = make_batch(tokenizer, ["good film but bad", "bad"])
    result = explain(model, tokenizer, batch, Method.PERTURBATION, "occlusion", window=2, stride=1)
    expected = torch.tensor([[0.0, 2.5, 1.5, -0.25, -1.0, 0.0], [0.0, -1.0, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(result.attribution, expected, atol=1e-5, rtol=0)
    spaced = explain(model, tokenizer, batch, Method.PERTURBATION, "occlusion", window=2, stride=2)
    expected = torch.tensor([[0.0, 2.5, 2.5, -1.0, -1.0, 0.0], [0.0, -1.0, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(spaced.attribution, expected, atol=1e-5, rtol=0)


def test_one_token_windows_are_the_per_token_occlusion(model, tokenizer):
    """The windowed path with window 1 and stride 1 computes exactly what leave-one-out does."""
    batch = make_batch(tokenizer, ["the film is good", "a very boring movie , not fun", ("the plot", "the story")])
    explainer = make_explainer(Method.PERTURBATION, model, make_params(Method.PERTURBATION, "occlusion"), 4)
    runtime = explainer.runtime(batch)
    logits = model(**batch.model_inputs()).logits
    target = logits.argmax(-1)
    full = logits.softmax(-1).gather(-1, target[:, None])[:, 0]
    windows = explainer._windows(batch, runtime, target, full)
    torch.testing.assert_close(windows, explainer._occlusion(batch, runtime, target, full), atol=1e-6, rtol=0)


def test_copies_follow_the_windows():
    params = make_params(Method.PERTURBATION, "occlusion", window=8, stride=8)
    explainer = make_explainer(Method.PERTURBATION, torch.nn.Linear(1, 1), params, 4)
    assert explainer.copies(512) == 64 and explainer.copies(5) == 1
    per_token = make_explainer(
        Method.PERTURBATION, torch.nn.Linear(1, 1), make_params(Method.PERTURBATION, "occlusion"), 4
    )
    assert per_token.copies(512) == 512


def test_the_cache_records_the_spans_only_when_used():
    default = ExplainParams()
    assert "window" not in method_params_json(Method.PERTURBATION, default)  # caches made before spans: same record
    spans = dataclasses.replace(default, perturbation=PerturbationParams(window=8, stride=4))
    recorded = method_params_json(Method.PERTURBATION, spans)
    assert (json.loads(recorded)["window"], json.loads(recorded)["stride"]) == (8, 4)
    back = explain_params_from_cache(default, Method.PERTURBATION, recorded)  # students are explained the same way
    assert (back.perturbation.window, back.perturbation.stride) == (8, 4)


def test_a_stride_beyond_the_window_is_refused(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("explain:\n  perturbation:\n    window: 2\n    stride: 3\n", encoding="utf-8")
    with pytest.raises(EgkdError, match="explain.perturbation.stride 3 exceeds window 2"):
        load_params(path)

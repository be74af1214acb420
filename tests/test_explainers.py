"""The explainers: the shared contract for every registered method, captum equivalence, exact values."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from captum.attr import LayerGradientXActivation, LayerIntegratedGradients, Occlusion
from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

from pipeline.cache.extras import Axis, Selection, Views
from pipeline.config import ExplainParams, FeatureSelectionParams, GradientParams, PerturbationParams, TokenBudget
from pipeline.data import Example
from pipeline.draws import below, example_keys, random_bits, stream_id
from pipeline.encoding import TokenBatch, collate, encode
from pipeline.explain import REGISTRY, explainer_class, make_explainer
from pipeline.forwards import Runtime, plan_chunks
from pipeline.methods import Method
from pipeline.precision import resolve_precision

SINGLES = [
    "the film is good",
    "a very boring movie , not fun",
    "great !",
    "the worst plot and dull acting",
    "it was one of the best stories",
    "no",
    "this movie is funny but the story is bad",
    "love it",
]
PAIRS = [
    ("the film is good", "it was great"),
    ("boring", "not fun and very dull acting"),
    ("the plot", "the story"),
    ("a great movie", "awful"),
]

# (method, variant) for every registered method; small sizes keep the file fast.
CASES = [
    (Method.GRADIENT, "input_x_gradient"),
    (Method.GRADIENT, "integrated_gradients"),
    (Method.PERTURBATION, "occlusion"),
    (Method.PERTURBATION, "shapley"),
    (Method.FEATURE_SELECTION, None),
]


def make_params(method: Method, variant: str | None, **overrides) -> ExplainParams:
    sections = {
        Method.GRADIENT: ("gradient", GradientParams(ig_steps=8)),
        Method.PERTURBATION: ("perturbation", PerturbationParams(shapley_samples=4)),
        Method.FEATURE_SELECTION: ("feature_selection", FeatureSelectionParams(samples=24)),
    }
    name, section = sections[method]
    if variant is not None:
        section = dataclasses.replace(section, variant=variant)
    return ExplainParams(method=method.value, **{name: dataclasses.replace(section, **overrides)})


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.convert_tokens_to_ids("good") != tokenizer.unk_token_id
    return tokenizer


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    """The tiny BERT with larger random weights, so that outputs vary visibly with the input."""
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.initializer_range = 0.3
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval()


def make_batch(tokenizer, texts) -> TokenBatch:
    examples = [Example(f"dev-{i}", "dev", *(t if isinstance(t, tuple) else (t, None)), 0) for i, t in enumerate(texts)]
    return collate(encode(tokenizer, examples, 64), tokenizer.pad_token_id)


def explain(model, tokenizer, batch, method, variant, **overrides):
    return make_explainer(method, model, make_params(method, variant, **overrides), tokenizer.mask_token_id).explain(
        batch
    )


def test_cases_cover_every_registered_method():
    assert {method for method, _ in CASES} == set(REGISTRY)


@pytest.mark.parametrize("texts", [SINGLES, PAIRS], ids=["single", "pair"])
@pytest.mark.parametrize("method,variant", CASES)
def test_contract(model, tokenizer, texts, method, variant):
    batch = make_batch(tokenizer, texts)
    first = explain(model, tokenizer, batch, method, variant)
    second = explain(model, tokenizer, batch, method, variant)
    size, length = batch.input_ids.shape
    attribution = first.attribution
    assert attribution.shape == (size, length) and attribution.dtype == torch.float32
    assert torch.isfinite(attribution).all()
    assert (attribution[batch.special_mask] == 0).all()
    assert (attribution[~batch.special_mask] != 0).any()
    assert (batch.token_type_ids[~batch.special_mask] == 1).any() or texts is SINGLES  # pairs: both segments
    torch.testing.assert_close(first.logits, model(**batch.model_inputs()).logits, atol=1e-5, rtol=0)
    assert torch.equal(attribution, second.attribution)
    assert first.extras.kinds == tuple(kind.kind for kind in explainer_class(method).cached_extras())
    assert not any(t.is_inference() for t in (attribution, first.logits))  # usable outside inference mode
    for item, again in zip(first.extras.items, second.extras.items, strict=True):
        for (spec, tensor), (_, repeat) in zip(item.arrays(), again.arrays(), strict=True):
            sizes = [
                {Axis.TOKEN: length, Axis.CLASS: 2}.get(axis, tensor.shape[1 + i]) for i, axis in enumerate(spec.axes)
            ]
            assert tuple(tensor.shape) == (size, *sizes), spec.name
            assert tensor.dtype == torch.from_numpy(np.zeros(0, spec.dtype)).dtype or spec.dtype != bool, spec.name
            assert not tensor.is_inference() and torch.equal(tensor, repeat), spec.name
            if spec.dtype == bool and Axis.TOKEN in spec.axes:  # masks never touch special tokens or padding
                special = batch.special_mask.view(size, *[1] * (tensor.ndim - 2), length).expand_as(tensor)
                assert not tensor[special].any(), spec.name
    views = first.extras.get(Views)
    if views is not None:
        assert views.masks.shape[1] == 3
        n = (~batch.special_mask).sum(1)
        expected = torch.tensor([math.ceil(0.2 * int(m) - 1e-9) for m in n])
        assert (views.masks.sum(2) == expected[:, None]).all()
    selection = first.extras.get(Selection)
    if selection is not None:
        assert (selection.mask.sum(1) >= 1).all()


@pytest.mark.parametrize("method,variant", CASES)
def test_same_result_for_batch_of_one_and_of_eight(model, tokenizer, method, variant):
    together = explain(model, tokenizer, make_batch(tokenizer, SINGLES), method, variant)
    for i in (0, 5, 6):  # a short, the shortest and the longest sentence
        alone_batch = make_batch(tokenizer, [SINGLES[i]])
        alone_batch = dataclasses.replace(alone_batch, example_ids=[f"dev-{i}"])
        alone = explain(model, tokenizer, alone_batch, method, variant)
        n = alone_batch.input_ids.shape[1]
        torch.testing.assert_close(alone.attribution[0], together.attribution[i, :n], atol=1e-5, rtol=1e-4)
        assert (together.attribution[i, n:] == 0).all()
        for item, whole in zip(alone.extras.items, together.extras.items, strict=True):
            for (spec, mine), (_, theirs) in zip(item.arrays(), whole.arrays(), strict=True):
                theirs = theirs[i][..., :n] if Axis.TOKEN in spec.axes else theirs[i]
                if spec.dtype == bool:
                    assert torch.equal(mine[0], theirs), spec.name
                else:
                    torch.testing.assert_close(mine[0], theirs, atol=1e-5, rtol=0)


def captum_inputs(model, batch):
    def logits(ids, attention, types):
        return model(input_ids=ids.long(), attention_mask=attention, token_type_ids=types).logits

    target = logits(batch.input_ids, batch.attention_mask, batch.token_type_ids).argmax(-1)
    return logits, target, (batch.attention_mask, batch.token_type_ids)


@pytest.mark.parametrize("texts", [SINGLES, PAIRS], ids=["single", "pair"])
def test_input_x_gradient_matches_captum(model, tokenizer, texts):
    batch = make_batch(tokenizer, texts)
    forward, target, extra = captum_inputs(model, batch)
    layer = LayerGradientXActivation(forward, model.get_input_embeddings())
    expected = layer.attribute(batch.input_ids, target=target, additional_forward_args=extra).sum(-1)
    ours = explain(model, tokenizer, batch, Method.GRADIENT, "input_x_gradient").attribution
    real = ~batch.special_mask
    torch.testing.assert_close(ours[real], expected[real], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("variant", ["input_x_gradient", "integrated_gradients"])
def test_the_magnitude_map_is_the_norm_over_the_hidden_dimension(model, tokenizer, variant):
    """Magnitude: ``||(E - E0)[t] * sum_s w_s dF/dE(E0 + a_s (E - E0))[t]||_2`` per token (zero at special tokens);
    the signed attribution is the same products summed over the hidden dimension."""
    from pipeline.cache.extras import Magnitude
    from pipeline.explain.gradient import gauss_legendre

    batch = make_batch(tokenizer, PAIRS)
    result = explain(model, tokenizer, batch, Method.GRADIENT, variant, ig_steps=3)
    embed = model.get_input_embeddings()
    words = embed(batch.input_ids).detach()
    if variant == "input_x_gradient":
        baseline, (alphas, weights) = torch.zeros_like(words), (torch.ones(1), torch.ones(1))
    else:
        baseline = embed(batch.input_ids.masked_fill(~batch.special_mask, tokenizer.pad_token_id)).detach()
        alphas, weights = gauss_legendre(3)
    target = model(**batch.model_inputs()).logits.argmax(-1)
    products = torch.zeros_like(words)
    for alpha, weight in zip(alphas.tolist(), weights.tolist(), strict=True):
        point = (baseline + alpha * (words - baseline)).requires_grad_(True)
        logits = model(inputs_embeds=point, attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids)
        (grad,) = torch.autograd.grad(logits.logits.gather(1, target[:, None]).sum(), point)
        products += weight * (words - baseline) * grad
    real = ~batch.special_mask
    magnitude = result.extras.get(Magnitude).scores
    torch.testing.assert_close(magnitude[real], products.norm(dim=-1)[real], atol=1e-5, rtol=1e-4)
    assert (magnitude[~real] == 0).all() and (magnitude[real] > 0).all()
    torch.testing.assert_close(result.attribution[real], products.sum(-1)[real], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("texts", [SINGLES, PAIRS], ids=["single", "pair"])
def test_integrated_gradients_matches_captum(model, tokenizer, texts):
    batch = make_batch(tokenizer, texts)
    forward, target, extra = captum_inputs(model, batch)
    baselines = batch.input_ids.masked_fill(~batch.special_mask, tokenizer.pad_token_id)
    layer = LayerIntegratedGradients(forward, model.get_input_embeddings())
    expected = layer.attribute(
        batch.input_ids, baselines=baselines, target=target, additional_forward_args=extra, n_steps=8
    ).sum(-1)
    ours = explain(model, tokenizer, batch, Method.GRADIENT, "integrated_gradients").attribution
    real = ~batch.special_mask
    torch.testing.assert_close(ours[real], expected[real], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("texts", [SINGLES, PAIRS], ids=["single", "pair"])
def test_occlusion_matches_captum(model, tokenizer, texts):
    batch = make_batch(tokenizer, texts)
    forward, target, extra = captum_inputs(model, batch)
    occlusion = Occlusion(lambda *args: forward(*args).softmax(-1))
    expected = occlusion.attribute(
        batch.input_ids,
        sliding_window_shapes=(1,),
        baselines=tokenizer.mask_token_id,
        target=target,
        additional_forward_args=extra,
        perturbations_per_eval=64,
    )
    ours = explain(model, tokenizer, batch, Method.PERTURBATION, "occlusion").attribution
    real = ~batch.special_mask
    torch.testing.assert_close(ours[real], expected[real].float(), atol=1e-5, rtol=1e-4)


def test_shapley_sampling_is_efficient(model, tokenizer):
    """Every permutation telescopes: attributions sum to p(x) - p(every real token masked)."""
    batch = make_batch(tokenizer, SINGLES)
    ours = explain(model, tokenizer, batch, Method.PERTURBATION, "shapley").attribution
    with torch.no_grad():
        full = model(**batch.model_inputs()).logits.softmax(-1)
        target = full.argmax(-1, keepdim=True)
        empty_ids = batch.input_ids.masked_fill(~batch.special_mask, tokenizer.mask_token_id)
        empty = model(
            input_ids=empty_ids, attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids
        ).logits.softmax(-1)
    expected = (full.gather(1, target) - empty.gather(1, target))[:, 0]
    torch.testing.assert_close(ours.sum(1), expected, atol=1e-5, rtol=0)


class BagOfWords(torch.nn.Module):
    """A toy classifier: the logits are the sum of the (hand-set) vectors of the attended tokens."""

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding.from_pretrained(vectors, freeze=False)
        self.config = SimpleNamespace(num_labels=vectors.shape[1], pad_token_id=0)

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.embed

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None):
        vectors = self.embed(input_ids) if inputs_embeds is None else inputs_embeds
        return SimpleNamespace(logits=(vectors * attention_mask[..., None]).sum(1))


def toy_model(tokenizer, values: dict[str, list[float]]) -> BagOfWords:
    vocab = tokenizer.get_vocab()
    vectors = torch.zeros(len(vocab), len(next(iter(values.values()))))
    for word, vector in values.items():
        vectors[vocab[word]] = torch.tensor(vector)
    return BagOfWords(vectors)


@pytest.mark.parametrize("method,variant", CASES)
def test_exact_values_on_an_additive_regression_model(tokenizer, method, variant):
    """Output = sum of token values, [MASK] and [PAD] worth 0: every method gives each token its value."""
    model = toy_model(tokenizer, {"good": [2.0], "bad": [-1.0], "film": [0.5]})
    batch = make_batch(tokenizer, ["good film but bad", "bad"])
    overrides = {"ridge": 0.0} if method is Method.FEATURE_SELECTION else {}
    result = explain(model, tokenizer, batch, method, variant, **overrides)
    expected = torch.tensor([[0.0, 2.0, 0.5, 0.0, -1.0, 0.0], [0.0, -1.0, 0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(result.attribution, expected, atol=1e-4, rtol=0)
    views, selection = result.extras.get(Views), result.extras.get(Selection)
    if method is Method.PERTURBATION:  # view 0 masks the top ceil(0.2 * n) tokens: "good", then "bad"
        assert views.masks[:, 0].nonzero().tolist() == [[0, 1], [1, 1]]
        torch.testing.assert_close(views.logits[:, 0, 0], torch.tensor([-0.5, 0.0]))
    if method is Method.FEATURE_SELECTION:  # the one selected token keeps only its own value
        assert selection.mask.nonzero().tolist() == [[0, 1], [1, 1]]
        torch.testing.assert_close(selection.logits[:, 0], torch.tensor([2.0, -1.0]))


def test_occlusion_exact_values_on_a_toy_classifier(tokenizer):
    """Logits (2, 1) for "good bad": masking "good" gives (0, 1), masking "bad" gives (2, 0)."""
    model = toy_model(tokenizer, {"good": [2.0, 0.0], "bad": [0.0, 1.0]})
    batch = make_batch(tokenizer, ["good bad"])
    result = explain(model, tokenizer, batch, Method.PERTURBATION, "occlusion")
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731  p(class 0) for logits (a, b) is sigmoid(a - b)
    expected = torch.tensor([[0.0, sigmoid(1) - sigmoid(-1), sigmoid(1) - sigmoid(2), 0.0]])
    torch.testing.assert_close(result.attribution, expected, atol=1e-6, rtol=0)


# --- precision, token budgets, device-side draws ----------------------------------------------------


def with_runtime(params: ExplainParams, **changes) -> ExplainParams:
    return dataclasses.replace(params, **changes)


def explain_with(model, tokenizer, batch, method, variant, **changes):
    params = with_runtime(make_params(method, variant), **changes)
    return make_explainer(method, model, params, tokenizer.mask_token_id).explain(batch)


def spearman_and_overlap(first: torch.Tensor, second: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """Mean Spearman correlation and top-20% overlap of two (B, T) maps over each row's real tokens."""
    from scipy import stats

    correlations, overlaps = [], []
    for b in range(first.shape[0]):
        a, c = first[b][real[b]].numpy(), second[b][real[b]].numpy()
        if len(a) > 1 and np.ptp(a) > 0 and np.ptp(c) > 0:
            correlations.append(stats.spearmanr(a, c)[0])
        k = max(1, math.ceil(0.2 * len(a) - 1e-9))
        overlaps.append(len(set(np.argsort(-a, kind="stable")[:k]) & set(np.argsort(-c, kind="stable")[:k])) / k)
    return float(np.mean(correlations)), float(np.mean(overlaps))


@pytest.mark.parametrize("method,variant", CASES)
def test_bf16_maps_rank_tokens_as_fp32_maps_do(model, tokenizer, method, variant):
    """bf16 autocast (here on the CPU) changes the values a little, not the ranking. The bound is looser than
    the benchmark's on a fine-tuned teacher: this random tiny model's scores are close together."""
    batch = make_batch(tokenizer, SINGLES + [a for a, _ in PAIRS])
    fp32 = explain_with(model, tokenizer, batch, method, variant, precision="fp32")
    bf16 = explain_with(model, tokenizer, batch, method, variant, precision="bf16")
    assert not torch.equal(fp32.attribution, bf16.attribution)  # autocast did take effect
    assert (bf16.attribution[batch.special_mask] == 0).all() and bf16.attribution.dtype == torch.float32
    spearman, overlap = spearman_and_overlap(fp32.attribution, bf16.attribution, ~batch.special_mask)
    assert spearman >= 0.97 and overlap >= 0.9, (spearman, overlap)
    torch.testing.assert_close(bf16.logits, fp32.logits, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("method,variant", CASES)
def test_bf16_result_does_not_depend_on_batch(model, tokenizer, method, variant):
    together = explain_with(model, tokenizer, make_batch(tokenizer, SINGLES), method, variant, precision="bf16")
    for i in (0, 5, 6):
        alone_batch = make_batch(tokenizer, [SINGLES[i]])
        alone_batch = dataclasses.replace(alone_batch, example_ids=[f"dev-{i}"])
        alone = explain_with(model, tokenizer, alone_batch, method, variant, precision="bf16")
        n = alone_batch.input_ids.shape[1]
        torch.testing.assert_close(alone.attribution[0], together.attribution[i, :n], atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("method,variant", CASES)
def test_token_budget_does_not_change_results(model, tokenizer, method, variant):
    """Forwards of at most 24 padded tokens (a row or two) give what one forward of everything gives."""
    batch = make_batch(tokenizer, PAIRS)
    small = explain_with(model, tokenizer, batch, method, variant, tokens_per_forward=TokenBudget(cpu=24))
    large = explain_with(model, tokenizer, batch, method, variant, tokens_per_forward=TokenBudget(cpu=10**6))
    torch.testing.assert_close(small.attribution, large.attribution, atol=1e-5, rtol=1e-4)
    for item, whole in zip(small.extras.items, large.extras.items, strict=True):
        for (spec, mine), (_, theirs) in zip(item.arrays(), whole.arrays(), strict=True):
            torch.testing.assert_close(mine, theirs, atol=1e-5, rtol=1e-4, msg=spec.name)


def test_chunks_fill_the_token_budget():
    runtime = Runtime(torch.device("cpu"), "fp32", tokens=20)
    lengths = np.array([6, 4, 9])
    owner = np.array([0, 0, 0, 1, 1, 2, 2, 2])  # rows: 6 6 6 4 4 9 9 9 tokens long
    chunks = plan_chunks(lengths, owner, runtime, width=9)
    assert [(c.start, c.stop, c.length) for c in chunks] == [(0, 3, 6), (3, 5, 4), (5, 7, 9), (7, 8, 9)]
    assert not any(c.padded for c in chunks)  # each chunk holds rows of one length
    assert [c.padded for c in plan_chunks(lengths, owner, Runtime(torch.device("cpu"), "fp32", 100), 9)] == [True]
    gpu = Runtime(torch.device("cuda"), "bf16", tokens=20)  # lengths rounded up to 8 (at most the width)
    assert [(c.start, c.stop, c.length) for c in plan_chunks(lengths, owner, gpu, width=9)] == [
        (0, 2, 8),
        (2, 4, 8),
        (4, 6, 9),  # an 8 and a 9 padded to 9: 18 tokens
        (6, 8, 9),
    ]
    assert [c.padded for c in plan_chunks(lengths, owner, gpu, width=9)] == [True, True, True, False]
    assert plan_chunks(lengths, owner[:0], runtime, width=9) == []


def test_batches_hold_one_token_budget_of_copies(model, tokenizer):
    from pipeline.explain.part import plan_batches

    items = encode(tokenizer, [Example(f"x{i}", "dev", text, None, 0) for i, text in enumerate(SINGLES)], 64)
    explainer = make_explainer(Method.PERTURBATION, model, make_params(Method.PERTURBATION, "occlusion"), 4)
    # Occlusion: one copy per real token, each as long as the batch's longest (first) example.
    cost = {i: int((~e.special_mask).sum()) for i, e in enumerate(items)}
    batches = plan_batches(items, explainer, tokens=120)
    assert sorted(i for b in batches for i in b) == list(range(len(items)))
    lengths = [len(e.input_ids) for e in items]
    for batch in batches:
        assert lengths[batch[0]] == max(lengths[i] for i in batch)  # longest first
        assert len(batch) == 1 or sum(cost[i] for i in batch) * lengths[batch[0]] <= 120
    assert len(batches) > 2
    assert plan_batches(items, explainer, tokens=10**6, cap=3) == [
        sorted(range(len(items)), key=lambda i: -lengths[i])[s : s + 3] for s in range(0, len(items), 3)
    ]


def _reference_bits(key: int, stream: int, sample: int, position: int) -> int:
    """random_bits in plain Python integers: SplitMix64's finaliser on wrapping 64-bit arithmetic."""
    mask = (1 << 64) - 1

    def mix(x: int) -> int:
        x &= mask
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & mask
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & mask
        return x ^ (x >> 31)

    golden = 0x9E3779B97F4A7C15
    base = mix(key + stream * golden)
    return mix(base + (sample * (1 << 16) + position + 1) * golden) >> 11


def test_random_bits_are_splitmix_of_key_stream_sample_and_position():
    keys = example_keys(7, ["dev-0", "dev-1", "a rather long example id"])
    bits = random_bits(keys, stream_id("views"), samples=3, length=5)
    assert bits.shape == (3, 3, 5) and bits.dtype == torch.int64
    for b in range(3):
        for s in range(3):
            for t in range(5):
                assert int(bits[b, s, t]) == _reference_bits(int(keys[b]), stream_id("views"), s, t)
    assert (bits >= 0).all() and (bits < 2**53).all()


def test_random_bits_depend_on_the_example_alone():
    """The same example gets the same draws in any batch and at any padding; seeds and streams differ."""
    together = random_bits(example_keys(0, ["a", "b", "c"]), 1, 4, 12)
    alone = random_bits(example_keys(0, ["b"]), 1, 4, 7)
    assert torch.equal(alone[0], together[1, :, :7])
    assert not torch.equal(random_bits(example_keys(1, ["b"]), 1, 4, 7), alone)
    assert not torch.equal(random_bits(example_keys(0, ["b"]), 2, 4, 7), alone)
    draws = below(random_bits(example_keys(0, [str(i) for i in range(100)]), 3, 40, 25), 0.3)
    assert abs(draws.float().mean().item() - 0.3) < 0.01
    assert below(together, 1.0).all() and not below(together, 0.0).any()


def test_precision_auto_is_bf16_on_cuda_only():
    assert resolve_precision("auto", "cuda") == "bf16" and resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("fp32", "cuda") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    params = ExplainParams(precision="auto", tokens_per_forward=TokenBudget(cpu=100, cuda=5000))
    assert Runtime.of(params, "cpu") == Runtime(torch.device("cpu"), "fp32", 100)
    assert Runtime.of(params, "cuda") == Runtime(torch.device("cuda"), "bf16", 5000)

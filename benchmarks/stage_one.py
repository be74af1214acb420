"""Stage-one throughput: egkd's batched explainers against captum (tutorial style and best batching).

Every run counts the FLOPs of what actually went through the model (padded
rows, every perturbed copy, the backward where there is one) with
:class:`benchmarks.measure.FlopCounter`, so the achieved FLOP/s can be set
against the matmul peak.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from benchmarks.measure import FlopCounter, FlopModel, section_memory
from pipeline.config import ExplainParams, FeatureSelectionParams, GradientParams, PerturbationParams
from pipeline.encoding import EncodedExample, TokenBatch, bucketed_batches, collate
from pipeline.explain._ops import CHUNK_TOKENS
from pipeline.explain.base import Explanation, make_explainer
from pipeline.methods import Method

IG_STEPS = 50


@dataclass(frozen=True)
class Case:
    name: str  # what the tables call it
    method: Method
    params: ExplainParams

    @property
    def captum(self) -> str | None:
        return {"input_x_gradient": "ixg", "integrated_gradients": "ig", "occlusion": "occlusion"}.get(self.name)


def cases(batch_size: int) -> list[Case]:
    base = ExplainParams(batch_size=batch_size)
    gradient = lambda variant: dataclasses.replace(  # noqa: E731
        base, method="gradient", gradient=GradientParams(variant=variant, ig_steps=IG_STEPS)
    )
    return [
        Case("input_x_gradient", Method.GRADIENT, gradient("input_x_gradient")),
        Case("integrated_gradients", Method.GRADIENT, gradient("integrated_gradients")),
        Case(
            "occlusion",
            Method.PERTURBATION,
            dataclasses.replace(base, method="perturbation", perturbation=PerturbationParams(variant="occlusion")),
        ),
        Case(
            "feature_selection",
            Method.FEATURE_SELECTION,
            dataclasses.replace(base, method="feature_selection", feature_selection=FeatureSelectionParams()),
        ),
    ]


@dataclass
class Workload:
    model: torch.nn.Module
    tokenizer: object
    encoded: list[EncodedExample]
    flops: FlopModel
    peak: float  # matmul FLOP/s

    @property
    def pad(self) -> int:
        return self.tokenizer.pad_token_id or 0


def _rates(examples: Sequence[EncodedExample], seconds: float, counter: FlopCounter, peak: float) -> dict:
    real = sum(len(e.input_ids) for e in examples)
    return {
        "examples": len(examples),
        "seconds": round(seconds, 3),
        "ex_per_s": len(examples) / seconds,
        "input_tokens_per_s": real / seconds,
        "model_tokens_per_s": counter.tokens / seconds,
        "model_tokens": counter.tokens,
        "forward_calls": counter.calls,
        "flops": counter.total,
        "flops_per_s": counter.total / seconds,
        "fraction_of_peak": counter.total / seconds / peak,
    }


def egkd_batches(work: Workload, examples: Sequence[EncodedExample], batch_size: int) -> list[TokenBatch]:
    return [collate([examples[i] for i in idx], work.pad) for idx in bucketed_batches(examples, batch_size)]


def _fastest(work: Workload, run_once: Callable[[], dict], repeats: int) -> tuple[float, FlopCounter, dict, dict]:
    """Time ``run_once`` (it returns the per-example results) ``repeats`` times; keep the fastest run.

    Returns its seconds, its FLOP counter and results, and the peak memory over all runs.
    """
    best = None
    with section_memory() as memory:
        for _ in range(repeats):
            counter = FlopCounter(work.flops)
            with counter.attached(work.model):
                start = time.perf_counter()
                results = run_once()
                seconds = time.perf_counter() - start
            if best is None or seconds < best[0]:
                best = (seconds, counter, results)
    return (*best, memory)


def run_egkd(
    work: Workload, case: Case, examples: Sequence[EncodedExample], repeats: int = 1
) -> tuple[dict, dict[str, Explanation]]:
    """Throughput of egkd's explainer over length-bucketed batches (fastest of ``repeats`` runs);
    also returns per-example explanations."""
    explainer = make_explainer(case.method, work.model, case.params, work.tokenizer.mask_token_id)
    batches = egkd_batches(work, examples, case.params.batch_size)
    explainer.explain(batches[-1])  # warm-up (the shortest batch)

    def run_once() -> dict[str, Explanation]:
        results = {}
        for batch in batches:
            explanation = explainer.explain(batch)
            for row, example_id in enumerate(batch.example_ids):
                results[example_id] = _row(explanation, row)
        return results

    seconds, counter, results, memory = _fastest(work, run_once, repeats)
    return {
        **_rates(examples, seconds, counter, work.peak),
        "batch_size": case.params.batch_size,
        "repeats": repeats,
        **memory,
    }, results


def _row(explanation: Explanation, row: int) -> Explanation:
    """One example's explanation (every field, batch dimension dropped)."""
    return Explanation(
        explanation.attribution[row].detach(),
        explanation.logits[row].detach(),
        explanation.extras.map(lambda _, tensor: tensor[row].detach()),
    )


# --- captum ----------------------------------------------------------------------------------------


def _forward(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    def forward(input_ids, token_type_ids, attention_mask):
        return model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits

    return forward


def _captum_attribute(work: Workload, kind: str, batch: TokenBatch, best: bool) -> torch.Tensor:
    """captum's ``(B, T)`` attributions of ``batch`` for its predicted classes."""
    from captum.attr import LayerGradientXActivation, LayerIntegratedGradients, Occlusion

    forward = _forward(work.model)
    extra = (batch.token_type_ids, batch.attention_mask)
    with torch.no_grad():  # the prediction to explain, as the tutorials do
        target = forward(batch.input_ids, *extra).argmax(-1)
    length = batch.input_ids.shape[1]
    embeddings = work.model.get_input_embeddings()
    if kind == "ixg":
        return (
            LayerGradientXActivation(forward, embeddings)
            .attribute(batch.input_ids, target=target, additional_forward_args=extra)
            .sum(-1)
        )
    if kind == "ig":
        baselines = batch.input_ids.masked_fill(~batch.special_mask, work.model.config.pad_token_id or 0)
        internal = max(batch.size, CHUNK_TOKENS // length) if best else None
        return (
            LayerIntegratedGradients(forward, embeddings)
            .attribute(
                batch.input_ids,
                baselines=baselines,
                target=target,
                additional_forward_args=extra,
                n_steps=IG_STEPS,
                internal_batch_size=internal,
            )
            .sum(-1)
        )
    probabilities = lambda *args: forward(*args).softmax(-1)  # noqa: E731
    return Occlusion(probabilities).attribute(
        batch.input_ids,
        sliding_window_shapes=(1,),
        baselines=work.tokenizer.mask_token_id,
        target=target,
        additional_forward_args=extra,
        perturbations_per_eval=length if best else 1,
    )


def run_captum(
    work: Workload, kind: str, examples: Sequence[EncodedExample], best: bool, batch_size: int, repeats: int = 1
) -> tuple[dict, dict[str, torch.Tensor]]:
    """captum one example at a time (``best`` False, as in its tutorials) or with its batching options.

    ``best``: ``batch_size`` examples per call (length-bucketed), ``internal_batch_size``
    for IG (about ``CHUNK_TOKENS`` tokens per forward), ``perturbations_per_eval`` = the
    sequence length for Occlusion (every window of every example in one forward).
    """
    size = batch_size if best else 1
    batches = [
        collate([examples[i] for i in idx], work.pad)
        for idx in (bucketed_batches(examples, size) if best else ([i] for i in range(len(examples))))
    ]
    _captum_attribute(work, kind, batches[-1], best)  # warm-up

    def run_once() -> dict[str, torch.Tensor]:
        results = {}
        for batch in batches:
            attribution = _captum_attribute(work, kind, batch, best).detach().float()
            for row, example_id in enumerate(batch.example_ids):
                results[example_id] = attribution[row].masked_fill(batch.special_mask[row], 0.0)
        return results

    seconds, counter, results, memory = _fastest(work, run_once, repeats)
    options = (
        {
            "batch_size": size,
            "internal_batch_size": f"~{CHUNK_TOKENS} tokens" if kind == "ig" else None,
            "perturbations_per_eval": "seq length" if kind == "occlusion" else None,
        }
        if best
        else {"batch_size": 1, "perturbations_per_eval": 1 if kind == "occlusion" else None}
    )
    return {**_rates(examples, seconds, counter, work.peak), "options": options, "repeats": repeats, **memory}, results


def agreement(
    ours: dict[str, Explanation], theirs: dict[str, torch.Tensor], examples: Sequence[EncodedExample]
) -> dict:
    """Max abs difference of attributions on real tokens, and allclose(atol=1e-4, rtol=1e-3)."""
    worst, scale, close = 0.0, 0.0, True
    for example in examples:
        real = torch.from_numpy(~example.special_mask)
        a = ours[example.example_id].attribution[: len(real)][real].float()
        b = theirs[example.example_id][: len(real)][real].float()
        worst = max(worst, float((a - b).abs().max()))
        scale = max(scale, float(b.abs().max()))
        close &= bool(torch.allclose(a, b, atol=1e-4, rtol=1e-3))
    return {"examples": len(examples), "max_abs_diff": worst, "max_abs_attribution": scale, "allclose": close}

"""Stage-one throughput: egkd's batched explainers against captum (tutorial style and best batching).

Every run counts the FLOPs of what actually went through the model (padded
rows, every perturbed copy, the backward where there is one) with
:class:`benchmarks.measure.FlopCounter`, so the achieved FLOP/s can be set
against the matmul peak. The same functions run on a CPU and on a GPU: the
device is the model's, batches are planned by the explainer's token budget
(:func:`pipeline.explain.part.plan_batches`) exactly as ``egkd explain`` plans
them, and the explanation of each batch is copied out asynchronously as there.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from benchmarks.measure import FlopCounter, FlopModel, device_memory, section_memory, synchronize
from pipeline.config import ExplainParams, FeatureSelectionParams, GradientParams, PerturbationParams, ViewParams
from pipeline.encoding import EncodedExample, TokenBatch, bucketed_batches, collate
from pipeline.explain.base import Explanation, make_explainer
from pipeline.explain.part import BATCH_FORWARDS, HostCopy, plan_batches
from pipeline.forwards import Runtime
from pipeline.methods import Method

IG_STEPS = 50  # the CPU suite's like-for-like setting with captum's default


@dataclass(frozen=True)
class Case:
    name: str  # what the tables call it
    method: Method
    params: ExplainParams

    @property
    def captum(self) -> str | None:
        return {"input_x_gradient": "ixg", "integrated_gradients": "ig", "occlusion": "occlusion"}.get(self.name)

    @property
    def ig_steps(self) -> int:
        return self.params.gradient.ig_steps


def cases(batch_size: int | None, ig_steps: int = IG_STEPS, **runtime) -> list[Case]:
    """The four benchmarked explainers; ``runtime``: ExplainParams fields such as precision or tokens_per_forward.

    Without views (``views.count`` 0): the explainer's own work, as captum does it. Stage one's views cost 12
    more teacher forwards per sentence (4 of each kind), which would be charged to the explainer.
    """
    base = ExplainParams(batch_size=batch_size, views=ViewParams(count=0), **runtime)
    gradient = lambda variant: dataclasses.replace(  # noqa: E731
        base, method="gradient", gradient=GradientParams(variant=variant, ig_steps=ig_steps)
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


def with_runtime(case: Case, **changes) -> Case:
    """The case with other ExplainParams runtime fields (precision, tokens_per_forward, compile)."""
    return dataclasses.replace(case, params=dataclasses.replace(case.params, **changes))


@dataclass
class Workload:
    model: torch.nn.Module
    tokenizer: object
    encoded: list[EncodedExample]
    flops: FlopModel
    peak: float  # matmul FLOP/s that fractions are taken of

    @property
    def pad(self) -> int:
        return self.tokenizer.pad_token_id or 0

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def _rates(examples: Sequence[EncodedExample], seconds: float, counter: FlopCounter, peak: float) -> dict:
    real = sum(len(e.input_ids) for e in examples)
    return {
        "examples": len(examples),
        "seconds": round(seconds, 4),
        "ex_per_s": len(examples) / seconds,
        "input_tokens_per_s": real / seconds,
        "model_tokens_per_s": counter.tokens / seconds,
        "model_tokens": counter.tokens,
        "forward_calls": counter.calls,
        "flops": counter.total,
        "flops_per_s": counter.total / seconds,
        "fraction_of_peak": counter.total / seconds / peak,
    }


def egkd_batches(work: Workload, case: Case, examples: Sequence[EncodedExample]) -> list[TokenBatch]:
    """Host batches as ``egkd explain`` plans them: length-sorted, ``BATCH_FORWARDS`` token budgets of copies."""
    explainer = make_explainer(case.method, work.model, case.params, work.tokenizer.mask_token_id)
    tokens = BATCH_FORWARDS * case.params.tokens_per_forward.on(work.device.type)
    return [
        collate([examples[i] for i in idx], work.pad)
        for idx in plan_batches(examples, explainer, tokens, case.params.batch_size)
    ]


def warm_up(batches: Sequence[TokenBatch]) -> list[TokenBatch]:
    """The batches run once before timing: the first and the last of the length-sorted plan (the longest and the
    shortest rows). Kernel choices and the device allocator's blocks for the largest shapes are then made before
    the clock starts, as they are long before the end of a whole-dataset run; a single timed pass (``--quick``)
    would otherwise pay them."""
    return [batches[0]] if len(batches) == 1 else [batches[0], batches[-1]]


@contextmanager
def _memory(device: torch.device) -> Iterator[dict]:
    with section_memory() as host, device_memory(device) as gpu:
        out: dict = {}
        yield out
    out.update(host)
    out.update(gpu)


def _fastest(
    work: Workload, run_once: Callable[[], dict], repeats: int, count_flops: bool = True
) -> tuple[float, FlopCounter, dict, dict]:
    """Time ``run_once`` (it returns the per-example results) ``repeats`` times; keep the fastest run.

    The device is synchronised before and after each run. Returns its seconds, its FLOP counter and
    results, and the peak memory over all runs.
    """
    best = None
    with _memory(work.device) as memory:
        for _ in range(repeats):
            counter = FlopCounter(work.flops)
            with counter.attached(work.model) if count_flops else nullcontext():
                synchronize(work.device)
                start = time.perf_counter()
                results = run_once()
                synchronize(work.device)
                seconds = time.perf_counter() - start
            if best is None or seconds < best[0]:
                best = (seconds, counter, results)
    assert best is not None
    return (*best, memory)


def run_egkd(
    work: Workload, case: Case, examples: Sequence[EncodedExample], repeats: int = 1, count_flops: bool = True
) -> tuple[dict, dict[str, Explanation]]:
    """Throughput of egkd's explainer over its token-budget batches (fastest of ``repeats`` runs);
    also returns per-example explanations on the host.

    Timed: moving each batch to the device, explaining it, copying the explanation out (asynchronously,
    one batch in flight, as ``egkd explain`` does), not the tokenisation or the collation.
    """
    explainer = make_explainer(case.method, work.model, case.params, work.tokenizer.mask_token_id)
    batches = egkd_batches(work, case, examples)
    device = work.device
    for batch in warm_up(batches):
        explainer.explain(batch.to(device))

    def run_once() -> dict[str, Explanation]:
        copies = [
            (batch.example_ids, HostCopy(explainer.explain(batch.to(device, non_blocking=True)))) for batch in batches
        ]
        results = {}
        for ids, copy in copies:
            explanation = copy.get()
            for row, example_id in enumerate(ids):
                results[example_id] = _row(explanation, row)
        return results

    seconds, counter, results, memory = _fastest(work, run_once, repeats, count_flops)
    runtime = Runtime.of(case.params, device)
    return {
        **_rates(examples, seconds, counter, work.peak),
        "batches": len(batches),
        "batch_size": case.params.batch_size,
        "precision": runtime.precision,
        "tokens_per_forward": runtime.tokens,
        "compile": case.params.compile,
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


def count_syncs(work: Workload, case: Case, examples: Sequence[EncodedExample]) -> dict:
    """How often one explained batch makes the host wait for a CUDA device (torch's sync debug mode)."""
    if work.device.type != "cuda":
        return {"checked": False, "why": "only a CUDA device reports synchronisations"}
    import warnings

    explainer = make_explainer(case.method, work.model, case.params, work.tokenizer.mask_token_id)
    batch = egkd_batches(work, case, examples)[0].to(work.device)
    explainer.explain(batch)  # warm-up: lazy initialisation may synchronise once
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            explainer.explain(batch)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    messages = sync_warnings(str(w.message) for w in caught)
    return {"checked": True, "syncs": len(messages), "first": messages[0] if messages else None}


def sync_warnings(messages: Iterable[str]) -> list[str]:
    """The first lines of the warnings that report a synchronising CUDA operation.

    The first use of the sync debug mode in a process also warns that the mode is a prototype; that notice is
    no synchronisation and is not counted.
    """
    return [text.splitlines()[0] for text in messages if "called a synchronizing" in text]


# --- captum ----------------------------------------------------------------------------------------


def _forward(model: torch.nn.Module) -> Callable[..., torch.Tensor]:
    def forward(input_ids, token_type_ids, attention_mask):
        return model(input_ids=input_ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits

    return forward


def _captum_attribute(
    work: Workload, kind: str, batch: TokenBatch, best: bool, ig_steps: int, tokens: int
) -> torch.Tensor:
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
        internal = max(batch.size, tokens // length) if best else None
        return (
            LayerIntegratedGradients(forward, embeddings)
            .attribute(
                batch.input_ids,
                baselines=baselines,
                target=target,
                additional_forward_args=extra,
                n_steps=ig_steps,
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


def captum_batch_size(kind: str, length: int, tokens: int, ig_steps: int) -> int:
    """Examples per captum call with its batching options, for about ``tokens`` padded tokens per forward."""
    rows_per_example = {"ixg": 1, "ig": ig_steps, "occlusion": length}[kind]
    return max(1, tokens // (rows_per_example * length))


def run_captum(
    work: Workload,
    kind: str,
    examples: Sequence[EncodedExample],
    best: bool,
    batch_size: int | None,
    repeats: int = 1,
    ig_steps: int = IG_STEPS,
    tokens: int = 2048,
    precision: str = "fp32",
) -> tuple[dict, dict[str, torch.Tensor]]:
    """captum one example at a time (``best`` False, as in its tutorials) or with its batching options.

    ``best``: ``batch_size`` examples per call (length-bucketed; None: about ``tokens`` padded tokens per
    forward, as egkd's budget), ``internal_batch_size`` for IG (about ``tokens`` tokens per forward),
    ``perturbations_per_eval`` = the sequence length for Occlusion (every window of every example in one
    forward). ``precision`` bf16 runs captum under the same autocast as egkd's bf16.
    """
    if best and batch_size is None:
        longest = max(len(e.input_ids) for e in examples)
        batch_size = captum_batch_size(kind, longest, tokens, ig_steps)
    size = (batch_size or 1) if best else 1
    batches = [
        collate([examples[i] for i in idx], work.pad).to(work.device)
        for idx in (bucketed_batches(examples, size) if best else ([i] for i in range(len(examples))))
    ]
    autocast = torch.autocast(work.device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with autocast:
        for batch in warm_up(batches):
            _captum_attribute(work, kind, batch, best, ig_steps, tokens)

    def run_once() -> dict[str, torch.Tensor]:
        results = {}
        with autocast:
            for batch in batches:
                attribution = _captum_attribute(work, kind, batch, best, ig_steps, tokens).detach().float()
                for row, example_id in enumerate(batch.example_ids):
                    results[example_id] = attribution[row].masked_fill(batch.special_mask[row], 0.0)
        return results

    seconds, counter, results, memory = _fastest(work, run_once, repeats)
    options = (
        {
            "batch_size": size,
            "internal_batch_size": f"~{tokens} tokens" if kind == "ig" else None,
            "perturbations_per_eval": "seq length" if kind == "occlusion" else None,
        }
        if best
        else {"batch_size": 1, "perturbations_per_eval": 1 if kind == "occlusion" else None}
    )
    return {
        **_rates(examples, seconds, counter, work.peak),
        "options": options,
        "precision": precision,
        "ig_steps": ig_steps if kind == "ig" else None,
        "repeats": repeats,
        **memory,
    }, results


def agreement(
    ours: dict[str, Explanation], theirs: dict[str, torch.Tensor], examples: Sequence[EncodedExample]
) -> dict:
    """Max abs difference of attributions on real tokens, and allclose(atol=1e-4, rtol=1e-3)."""
    worst, scale, close = 0.0, 0.0, True
    for example in examples:
        real = torch.from_numpy(~example.special_mask)
        a = ours[example.example_id].attribution[: len(real)].cpu()[real].float()
        b = theirs[example.example_id][: len(real)].cpu()[real].float()
        worst = max(worst, float((a - b).abs().max()))
        scale = max(scale, float(b.abs().max()))
        close &= bool(torch.allclose(a, b, atol=1e-4, rtol=1e-3))
    return {"examples": len(examples), "max_abs_diff": worst, "max_abs_attribution": scale, "allclose": close}


def map_agreement(
    reference: dict[str, Explanation], other: dict[str, Explanation], examples: Sequence[EncodedExample]
) -> dict:
    """Mean Spearman correlation and top-20% overlap of ``other``'s maps with ``reference``'s (real tokens)."""
    from pipeline.evaluate.faithfulness import rank_agreement, top_k_overlap, top_k_set
    from pipeline.topk import share

    correlations, overlaps = [], []
    for example in examples:
        if example.example_id not in reference or example.example_id not in other:
            continue
        real = ~example.special_mask
        a = reference[example.example_id].attribution[: len(real)].cpu().numpy()[real]
        b = other[example.example_id].attribution[: len(real)].cpu().numpy()[real]
        correlation = rank_agreement(b, a)
        if correlation is not None:
            correlations.append(correlation)
        k = int(share(0.2, [len(a)])[0])
        overlaps.append(top_k_overlap(b, top_k_set(a, k), k))
    return {
        "examples": len(overlaps),
        "spearman": sum(correlations) / len(correlations) if correlations else None,
        "spearman_examples": len(correlations),
        "top20_overlap": sum(overlaps) / len(overlaps) if overlaps else None,
    }

"""Evaluate a model: its task metric, and against a cache its explanations' agreement and faithfulness.

The student's explanation of each kind is computed by the stage-one explainer of
the same method (:func:`pipeline.explain.make_explainer`), so teacher and student
are explained alike: gradient x input for ``gradient``, leave-one-out occlusion
for ``perturbation``, the ridge surrogate's scores for ``feature_selection``.
Agreement per example, averaged over examples:

* Spearman rank correlation of the student's and the teacher's maps over the real tokens;
* top-k overlap, ``k = ceil(top_k_fraction * n)``: the share of the student's top-k tokens
  among the teacher's top-k, or for ``feature_selection`` among the teacher's selected
  tokens (then ``k`` = the number of selected tokens).

Faithfulness is AOPC of the student's own scores (:func:`pipeline.faithfulness.aopc`),
next to the same with random scores as a baseline.

The report also records each example's predicted class (:class:`Predictions`), so two models
evaluated on the same split can be compared example by example (McNemar's test in the report).

With evaluation sets (:mod:`pipeline.evaluate.sets`, ``experiment.eval_sets``) the model is also scored on each:
its metrics and predictions (:class:`SetReport`), forwards only; a set of the very examples of the evaluation (the
set ``dev``) takes the evaluation's own predictions. In the JSON a set's predictions name their examples by a digest
of the ids (``ids_sha256``), not the ids themselves: a held-out or shifted set has thousands.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.cache.extras import Selection
from pipeline.cache.project import StudentExample, collate_students, to_student_examples
from pipeline.config import ComputeParams, EvaluateParams, ExplainParams
from pipeline.device import Compute, module_device, resolve_compute
from pipeline.encoding import EncodedExample, encode
from pipeline.errors import EgkdError
from pipeline.evaluate.faithfulness import aopc, rank_agreement, top_k_overlap, top_k_set
from pipeline.evaluate.metrics import TaskMetrics, compute_metrics, predictions_from_logits
from pipeline.evaluate.predict import predict_logits, token_batches
from pipeline.evaluate.sets import EvalSet
from pipeline.explain.base import make_explainer
from pipeline.explain.record import explain_params_from_cache
from pipeline.methods import Method
from pipeline.sources import DataSource
from pipeline.tasks import TaskSpec
from pipeline.topk import share


@dataclass(frozen=True, kw_only=True)
class AgreementReport:
    method: str
    examples: int
    spearman: float | None  # mean over the examples where it is defined
    spearman_examples: int
    top_k_overlap: float
    top_k_fraction: float


@dataclass(frozen=True, kw_only=True)
class FaithfulnessReport:
    method: str
    fractions: tuple[float, ...]
    comprehensiveness: float  # higher is better
    sufficiency: float  # lower is better
    random_comprehensiveness: float  # the same with random scores: the bar to beat
    random_sufficiency: float


@dataclass(frozen=True)
class ExplanationReport:
    """The model's explanations of one method against one cache's teacher maps."""

    cache: str
    agreement: AgreementReport
    faithfulness: FaithfulnessReport


@dataclass(frozen=True)
class Predictions:
    """Each example's predicted class and gold label, in the split's order (classification only)."""

    example_ids: tuple[str, ...]
    classes: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def ids_sha256(self) -> str:
        """The examples, as one digest: SHA-256 of the ids, one a line."""
        return hashlib.sha256("\n".join(self.example_ids).encode("utf-8")).hexdigest()


@dataclass(frozen=True, kw_only=True)
class SetReport:
    """The model on one evaluation set: its metrics and, for classification, each example's prediction."""

    name: str
    source: str  # the file (or hub split) the examples were read from
    split: str
    skip: int  # examples skipped at the split's start
    metrics: TaskMetrics
    predictions: Predictions | None


@dataclass(frozen=True, kw_only=True)
class EvaluationReport:
    model: str
    task: str
    split: str
    metrics: TaskMetrics
    explanations: tuple[ExplanationReport, ...] = ()  # one per (cache, method) compared
    predictions: Predictions | None = None  # None for regression tasks
    head_seed: int | None = None  # the model's classifier head was new, drawn from this seed (--allow-new-head)
    compute: dict[str, str] = field(default_factory=dict)  # where it ran: device, device_name, precision
    sets: tuple[SetReport, ...] = ()  # the evaluation sets scored (key "sets" by name; absent when none)

    def write(self, path: Path) -> None:
        """Indented JSON, except the per-example lists, one line each: the file stays small to read and to keep."""
        path.parent.mkdir(parents=True, exist_ok=True)
        report = asdict(self)
        lists: dict[str, dict] = {}  # a placeholder string -> the lists it stands for

        def held(values: dict | None) -> str | None:
            if values is None:
                return None
            lists[f"@predictions-{len(lists)}@"] = values
            return list(lists)[-1]

        report["predictions"] = held(report["predictions"])
        report.pop("sets")
        if self.sets:
            report["sets"] = {
                s.name: {
                    "source": s.source,
                    "split": s.split,
                    "skip": s.skip,
                    "metrics": asdict(s.metrics),
                    "predictions": held(None if s.predictions is None else _set_predictions(s.predictions)),
                }
                for s in self.sets
            }
        text = json.dumps(report, indent=2)
        for placeholder, values in lists.items():
            line = next(line for line in text.splitlines() if f'"{placeholder}"' in line)
            indent = line[: len(line) - len(line.lstrip())]
            rows = ",\n".join(f'{indent}  "{k}": {json.dumps(v, separators=(",", ":"))}' for k, v in values.items())
            text = text.replace(f'"{placeholder}"', "{\n" + rows + "\n" + indent + "}")
        path.write_text(text + "\n", encoding="utf-8")


def _set_predictions(predictions: Predictions) -> dict:
    return {"ids_sha256": predictions.ids_sha256, "classes": predictions.classes, "labels": predictions.labels}


def student_batches(examples: Sequence[StudentExample], params: EvaluateParams, pad_token_id: int):
    """Batches of the examples, longest first, within the batch's sentence and token budgets."""
    for indices in token_batches([len(e.input_ids) for e in examples], params.batch_size, params.batch_tokens):
        yield collate_students([examples[i] for i in indices], pad_token_id)


def evaluate_examples(
    model: torch.nn.Module,
    examples: Sequence[StudentExample],
    task: TaskSpec,
    params: EvaluateParams,
    pad_token_id: int,
    compute: Compute | None = None,
) -> TaskMetrics:
    """The task metrics of ``model`` on labelled student examples (e.g. the cache's dev rows)."""
    items = [
        EncodedExample(
            example_id=e.example_id,
            input_ids=e.input_ids,
            token_type_ids=e.token_type_ids,
            special_mask=e.special_mask,
            segments=np.where(e.special_mask, -1, 0).astype(np.int8),
            offsets=np.zeros((len(e.input_ids), 2), np.int32),
            label=e.label,
            truncated=False,
        )
        for e in examples
    ]
    logits = predict_logits(model, items, pad_token_id, params.batch_size, params.batch_tokens, compute)
    labels = np.array([e.label for e in examples])
    return compute_metrics(task, predictions_from_logits(task, logits), labels)


def explanation_reports(
    model: torch.nn.Module,
    examples: Sequence[StudentExample],
    method: Method,
    explain: ExplainParams,
    params: EvaluateParams,
    mask_token_id: int,
    pad_token_id: int,
    seed: int = 0,
    compute: Compute | None = None,
    baselines: dict[tuple, tuple[float, float]] | None = None,
) -> tuple[AgreementReport, FaithfulnessReport]:
    """Agreement of the student's explanations with the cached teacher maps, and their AOPC.

    The model runs on its own device (under ``compute``'s autocast); the comparison is on the host.
    The AOPC of random scores depends only on the examples, the seed and the model, not on the method:
    ``baselines`` keeps it by (example ids, seed, batching), so that an evaluation against several caches of the
    same rows computes it once (it costs as many forwards as the method's own AOPC).
    """
    explainer = make_explainer(method, model, explain, mask_token_id)
    generator = torch.Generator().manual_seed(seed)
    device = module_device(model)
    autocast = compute.autocast() if compute is not None else torch.autocast(device.type, enabled=False)
    spearmans, overlaps, comp, suff, rcomp, rsuff = [], [], [], [], [], []
    batching = (params.batch_size, params.batch_tokens, tuple(params.aopc_fractions))
    key = (tuple(e.example_id for e in examples), seed, *batching)
    baseline = baselines.get(key) if baselines is not None else None
    for batch in student_batches(examples, params, pad_token_id):
        tokens = batch.tokens.to(device)
        with autocast:
            scores = explainer.explain(tokens).attribution.detach().float().cpu()
        real = batch.real_tokens
        for b in range(batch.tokens.size):
            mine, theirs = scores[b][real[b]].numpy(), batch.attribution[b][real[b]].numpy()
            correlation = rank_agreement(mine, theirs)
            if correlation is not None:
                spearmans.append(correlation)
            selection = batch.extras.get(Selection)
            if method is Method.FEATURE_SELECTION and selection is not None:
                reference = selection.mask[b][real[b]].numpy()
                k = int(reference.sum())
            else:
                k = int(share(params.top_k_fraction, torch.tensor([len(mine)]))[0])
                reference = top_k_set(theirs, k)
            overlaps.append(top_k_overlap(mine, reference, k))
        with autocast:
            own = aopc(model, tokens, scores, params.aopc_fractions, mask_token_id)
        comp.append(own.comprehensiveness)
        suff.append(own.sufficiency)
        if baseline is None:
            noise = torch.rand(scores.shape, generator=generator)
            with autocast:
                rand = aopc(model, tokens, noise, params.aopc_fractions, mask_token_id)
            rcomp.append(rand.comprehensiveness)
            rsuff.append(rand.sufficiency)
    if baseline is None:
        baseline = (float(torch.cat(rcomp).mean()), float(torch.cat(rsuff).mean()))
        if baselines is not None:
            baselines[key] = baseline
    agreement = AgreementReport(
        method=method.value,
        examples=len(examples),
        spearman=float(np.mean(spearmans)) if spearmans else None,
        spearman_examples=len(spearmans),
        top_k_overlap=float(np.mean(overlaps)) if overlaps else 0.0,
        top_k_fraction=params.top_k_fraction,
    )
    random_comprehensiveness, random_sufficiency = baseline
    faithfulness = FaithfulnessReport(
        method=method.value,
        fractions=tuple(params.aopc_fractions),
        comprehensiveness=float(torch.cat(comp).mean()),
        sufficiency=float(torch.cat(suff).mean()),
        random_comprehensiveness=random_comprehensiveness,
        random_sufficiency=random_sufficiency,
    )
    return agreement, faithfulness


@dataclass(frozen=True, kw_only=True)
class EvaluateRequest:
    model: str
    source: DataSource  # the task and its data (pipeline.sources)
    split: str
    params: EvaluateParams
    explain: ExplainParams
    caches: tuple[Path, ...] = ()  # explanation caches to compare the model's explanations with
    methods: tuple[str, ...] = ()  # which of their methods; empty: every method each cache holds
    out: Path | None = None
    limit: int | None = None
    max_length: int = 128
    allow_pickle: bool = False  # let the model load from pickle weights (pytorch_model.bin)
    allow_new_head: bool = False  # a model without a trained head gets one drawn from explain.seed
    compute: ComputeParams = field(default_factory=ComputeParams)  # where the model runs
    sets: tuple[EvalSet, ...] = ()  # evaluation sets the model is also scored on (forwards only)


def comparisons(caches: Sequence[Path], methods: Sequence[str], split: str) -> list[tuple[Path, Method]]:
    """The (cache, method) pairs to compare: every requested method (default: all) each cache holds."""
    from pipeline.cache.store import find_caches, list_partitions

    if methods and not caches:
        raise EgkdError("--method needs --cache: the explanations are compared with a cache's teacher maps")
    wanted = [Method.parse(m) for m in methods if m != "none"]
    if methods and not wanted:
        raise EgkdError(
            f"--method none has no explanations to compare; name {', '.join(m.value for m in Method)}, "
            "or leave --method out to compare every method of the caches"
        )
    pairs = []
    for cache in find_caches(caches):
        held = [Method.parse(m) for m, s in list_partitions(cache) if s == split]
        if not held:
            raise EgkdError(f"cache {cache} holds no {split} split (run egkd explain --split {split})")
        pairs += [(Path(cache), m) for m in held if not wanted or m in wanted]
    for method in wanted:
        if not any(m is method for _, m in pairs):
            raise EgkdError(f"no cache given holds method {method.value} for the {split} split")
    return pairs


def score(
    model: torch.nn.Module,
    encoded: Sequence[EncodedExample],
    task: TaskSpec,
    params: EvaluateParams,
    pad_token_id: int,
    compute: Compute | None = None,
) -> tuple[TaskMetrics, Predictions | None]:
    """The task metrics of ``model`` on labelled examples, and each one's prediction (None for regression)."""
    logits = predict_logits(model, encoded, pad_token_id, params.batch_size, params.batch_tokens, compute)
    labels = np.array([item.label for item in encoded])
    preds = predictions_from_logits(task, logits)
    metrics = compute_metrics(task, preds, labels)
    if task.is_regression:
        return metrics, None
    return metrics, Predictions(tuple(e.example_id for e in encoded), tuple(map(int, preds)), tuple(map(int, labels)))


def run_evaluation(request: EvaluateRequest) -> EvaluationReport:
    """``egkd evaluate``: the task metric on the data and on every evaluation set; with caches, explanation agreement
    and AOPC."""
    from pipeline.models import NewHead, check_label_order, load_tokenizer, load_trained_classifier

    task = request.source.task
    check_label_order(request.model, task.labels, "model")
    pairs = comparisons(request.caches, request.methods, request.split)
    check_teacher(request.model, pairs, request.split)
    compute = resolve_compute(request.compute)
    head = NewHead(request.allow_new_head, request.explain.seed, "model")
    model, new_head = load_trained_classifier(request.model, task.num_labels, head, request.allow_pickle)
    model = model.to(compute.device).eval()
    tokenizer = load_tokenizer(request.model)
    pad = tokenizer.pad_token_id or 0
    dataset = request.source.load(request.split, request.limit)
    if any(e.label is None for e in dataset.examples):
        raise EgkdError(f"split {request.split} of {task.name} has no labels; evaluate on a labelled split")
    if pairs and tokenizer.mask_token_id is None:
        raise EgkdError(f"the tokenizer of {request.model} has no mask token; explanations need one")
    # every set read (and its labels checked) before a forward; a set of the evaluation's own examples is not read
    own = (request.source, request.split, request.limit)
    sets = [(chosen, None if chosen.reads(*own) else chosen.load()) for chosen in request.sets]
    encoded = encode(tokenizer, dataset.examples, request.max_length)
    metrics, predictions = score(model, encoded, task, request.params, pad, compute)
    reports = []
    for chosen, examples in sets:
        scored = (metrics, predictions)  # the set dev: the evaluation's own scores
        if examples is not None:
            items = encode(tokenizer, examples.examples, request.max_length)
            scored = score(model, items, chosen.source.task, request.params, pad, compute)
        reports.append(
            SetReport(
                name=chosen.name,
                source=(dataset if examples is None else examples).source,
                split=chosen.split,
                skip=chosen.skip,
                metrics=scored[0],
                predictions=scored[1],
            )
        )
    baselines: dict[tuple, tuple[float, float]] = {}  # random scores' AOPC, shared by caches of the same rows
    explanations = tuple(
        compare_with_cache(model, tokenizer, task, cache, method, request, compute, baselines)
        for cache, method in pairs
    )
    head_seed = request.explain.seed if new_head else None
    report = EvaluationReport(
        model=request.model,
        task=task.name,
        split=request.split,
        metrics=metrics,
        explanations=explanations,
        predictions=predictions,
        head_seed=head_seed,
        compute=compute.record(),
        sets=tuple(reports),
    )
    if request.out is not None:
        report.write(request.out)
    return report


def check_teacher(model: str, pairs: Sequence[tuple[Path, Method]], split: str) -> None:
    """Refuse a cache that explains another teacher than the one a student learnt from: agreement with it would
    measure nothing (a model without a recorded teacher, such as a teacher itself, is compared with any cache)."""
    from pipeline.cache.store import partition_dir, read_part_header
    from pipeline.models import read_info

    info = read_info(model)
    if info is None or info.teacher_weights_hash is None:
        return
    for cache, method in pairs:
        first = min(partition_dir(cache, method.value, split).glob("part-*.parquet"))
        theirs = read_part_header(first)[0].teacher_weights_hash
        if theirs != info.teacher_weights_hash:
            raise EgkdError(
                f"cache {cache} explains another teacher than the one {model} learnt from (teacher weights "
                f"{theirs[:12]}, the student's {info.teacher_weights_hash[:12]}): compare it with its own teacher's "
                "caches"
            )


def compare_with_cache(
    model: torch.nn.Module,
    tokenizer,
    task: TaskSpec,
    cache: Path,
    method: Method,
    request: EvaluateRequest,
    compute: Compute | None = None,
    baselines: dict[tuple, tuple[float, float]] | None = None,
) -> ExplanationReport:
    """Agreement and AOPC of the model's ``method`` explanations on the cache's rows of the split."""
    from pipeline.cache.store import read_cache
    from pipeline.models import tokenizer_hash

    meta, rows = read_cache(cache, method.value, request.split)
    if meta.task != task.name:
        raise EgkdError(f"cache field 'task' differs: cache has {meta.task!r}, expected {task.name!r}")
    same = tokenizer_hash(tokenizer) == meta.tokenizer_hash
    examples = to_student_examples(rows, None if same else tokenizer, meta.max_length)
    explain = explain_params_from_cache(request.explain, method, meta.method_params)
    agreement, faithfulness = explanation_reports(
        model,
        examples,
        method,
        explain,
        request.params,
        tokenizer.mask_token_id,
        tokenizer.pad_token_id or 0,
        explain.seed,
        compute,
        baselines,
    )
    return ExplanationReport(str(cache), agreement, faithfulness)

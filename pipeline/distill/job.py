"""``egkd distill`` as one library call: read and check the cache, build the student, train, save, evaluate.

The teacher never runs here: everything the student learns from comes from the cache. The student starts as
the first ``layers`` layers of the fine-tuned teacher itself (``student: teacher``: only its weights are read,
from the folder the cache names, and checked against the cache's weight hash), of the teacher's *base* model
(``student: base`` or null, ``CacheMetadata.teacher_base``), or as any other model (``--student REF``, whole).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline import versions
from pipeline.cache.extras import Extra
from pipeline.cache.project import to_student_examples
from pipeline.cache.schema import CacheMetadata
from pipeline.checkpoint import has_checkpoint
from pipeline.config import ComputeParams, DistillParams, EvaluateParams
from pipeline.device import Compute, resolve_compute
from pipeline.distill.inputs import DistillInputs, loaded_inputs, student_source
from pipeline.distill.objectives import ObjectiveSettings, make_objective
from pipeline.distill.trainer import first_explained_step, train
from pipeline.distill.view_term import ViewTerm
from pipeline.errors import EgkdError
from pipeline.evaluate.metrics import TaskMetrics
from pipeline.evaluate.run import evaluate_examples
from pipeline.models import ModelInfo, load_classifier, load_tokenizer, save_model, tokenizer_hash
from pipeline.sources import task_of
from pipeline.training import TrainResult, seed_everything


@dataclass(frozen=True, kw_only=True)
class DistillRequest:
    cache: Path
    out: Path
    params: DistillParams
    evaluate: EvaluateParams
    resume: bool = False  # continue from the last checkpoint (one of another run is refused)
    resume_matching: bool = False  # continue from it where it is this run's, else start over (dvc.yaml)
    progress: bool = False
    allow_pickle: bool = False  # let the student load from pickle weights (pytorch_model.bin)
    compute: ComputeParams = field(default_factory=ComputeParams)  # where it trains (not part of the settings)
    # Another family's cache of the same sentences, the view term's views from it; or a folder of caches, searched
    # for distill.view_method's when that is not the cache's own family (pipeline.distill.view_term.view_source).
    view_cache: Path | None = None


@dataclass(frozen=True, kw_only=True)
class DistillReport:
    out: Path
    method: str
    student: str
    same_tokenizer: bool
    train_examples: int
    gold_labels: int  # training examples the student saw with their gold label (the others: a transfer set)
    transfer_examples: int  # of the training examples, those from the cache's transfer split
    training: TrainResult
    dev: TaskMetrics | None
    notes: tuple[str, ...]
    compute: Compute
    views_from: str | None = None  # another family's views: whose, and from which cache


def _check_extras(meta: CacheMetadata, cache: Path, needed: tuple[type[Extra], ...], what: str) -> None:
    """Refuse, before training, a cache whose rows lack an extra the run reads."""
    missing = [kind.kind for kind in needed if kind.kind not in meta.extras]
    if missing:
        raise EgkdError(
            f"cache {cache} (method={meta.method}) has no {missing[0]} extras, which {what} needs; "
            f"it caches {', '.join(meta.extras) or 'none'}"
        )


def build_student(
    meta: CacheMetadata, params: DistillParams, allow_pickle: bool = False, inputs: DistillInputs | None = None
):
    """(model, tokenizer, reference, layers kept); seeded so the new classifier head is reproducible.

    ``inputs``: the run's :class:`~pipeline.distill.inputs.DistillInputs`, whose student source is already
    resolved (else it is resolved here)."""
    ref, layers = (inputs.student, inputs.layers) if inputs is not None else student_source(meta, params)
    seed_everything(params.train.seed)
    try:
        model = load_classifier(ref, meta.num_labels, num_layers=layers, allow_pickle=allow_pickle)
    except EgkdError as err:
        raise EgkdError(f"student {ref}: {err}") from None
    return model, load_tokenizer(ref), ref, layers or model.config.num_hidden_layers


def distill(request: DistillRequest) -> DistillReport:
    compute = resolve_compute(request.compute)
    params = request.params
    with loaded_inputs(request.cache, params, request.view_cache, params.explanation) as inputs:
        return _distill(request, inputs, compute)


def _distill(request: DistillRequest, inputs: DistillInputs, compute: Compute) -> DistillReport:
    params, notes = request.params, []
    method = params.explanation
    meta, train_rows, dev_rows = inputs.meta, inputs.train_rows, inputs.dev_rows
    if inputs.views_from is not None:
        notes.append(f"the view term's views: {inputs.views_from}")
    task = task_of(meta)
    student, tokenizer, ref, layers = build_student(meta, params, request.allow_pickle, inputs)
    same = tokenizer_hash(tokenizer) == meta.tokenizer_hash
    if not same:
        notes.append(f"student tokenizer differs from the teacher's: teacher maps re-projected onto {ref} tokens")
    retokenise = None if same else tokenizer
    train_examples = to_student_examples(train_rows, retokenise, meta.max_length)
    labelled = sum(e.label is not None for e in train_examples)
    if inputs.transfer_rows:
        notes.append(
            f"training on {inputs.transfer_rows:,} sentences of the cache's transfer split besides the training set"
        )
    if labelled < len(train_examples):
        notes.append(
            f"{labelled:,} of the {len(train_examples):,} training sentences keep their gold label; the teacher alone "
            f"labels the other {len(train_examples) - labelled:,} (a transfer set: KD only)"
        )
    objective = make_objective(
        method,
        ObjectiveSettings(
            temperature=params.temperature,
            t2_scaling=params.t2_scaling,
            mask_token_id=tokenizer.mask_token_id or 0,
            gradient_loss=params.gradient_loss,
        ),
    )
    if tokenizer.mask_token_id is None and objective.needs_mask_token:
        raise EgkdError(f"student tokenizer of {ref} has no mask token; method {params.method_name} needs one")
    views = ViewTerm.of(params, tokenizer.mask_token_id or 0)
    if views is not None and tokenizer.mask_token_id is None:
        raise EgkdError(f"student tokenizer of {ref} has no mask token; distill.views needs one")
    _check_extras(meta, request.cache, objective.required(), f"method {params.method_name}")
    if views is not None:
        _check_extras(inputs.view_meta, inputs.view_cache, views.requires, f"distill.view_kind {params.view_kind}")
    pad = tokenizer.pad_token_id or 0
    if request.resume and not has_checkpoint(request.out):
        notes.append(f"note: --resume: no checkpoint in {request.out}: trained from the first step")
    training = train(
        student,
        objective,
        train_examples,
        params,
        request.out,
        pad,
        resume=request.resume,
        progress=request.progress,
        compute=compute,
        origin={"cache_digest": inputs.digest, "student": ref},
        resume_matching=request.resume_matching,
    )
    if training.replaced:
        notes.append(f"note: trained from the first step: {training.replaced}")
    dev = None
    if dev_rows:
        dev_examples = to_student_examples(dev_rows, retokenise, meta.max_length)
        dev = evaluate_examples(student, dev_examples, task, request.evaluate, pad, compute)
    else:
        notes.append(f"no dev partition for method {meta.method} in the cache: dev evaluation skipped")
    if dev is not None and dev.one_class is not None:
        notes.append(dev.one_class.note(task.labels, "the student"))
    save_model(
        student,
        tokenizer,
        request.out,
        ModelInfo("student", meta.task, ref, layers, meta.teacher_weights_hash),
        meta.label_names,
    )
    report = DistillReport(
        out=request.out,
        method=params.method_name,
        student=ref,
        same_tokenizer=same,
        train_examples=len(train_examples),
        gold_labels=labelled,
        transfer_examples=inputs.transfer_rows,
        training=training,
        dev=dev,
        notes=tuple(notes),
        compute=compute,
        views_from=inputs.views_from,
    )
    _write_outputs(request, meta, report)
    return report


def interrupted(out: Path, checkpoint_every: int) -> str:
    """What an interrupted ``egkd distill`` leaves to continue from, in words."""
    if has_checkpoint(out):
        return f"the last checkpoint in {out} is kept: rerun with --resume to continue from it"
    every = f"one every {checkpoint_every} steps: distill.checkpoint_every"
    return f"no checkpoint was written yet ({every}); a rerun starts over"


def _write_outputs(request: DistillRequest, meta: CacheMetadata, report: DistillReport) -> None:
    out = request.out
    metrics = {
        "task": meta.task,
        "method": report.method,
        "student": report.student,
        "train_examples": report.train_examples,
        "gold_labels": report.gold_labels,
        "transfer_examples": report.transfer_examples,
        "views_from": report.views_from,
        "steps": report.training.steps,
        "final_step": None if report.training.last is None else asdict(report.training.last),
        "dev": None if report.dev is None else asdict(report.dev),
        "compute": report.compute.record(),
        "versions": versions.current().as_dict(),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (out / "README.md").write_text(model_card(request, meta, report), encoding="utf-8")


def _loss_option(method: str, p: DistillParams) -> str:
    if method == "gradient":
        return f" ({p.gradient_loss})"
    return ""


def _resumed(training: TrainResult) -> str:
    if not training.resumed_from:
        return ""
    where = f" saved on {training.resumed_on}" if training.resumed_on else ""
    return f" (resumed from the checkpoint at step {training.resumed_from}{where})"


def model_card(request: DistillRequest, meta: CacheMetadata, report: DistillReport) -> str:
    p = request.params
    dev = (
        "not evaluated (no dev partition in the cache)"
        if report.dev is None
        else ", ".join(f"{name} {value:.4f}" for name, value in report.dev.values) + f" ({report.dev.count} examples)"
    )
    lines = [
        f"# egkd student for {meta.task}",
        "",
        "Distilled with egkd (Explanation Guided Knowledge Distillation) from an explanation cache; "
        "the teacher was not loaded during training.",
        "",
        f"- teacher: `{meta.teacher}` (weights sha256 `{meta.teacher_weights_hash[:16]}`), base `{meta.teacher_base}`",
        f"- cache: `{request.cache}` (partition method={meta.method}, {report.train_examples} train examples, "
        f"{report.gold_labels} of them with their gold label, {report.transfer_examples} from its transfer split)",
        f"- student: `{report.student}`; tokenizer shared with the teacher: {report.same_tokenizer}",
        f"- explanation method: {report.method}",
        f"- loss: {p.alpha} * KD(T={p.temperature}, T^2 scaling {p.t2_scaling}) + {1 - p.alpha:g} * CE"
        + (
            ""
            if report.method == "none"
            else f" + {p.beta} * L_{report.method} (every {p.explain_every} steps, {_start(p, report.training.steps)})"
        )
        + _loss_option(report.method, p)
        + (
            ""
            if ViewTerm.of(p, 0) is None
            else f" + {p.view_weight} * KD on {p.views} cached {p.view_kind} view(s) per example per step"
            + ("" if report.views_from is None else f" ({report.views_from})")
        ),
        f"- dev metrics: {dev}",
        f"- trained on: {report.compute.describe()}" + _resumed(report.training),
        f"- libraries: {versions.current().describe()}",
        f"- the cache's teacher forwards ran with: {', '.join(meta.libraries) or 'not recorded'}",
        "",
        "## Parameters",
        "",
        "```json",
        json.dumps(asdict(p), indent=2),
        "```",
        "",
    ]
    return "\n".join(lines)


def _start(params: DistillParams, total_steps: int) -> str:
    """When the explanation term starts, for the model card."""
    first = first_explained_step(params, total_steps)
    if first == 0:
        return "from the first step"
    if first < math.ceil(params.explain_start * total_steps):
        return f"after {first} of the {total_steps} steps (explain_start_max_steps)"
    return f"after {params.explain_start:.0%} of the steps"

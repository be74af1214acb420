"""Stage two's loss on one student batch: ``alpha * KD(T) + (1 - alpha) * CE + beta * L_explain + w * L_views``.

The loop itself is the shared one (:mod:`pipeline.training`); this module
supplies what is particular to distillation: the objective's forward and
explanation term, the explanation term only every ``explain_every`` steps and
from step ``min(ceil(explain_start * total steps), explain_start_max_steps)`` on, the
view term (:mod:`pipeline.distill.view_term`, every step when it is on), the
supervised part on a transfer set (examples without a gold label, ``distill.gold_labels``:
:func:`pipeline.losses.transfer_loss`), and the
random choices of step ``s`` (e.g. which cached view) from generators seeded by
``(seed, s)``, so a resumed run takes exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from pipeline import losses
from pipeline.cache.project import StudentBatch, StudentExample, collate_students
from pipeline.config import DistillParams
from pipeline.device import Compute
from pipeline.distill.objectives import Objective
from pipeline.distill.view_term import ViewTerm
from pipeline.errors import EgkdError
from pipeline.training import Checkpointing, Losses, Trainer, TrainResult, step_generator


def first_explained_step(params: DistillParams, total_steps: int) -> int:
    """The first (0-based) step of the explanation term: ``explain_start`` of the steps, at most
    ``explain_start_max_steps``."""
    share = math.ceil(params.explain_start * total_steps)
    cap = params.explain_start_max_steps
    return share if cap is None else min(share, cap)


class DistillLoss:
    """The total loss of one step, each term kept for the log."""

    def __init__(self, objective: Objective, params: DistillParams, total_steps: int, transfer: bool = False) -> None:
        self.objective, self.params = objective, params
        # Some examples have no gold label: the supervised part is weighed per example. Decided once for the run
        # (not per batch), so a run on fully labelled data computes exactly what it always did.
        self.transfer = transfer
        self.views = ViewTerm.of(params, objective.settings.mask_token_id)
        # A student starts on a plateau (its [CLS] is the same for every input) and leaves it after 100-300 steps;
        # until then its own map is noise, and a normalised map's loss has gradients of 1 / |map|, so matching it
        # from step 0 takes over the clipped update and keeps the student there (docs/method.md).
        # The plateau lasts about as many steps in a long run as in a short one: the cap keeps a long run from
        # waiting half of it.
        self.first_explained = first_explained_step(params, total_steps)

    def __call__(self, student: torch.nn.Module, batch: StudentBatch, step: int) -> Losses:
        p = self.params
        explain = (
            self.objective.method is not None
            and p.beta > 0
            and step >= self.first_explained
            and step % p.explain_every == 0
        )
        output = self.objective.compute(student, batch, explain, step_generator(p.train.seed, step, 2))
        supervised = None
        if self.transfer:
            supervised, kd, ce = self._transfer_terms(output.logits, batch)
        else:
            kd = losses.kd_loss(output.logits, batch.teacher_logits, p.temperature, p.t2_scaling)
            assert batch.labels is not None  # every train example has its label here (checked before training)
            ce = losses.ce_loss(output.logits, batch.labels)
        views = None
        if self.views is not None:
            views = self.views.compute(student, batch, step, step_generator(p.train.seed, step, 3))
        if supervised is None:
            total = losses.total_loss(kd, ce, output.explain, p.alpha, p.beta, views, p.view_weight)
        else:
            total = losses.add_terms(supervised, output.explain, p.beta, views, p.view_weight)
        return Losses(total, ce, kd, output.explain, views)

    def _transfer_terms(
        self, logits: torch.Tensor, batch: StudentBatch
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The supervised part, and for the log the mean KD and the mean CE of the labelled examples (0 if none)."""
        p = self.params
        kd = losses.kd_per_example(logits, batch.teacher_logits, p.temperature, p.t2_scaling)
        if batch.labels is None:  # no example of the batch has a gold label
            labelled = torch.zeros_like(kd, dtype=torch.bool)
            ce = torch.zeros_like(kd)
        else:
            labelled = torch.ones_like(kd, dtype=torch.bool) if batch.labelled is None else batch.labelled
            ce = losses.ce_per_example(logits, batch.labels)
        supervised = losses.transfer_loss(kd, ce, labelled, p.alpha)
        ce_logged = torch.where(labelled, ce, 0.0).sum() / labelled.sum().clamp_min(1)
        return supervised, kd.mean(), ce_logged


_NOT_THE_RUN = ("checkpoint_every",)  # settings that change how a run is saved, not what it computes


def run_settings(
    params: DistillParams, size: int, objective: Objective, origin: Mapping[str, str] | None = None
) -> str:
    """What must not change between a run and its resumption, as JSON: the settings, and ``origin``, what the run
    learns from (the teacher and data of its caches, the student's source), so that a checkpoint of another cache is
    not resumed."""
    method = None if objective.method is None else objective.method.value
    chosen = {key: value for key, value in asdict(params).items() if key not in _NOT_THE_RUN}
    run = {**chosen, "train_examples": size, "objective": str(method), **(origin or {})}
    return json.dumps(run, sort_keys=True, default=str)


def train(
    student: torch.nn.Module,
    objective: Objective,
    examples: Sequence[StudentExample],
    params: DistillParams,
    out: Path,
    pad_token_id: int,
    resume: bool = False,
    progress: bool = False,
    compute: Compute | None = None,
    origin: Mapping[str, str] | None = None,
    resume_matching: bool = False,
) -> TrainResult:
    """Train ``student`` in place on ``examples`` on ``compute``'s device; checkpoints and the log go under ``out``
    (a checkpoint resumes only a run of the same settings and ``origin``, :func:`run_settings`)."""
    if not examples:
        raise EgkdError("no training examples in the cache")
    transfer = any(e.label is None for e in examples)
    trainer: Trainer[StudentExample, StudentBatch] = Trainer(
        student,
        params.train,
        lambda items: collate_students(items, pad_token_id),
        DistillLoss(objective, params, params.train.total_steps(len(examples)), transfer),
        desc="distill",
        compute=compute,
    )
    settings = run_settings(params, len(examples), objective, origin)
    checkpointing = Checkpointing(params.checkpoint_every, settings, resume, resume_matching)
    return trainer.run(examples, out, checkpointing, progress)

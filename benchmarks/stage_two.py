"""Stage-two step time: each explanation objective against plain fine-tuning and against the online loss.

Cached rows are built in memory from stage one's explanations (no Parquet).
Every timed step is the trainer's own step (forward, losses, backward, gradient
clipping, AdamW, scheduler) on the same fixed batches of 32 examples taken in
dataset order, so lengths are mixed as in training. "Online" runs the teacher's
explainer on the step's batch first (what a pipeline without the cache does),
then the same student step on what it produced.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks.measure import section_memory
from pipeline.cache.extras import Axis
from pipeline.cache.project import StudentBatch, StudentExample, collate_students
from pipeline.config import DistillParams, ExplainParams, TrainParams
from pipeline.distill.objectives import ObjectiveSettings, make_objective
from pipeline.distill.trainer import DistillLoss
from pipeline.encoding import EncodedExample
from pipeline.explain.base import Explainer, Explanation
from pipeline.methods import Method
from pipeline.training import Trainer, optimizer_for


def student_example(encoded: EncodedExample, explanation: Explanation) -> StudentExample:
    """The in-memory equivalent of a cache row read back for a student with the teacher's tokenizer."""
    n = len(encoded.input_ids)

    def host(tensor):
        return tensor.detach().float().cpu().numpy() if tensor.is_floating_point() else tensor.detach().cpu().numpy()

    extras = explanation.extras.map(lambda spec, t: host(t)[..., :n] if Axis.TOKEN in spec.axes else host(t))
    return StudentExample(
        encoded.example_id,
        encoded.label,
        encoded.input_ids,
        encoded.token_type_ids,
        encoded.special_mask,
        host(explanation.attribution[:n]).astype(np.float32),
        host(explanation.logits).astype(np.float32),
        extras,
    )


def batches_for(
    encoded: Sequence[EncodedExample], explanations: dict[str, Explanation], batch_size: int, count: int, pad: int
) -> list[StudentBatch]:
    rows = [student_example(e, explanations[e.example_id]) for e in encoded[: batch_size * count]]
    return [collate_students(rows[i : i + batch_size], pad) for i in range(0, len(rows), batch_size)]


def _with_explanation(batch: StudentBatch, explanation: Explanation) -> StudentBatch:
    """``batch`` with the cached fields replaced by a freshly computed teacher explanation."""
    return dataclasses.replace(
        batch, teacher_logits=explanation.logits, attribution=explanation.attribution, extras=explanation.extras
    )


@dataclass
class StepRunner:
    """One configuration (objective, cached or online) with its own student and optimizer."""

    name: str
    trainer: Trainer
    optimizer: object
    scheduler: object
    batches: Sequence[StudentBatch]
    teacher: Explainer | None
    step_count: int = 0

    def step(self) -> tuple[float, float]:
        """Seconds of one training step (teacher included when online) and of its teacher part."""
        batch = self.batches[self.step_count % len(self.batches)]
        start = time.perf_counter()
        teacher_s = 0.0
        if self.teacher is not None:
            batch = _with_explanation(batch, self.teacher.explain(batch.tokens))
            teacher_s = time.perf_counter() - start
        self.trainer._step(batch, self.optimizer, self.scheduler, self.step_count, 0)
        self.step_count += 1
        return time.perf_counter() - start, teacher_s


def make_runner(
    name: str,
    student_ref: str,
    layers: int,
    method: Method | None,
    batches: Sequence[StudentBatch],
    mask_token_id: int,
    teacher: Explainer | None = None,
) -> StepRunner:
    from pipeline.models import load_classifier

    torch.manual_seed(0)
    student = load_classifier(student_ref, 2, num_layers=layers).train()
    params = DistillParams(
        alpha=0.0 if method is None else 0.5,
        beta=0.0 if method is None else 1.0,
        method=method or "none",
        train=TrainParams(batch_size=batches[0].tokens.size),
    )
    optimizer, scheduler = optimizer_for(student, params.train, total=10_000)
    objective = make_objective(method, ObjectiveSettings(params.temperature, params.t2_scaling, mask_token_id))
    trainer = Trainer(student, params.train, list, DistillLoss(objective, params), desc=name)
    return StepRunner(name, trainer, optimizer, scheduler, batches, teacher)


def time_interleaved(runners: Sequence[StepRunner], warmup: int, repeats: dict[str, int]) -> dict[str, dict]:
    """Round-robin steps over the runners, so a change in machine load hits every configuration alike.

    Each runner first takes one untimed step under :func:`section_memory` (its peak
    RSS), then ``warmup`` untimed and ``repeats[name]`` timed steps, interleaved.
    """
    out: dict[str, dict] = {}
    for runner in runners:
        with section_memory() as memory:
            runner.step()
        out[runner.name] = {**memory, "times": [], "teacher_times": []}
    for _ in range(warmup):
        for runner in runners:
            runner.step()
    for round_ in range(max(repeats.values())):
        for runner in runners:
            if round_ < repeats[runner.name]:
                total, teacher_s = runner.step()
                out[runner.name]["times"].append(total)
                out[runner.name]["teacher_times"].append(teacher_s)
    for runner in runners:
        entry = out[runner.name]
        times, teacher_times = entry.pop("times"), entry.pop("teacher_times")
        entry.update(step_s=statistics.median(times), step_s_min=min(times), steps=len(times))
        if runner.teacher is not None:
            entry["teacher_s"] = statistics.median(teacher_times)
    return out


def online_explainer(method: Method, model: torch.nn.Module, params: ExplainParams, mask_token_id: int) -> Explainer:
    from pipeline.explain.base import make_explainer

    return make_explainer(method, model, params, mask_token_id)

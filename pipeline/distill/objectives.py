"""One objective per explanation family: the student's main logits plus its explanation term.

Every objective runs the student once on the real input (those logits feed the
KD and CE terms) and, when asked, computes its explanation term:

* :class:`GradientObjective`: the student's own gradient x input at its word
  embeddings for the teacher's predicted class, with ``create_graph=True`` so the
  term is trained by double backprop. ``gradient_loss: cosine``: signed per-token scores (summed over
  the hidden dimension) matched to the cached map by ``1 - cosine`` after L2 normalisation over the real
  tokens; ``adkd``: AD-KD's unsigned scores (the L2 norm over the hidden dimension) matched to the
  cached :class:`~pipeline.cache.extras.Magnitude` map by MSE (:func:`pipeline.losses.magnitude_loss`).
  The main logits come from the same forward, which uses the
  plain ("math") attention kernel: the fused flash and memory-efficient kernels have no second
  derivative.
* :class:`PerturbationObjective`: one of the perturbation family's cached perturbed inputs per example per
  step (chosen by the step's seeded generator); the student runs on that masked
  input (one extra forward) and matches the teacher's cached logits there (KD loss).
* :class:`FeatureSelectionObjective`: the student runs on the selected tokens
  only (all other real tokens are [MASK]; one extra forward) and must match the
  teacher's logits on the *full* input (sufficiency KD loss).
* :class:`NoExplanation` (``--method none``): no explanation term (vanilla KD or,
  with alpha 0, plain fine-tuning).

The view term (``distill.views``) is not an objective's: it adds to any of them
(:mod:`pipeline.distill.view_term`).
"""

from __future__ import annotations

from abc import ABC
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import ClassVar

import torch

from pipeline import losses
from pipeline.cache.extras import Extra, Magnitude, Selection, Views
from pipeline.cache.project import StudentBatch
from pipeline.errors import EgkdError
from pipeline.methods import Method
from pipeline.models import token_type_inputs


@dataclass(frozen=True)
class ObjectiveSettings:
    temperature: float
    t2_scaling: bool
    mask_token_id: int
    gradient_loss: str = "cosine"  # the gradient objective's map loss: cosine or adkd


@dataclass(frozen=True)
class ObjectiveOutput:
    logits: torch.Tensor  # (B, C) student logits on the real input
    explain: torch.Tensor | None  # scalar explanation term, None when not computed this step


def student_logits(
    student: torch.nn.Module, batch: StudentBatch, input_ids: torch.Tensor | None = None
) -> torch.Tensor:
    inputs = batch.tokens.model_inputs(student)
    if input_ids is not None:
        inputs["input_ids"] = input_ids
    return student(**inputs).logits


def student_on_masks(
    student: torch.nn.Module, batch: StudentBatch, masks: torch.Tensor, mask_token_id: int
) -> torch.Tensor:
    """The student on M masked copies of each example, in one forward of ``B * M`` rows: ``(B, M, C)`` logits.

    masks: (B, M, T) bool, the tokens each copy replaces by ``mask_token_id`` (only real tokens are replaced).
    """
    size, count, length = masks.shape
    tokens = batch.tokens
    replace = masks & batch.real_tokens[:, None, :]
    ids = losses.mask_tokens(tokens.input_ids[:, None, :].expand(-1, count, -1), replace, mask_token_id)
    logits = student(
        input_ids=ids.reshape(size * count, length),
        attention_mask=tokens.attention_mask.repeat_interleave(count, 0),
        **token_type_inputs(student, tokens.token_type_ids.repeat_interleave(count, 0)),
    ).logits
    return logits.view(size, count, -1)


class Objective(ABC):
    """The student's forward pass and, on explanation steps, its explanation term."""

    method: ClassVar[Method | None]
    requires: ClassVar[tuple[type[Extra], ...]] = ()  # the cached extras its term reads
    needs_mask_token: ClassVar[bool] = False  # its term replaces tokens by the student tokenizer's [MASK]

    def __init__(self, settings: ObjectiveSettings) -> None:
        self.settings = settings

    def compute(
        self, student: torch.nn.Module, batch: StudentBatch, explain: bool, generator: torch.Generator
    ) -> ObjectiveOutput:
        logits = student_logits(student, batch)
        return ObjectiveOutput(logits, self.explain_term(student, batch, generator) if explain else None)

    def explain_term(
        self, student: torch.nn.Module, batch: StudentBatch, generator: torch.Generator
    ) -> torch.Tensor | None:
        return None

    def required(self) -> tuple[type[Extra], ...]:
        """The cached extras this objective reads with its settings."""
        return self.requires

    def check(self, batch: StudentBatch) -> None:
        """Refuse a batch that lacks the cached extras this objective reads."""
        missing = [kind.kind for kind in self.required() if batch.extras.get(kind) is None]
        if missing:
            raise EgkdError(f"the cache rows have no {missing[0]} extras; method {self.method} needs them")

    def _kd(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return losses.kd_loss(student, teacher, self.settings.temperature, self.settings.t2_scaling)


REGISTRY: dict[Method | None, type[Objective]] = {}


def register(cls: type[Objective]) -> type[Objective]:
    REGISTRY[cls.method] = cls
    return cls


def make_objective(method: Method | None, settings: ObjectiveSettings) -> Objective:
    return REGISTRY[method](settings)


@register
class NoExplanation(Objective):
    method = None


def twice_differentiable_attention() -> AbstractContextManager:
    """Restrict scaled-dot-product attention to the math kernel, the only one with a double backward.

    The fused kernels (flash and memory-efficient on CUDA, flash on a CPU) have no second derivative; on
    a CPU the math kernel is what a padded batch gets anyway, so CPU results are unchanged.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


@register
class GradientObjective(Objective):
    method = Method.GRADIENT

    def required(self) -> tuple[type[Extra], ...]:
        return (Magnitude,) if self.settings.gradient_loss == "adkd" else ()

    def compute(self, student, batch, explain, generator):
        if not explain:
            return super().compute(student, batch, explain, generator)
        tokens = batch.tokens
        with twice_differentiable_attention():
            embeds = student.get_input_embeddings()(tokens.input_ids)
            logits = student(
                inputs_embeds=embeds,
                attention_mask=tokens.attention_mask,
                **token_type_inputs(student, tokens.token_type_ids),
            ).logits
            target = batch.teacher_logits.argmax(dim=-1, keepdim=True)
            chosen = logits.gather(-1, target).sum()
            (grad,) = torch.autograd.grad(chosen, embeds, create_graph=True)
        products = grad * embeds  # (B, T, H) gradient x input
        if self.settings.gradient_loss == "adkd":
            self.check(batch)
            magnitude = batch.extras.get(Magnitude)
            assert magnitude is not None
            scores = _norm(products)  # (B, T) unsigned, AD-KD's
            return ObjectiveOutput(logits, losses.magnitude_loss(scores, magnitude.scores, batch.real_tokens))
        scores = products.sum(dim=-1)  # (B, T) signed
        return ObjectiveOutput(logits, losses.attribution_loss(scores, batch.attribution, batch.real_tokens))


def _norm(products: torch.Tensor) -> torch.Tensor:
    """``(B, T, H)`` -> ``(B, T)`` L2 norm over the last axis, with a zero (not NaN) gradient at a zero vector.

    Padding and special positions can have an all-zero gradient; the second derivative taken through the
    norm would be 0/0 there.
    """
    squared = products.float().pow(2).sum(dim=-1)
    nonzero = squared > 0
    return torch.where(nonzero, squared.clamp_min(torch.finfo(squared.dtype).tiny).sqrt(), 0.0)


@register
class PerturbationObjective(Objective):
    method = Method.PERTURBATION
    requires = (Views,)
    needs_mask_token = True

    def explain_term(self, student, batch, generator):
        self.check(batch)
        views = batch.extras.get(Views)
        assert views is not None
        count = views.masks.shape[1]
        size = views.masks.shape[0]
        pick = (torch.rand(size, generator=generator) * count).long().clamp_max(count - 1)  # on the host: any
        pick = pick.to(views.masks.device, non_blocking=True)  # device draws the same views
        rows = torch.arange(size, device=views.masks.device)
        replace = views.masks[rows, pick] & batch.real_tokens
        masked = losses.mask_tokens(batch.tokens.input_ids, replace, self.settings.mask_token_id)
        return self._kd(student_logits(student, batch, masked), views.logits[rows, pick])


@register
class FeatureSelectionObjective(Objective):
    method = Method.FEATURE_SELECTION
    requires = (Selection,)
    needs_mask_token = True

    def explain_term(self, student, batch, generator):
        self.check(batch)
        selection = batch.extras.get(Selection)
        assert selection is not None
        replace = batch.real_tokens & ~selection.mask
        kept_only = losses.mask_tokens(batch.tokens.input_ids, replace, self.settings.mask_token_id)
        return self._kd(student_logits(student, batch, kept_only), batch.teacher_logits)

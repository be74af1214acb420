"""Pure loss functions of stage two; shapes are given as (B, C) logits, (B, T) token maps.

The total loss is ``alpha * KD(T) + (1 - alpha) * CE + beta * L_explain + view_weight * L_views``
(:func:`total_loss`). Every function returns a scalar tensor averaged over the
batch, so terms from batches of different sizes are comparable, except the ``*_per_example`` ones,
which return one value per example, ``(B,)``. When some training examples have no gold label (a
transfer set, ``distill.gold_labels``), the supervised part is :func:`transfer_loss` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, t2_scaling: bool = True
) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)), mean over the batch; times T^2 when ``t2_scaling``.

    student_logits, teacher_logits: (B, C). With one output (regression) this is the
    MSE between the two outputs instead (temperature does not apply).
    """
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits.float(), teacher_logits.float())
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (temperature**2) if t2_scaling else kl


def ce_loss(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with gold labels (B,) for (B, C) logits; MSE for (B, 1) regression outputs."""
    if student_logits.shape[-1] == 1:
        return F.mse_loss(student_logits.float().squeeze(-1), labels.float())
    return F.cross_entropy(student_logits.float(), labels.long())


def kd_per_example(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, t2_scaling: bool = True
) -> torch.Tensor:
    """:func:`kd_loss` of each example: ``(B,)`` for (B, C) logits (their mean is :func:`kd_loss`)."""
    if student_logits.shape[-1] == 1:
        return (student_logits.float() - teacher_logits.float()).pow(2).squeeze(-1)
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
    return kl * (temperature**2) if t2_scaling else kl


def ce_per_example(student_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`ce_loss` of each example: ``(B,)`` for (B, C) logits and (B,) labels."""
    if student_logits.shape[-1] == 1:
        return (student_logits.float().squeeze(-1) - labels.float()).pow(2)
    return F.cross_entropy(student_logits.float(), labels.long(), reduction="none")


def transfer_loss(kd: torch.Tensor, ce: torch.Tensor, labelled: torch.Tensor, alpha: float) -> torch.Tensor:
    """The supervised part of the loss on a batch in which only some examples have a gold label.

    kd, ce: (B,) per-example terms (:func:`kd_per_example`, :func:`ce_per_example`; an unlabelled
    example's ``ce`` is ignored, whatever it holds); labelled: (B,) bool. Mean over the batch of
    ``alpha * kd + (1 - alpha) * ce`` for a labelled example and of ``kd`` for the others: the
    teacher's soft label takes the weight the missing gold label would have had. With every example
    labelled this is ``alpha * mean(kd) + (1 - alpha) * mean(ce)``.
    """
    kd_weight = torch.where(labelled, torch.full_like(kd, alpha), torch.ones_like(kd))
    gold = torch.where(labelled, ce, torch.zeros_like(ce))
    return (kd_weight * kd + (1.0 - alpha) * gold).mean()


def normalise_map(attribution: torch.Tensor, mask: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """L2-normalise each row of (B, T) ``attribution`` over the tokens where ``mask`` (B, T) is True.

    Tokens outside the mask become 0; an all-zero row stays all zero.
    """
    masked = attribution * mask.to(attribution.dtype)
    norm = masked.norm(dim=-1, keepdim=True)
    return masked / norm.clamp_min(eps)


def attribution_loss(student_attr: torch.Tensor, teacher_attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over examples of ``1 - cos(student, teacher)`` over the real tokens (``mask``).

    student_attr, teacher_attr: (B, T) signed per-token scores; mask: (B, T) bool.
    Both maps are L2-normalised over the masked tokens first, so only their shape
    matters, never their scale (a student's gradients are far from the teacher's
    in magnitude). Examples whose teacher map is all zero carry no signal and are
    left out; with none left the loss is 0 (still attached to the graph). Written
    without a data-dependent branch, so a GPU never waits for the host here.
    """
    student = normalise_map(student_attr, mask)
    teacher = normalise_map(teacher_attr.to(student.dtype), mask)
    valid = teacher.abs().sum(dim=-1) > 0
    cosine = (student * teacher).sum(dim=-1)
    return ((1.0 - cosine) * valid).sum() / valid.sum().clamp_min(1)


def magnitude_loss(student_map: torch.Tensor, teacher_map: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """AD-KD's attribution loss: MSE between L2-normalised unsigned maps, per non-zero teacher entry.

    student_map, teacher_map: (B, T) per-token magnitudes (the L2 norm over the hidden dimension of
    gradient x input); mask: (B, T) bool, the real tokens. Each row of both maps is L2-normalised over
    the masked tokens (:func:`normalise_map`), then ``sum((s - t)^2) / #(t != 0)`` over the whole batch: AD-KD's
    ``mse_loss(..., reduction="sum") / (t != 0).sum()``. A batch whose teacher maps are all zero gives 0.
    """
    student = normalise_map(student_map, mask)
    teacher = normalise_map(teacher_map.to(student.dtype), mask)
    return ((student - teacher) ** 2).sum() / (teacher != 0).sum().clamp_min(1)


def view_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float, t2_scaling: bool = True
) -> torch.Tensor:
    """KD on the views: the mean over examples and views of :func:`kd_loss` (same temperature and T^2 rule).

    student_logits: (B, M, C), the student on the M perturbed views of each example; teacher_logits:
    (B, M, C), the teacher's cached logits on the same views. :func:`kd_loss` is a mean over rows, so this
    is it on the B * M rows.
    """
    classes = student_logits.shape[-1]
    return kd_loss(student_logits.reshape(-1, classes), teacher_logits.reshape(-1, classes), temperature, t2_scaling)


def total_loss(
    kd: torch.Tensor,
    ce: torch.Tensor,
    explain: torch.Tensor | None,
    alpha: float,
    beta: float,
    views: torch.Tensor | None = None,
    view_weight: float = 0.0,
) -> torch.Tensor:
    """``alpha * kd + (1 - alpha) * ce + beta * explain + view_weight * views`` (the last two only when given)."""
    return add_terms(alpha * kd + (1.0 - alpha) * ce, explain, beta, views, view_weight)


def add_terms(
    supervised: torch.Tensor,
    explain: torch.Tensor | None,
    beta: float,
    views: torch.Tensor | None = None,
    view_weight: float = 0.0,
) -> torch.Tensor:
    """``supervised + beta * explain + view_weight * views`` (the last two only when given); all scalars."""
    loss = supervised
    if explain is not None:
        loss = loss + beta * explain
    if views is not None:
        loss = loss + view_weight * views
    return loss


def mask_tokens(input_ids: torch.Tensor, replace: torch.Tensor, mask_token_id: int) -> torch.Tensor:
    """(B, T) ids with the positions where ``replace`` (B, T) is True set to ``mask_token_id``."""
    return torch.where(replace, torch.full_like(input_ids, mask_token_id), input_ids)

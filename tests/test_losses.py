"""Exact values of the stage-two loss functions and of the teacher-to-student re-projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pipeline import losses
from pipeline.cache.extras import Extras, Views, project
from pipeline.cache.project import TokenLayout, overlap_matrix, project_scores


def test_kd_loss_exact_with_and_without_t2_scaling():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[2 * math.log(3.0), 0.0]])  # at T=2: p_teacher = (0.75, 0.25)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.kd_loss(student, teacher, 2.0, t2_scaling=False).item() == pytest.approx(expected, abs=1e-6)
    assert losses.kd_loss(student, teacher, 2.0, t2_scaling=True).item() == pytest.approx(4 * expected, abs=1e-6)
    assert losses.kd_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-7)


def test_kd_loss_is_mse_for_regression():
    assert losses.kd_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [1.0]]), 2.0).item() == 2.5


def test_ce_loss_exact():
    assert losses.ce_loss(torch.zeros(1, 2), torch.tensor([1])).item() == pytest.approx(math.log(2))
    assert losses.ce_loss(torch.tensor([[2.0]]), torch.tensor([0.5])).item() == pytest.approx(2.25)


def test_attribution_loss_is_one_minus_cosine_over_real_tokens():
    mask = torch.tensor([[False, True, True, False]])
    teacher = torch.tensor([[9.0, 1.0, 0.0, 9.0]])
    assert losses.attribution_loss(torch.tensor([[5.0, 3.0, 0.0, -7.0]]), teacher, mask).item() == pytest.approx(0.0)
    assert losses.attribution_loss(torch.tensor([[0.0, -2.0, 0.0, 0.0]]), teacher, mask).item() == pytest.approx(2.0)
    assert losses.attribution_loss(torch.tensor([[0.0, 0.0, 1.0, 0.0]]), teacher, mask).item() == pytest.approx(1.0)
    # 45 degrees: 1 - 1/sqrt(2); scale does not matter
    assert losses.attribution_loss(torch.tensor([[0.0, 100.0, 100.0, 0.0]]), teacher, mask).item() == pytest.approx(
        1 - 1 / math.sqrt(2), abs=1e-6
    )


def test_attribution_loss_skips_examples_without_teacher_signal():
    mask = torch.ones(2, 2, dtype=torch.bool)
    student = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    loss = losses.attribution_loss(student, teacher, mask)
    assert loss.item() == pytest.approx(1.0)
    assert losses.attribution_loss(student, torch.zeros(2, 2), mask).item() == 0.0


def test_magnitude_loss_is_adkd_mse_per_non_zero_teacher_entry():
    """Both maps L2-normalised over the real tokens; squared differences summed over the batch and divided
    by the number of non-zero teacher entries (AD-KD's convention: a row whose teacher map is zero still
    adds the student's squares, and no count)."""
    mask = torch.tensor([[False, True, True, True, False], [False, True, True, True, False]])
    teacher = torch.tensor([[9.0, 3.0, 4.0, 0.0, 9.0], [9.0, 0.0, 0.0, 0.0, 9.0]])  # row 0 -> (0.6, 0.8, 0)
    student = torch.tensor([[5.0, 0.0, 1.0, 1.0, 5.0], [5.0, 2.0, 0.0, 0.0, 5.0]])  # row 0 -> (0, 1, 1) / sqrt 2
    first = (0.0 - 0.6) ** 2 + (1 / math.sqrt(2) - 0.8) ** 2 + (1 / math.sqrt(2)) ** 2  # 2.5 - 2.8 / sqrt 2
    assert losses.magnitude_loss(student[:1], teacher[:1], mask[:1]).item() == pytest.approx(first / 2, abs=1e-6)
    assert losses.magnitude_loss(student, teacher, mask).item() == pytest.approx((first + 1.0) / 2, abs=1e-6)
    assert losses.magnitude_loss(teacher * 7, teacher, mask).item() == pytest.approx(0.0, abs=1e-7)  # scale-free
    assert losses.magnitude_loss(student, torch.zeros(2, 5), mask).item() == pytest.approx(2.0)  # no count: / 1


def test_view_loss_is_kd_averaged_over_examples_and_views():
    student = torch.zeros(1, 2, 2)  # one example, two views
    teacher = torch.tensor(
        [[[2 * math.log(3.0), 0.0], [0.0, 0.0]]]
    )  # view 0: p = (0.75, 0.25) at T=2; view 1: = student
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert losses.view_loss(student, teacher, 2.0, t2_scaling=False).item() == pytest.approx(kl / 2, abs=1e-6)
    assert losses.view_loss(student, teacher, 2.0).item() == pytest.approx(4 * kl / 2, abs=1e-6)
    two = torch.cat([teacher, teacher.flip(1)])  # a second example, views swapped: the same mean
    assert losses.view_loss(torch.zeros(2, 2, 2), two, 2.0).item() == pytest.approx(4 * kl / 2, abs=1e-6)


def test_total_loss_and_mask_tokens():
    kd, ce, ex = torch.tensor(2.0), torch.tensor(4.0), torch.tensor(10.0)
    assert losses.total_loss(kd, ce, ex, alpha=0.25, beta=0.5).item() == pytest.approx(0.5 + 3.0 + 5.0)
    assert losses.total_loss(kd, ce, None, alpha=0.25, beta=0.5).item() == pytest.approx(3.5)
    views = torch.tensor(6.0)
    assert losses.total_loss(kd, ce, ex, 0.25, 0.5, views, view_weight=0.5).item() == pytest.approx(8.5 + 3.0)
    assert losses.total_loss(kd, ce, None, 0.25, 0.5, None, view_weight=0.5).item() == pytest.approx(3.5)
    ids = torch.tensor([[2, 7, 8, 3]])
    assert losses.mask_tokens(ids, torch.tensor([[False, True, False, False]]), 4).tolist() == [[2, 4, 8, 3]]


def test_reprojection_sums_scores_and_ors_masks_within_segments():
    # teacher: [CLS] play ##ing | well [SEP] good [SEP]; text_a "playing well", text_b "good"
    teacher = TokenLayout(
        np.array([-1, 0, 0, 0, -1, 1, -1]), np.array([[0, 0], [0, 4], [4, 7], [8, 12], [0, 0], [0, 4], [0, 0]])
    )
    # student: <s> playing we ll </s> go od </s>
    student = TokenLayout(
        np.array([-1, 0, 0, 0, -1, 1, 1, -1]),
        np.array([[0, 0], [0, 7], [8, 10], [10, 12], [0, 0], [0, 2], [2, 4], [0, 0]]),
    )
    overlap = overlap_matrix(teacher, student)
    scores = np.array([0.0, 0.5, 0.25, -1.0, 0.0, 2.0, 0.0], dtype=np.float32)
    assert project_scores(scores, overlap).tolist() == [0.0, 0.75, -1.0, -1.0, 0.0, 2.0, 2.0, 0.0]
    views = np.array(
        [[False, False, True, False, False, False, False], [False, False, False, False, False, True, False]]
    )
    logits = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    (projected,) = project(Extras((Views(views, logits),)), overlap).items
    assert projected.masks.tolist() == [
        [False, True, False, False, False, False, False, False],
        [False, False, False, False, False, True, True, False],
    ]
    assert projected.logits is logits  # no token axis: unchanged

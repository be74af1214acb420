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


def test_rank_loss_exact_on_a_hand_made_map():
    """Real tokens 1-3; the teacher orders them 1 > 2 > 3. A student scoring them (1, 0, -1) standardises to
    z = (a, 0, -a), a = sqrt(3/2): the pairs cost softplus(-a), softplus(-a), softplus(-2a); reversed, the
    same with +. Position 0 and 4 (not real) take no part, whatever they hold."""
    mask = torch.tensor([[False, True, True, True, False]])
    teacher = torch.tensor([[-9.0, 3.0, 1.0, -2.0, 9.0]])
    a = math.sqrt(1.5)

    def softplus(x: float) -> float:
        return math.log1p(math.exp(x))

    ordered = (2 * softplus(-a) + softplus(-2 * a)) / 3
    reversed_ = (2 * softplus(a) + softplus(2 * a)) / 3
    student = torch.tensor([[100.0, 1.0, 0.0, -1.0, -100.0]])
    assert losses.rank_loss(student, teacher, mask).item() == pytest.approx(ordered, abs=1e-6)
    assert losses.rank_loss(-student, teacher, mask).item() == pytest.approx(reversed_, abs=1e-6)
    assert losses.rank_loss(student * 50 + 7, teacher, mask).item() == pytest.approx(ordered, abs=1e-5)  # scale-free
    assert losses.rank_loss(torch.zeros(1, 5), teacher, mask).item() == pytest.approx(math.log(2))  # all tied


def test_rank_loss_averages_examples_with_pairs_and_has_a_gradient():
    mask = torch.tensor([[True, True, True], [True, True, True], [True, False, False]])
    student = torch.tensor([[1.0, 0.0, -1.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[3.0, 2.0, 1.0], [4.0, 4.0, 4.0], [1.0, 0.0, 0.0]])  # rows 2 and 3: no pair
    first = losses.rank_loss(student[:1], teacher[:1], mask[:1])
    both = losses.rank_loss(student, teacher, mask)
    assert both.item() == pytest.approx(first.item())
    both.backward()
    assert student.grad is not None and student.grad[0].abs().sum() > 0 and student.grad[1:].abs().sum() == 0
    assert losses.rank_loss(student, teacher[1:2].expand(3, 3), mask).item() == 0.0


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


def test_occlusion_loss_is_kd_on_the_occluded_copy_for_two_classes():
    """The teacher's copy is p(y | x) - drop; with two classes that is its whole distribution there."""
    g = torch.Generator().manual_seed(0)
    teacher, on_copies, student = (torch.randn(*shape, generator=g) for shape in ((3, 2), (3, 4, 2), (3, 4, 2)))
    predicted = teacher.argmax(-1)
    full = teacher.softmax(-1).gather(-1, predicted[:, None])
    drop = full - on_copies.softmax(-1).gather(-1, predicted[:, None, None].expand(3, 4, 1)).squeeze(-1)
    every = torch.ones(3, 4, dtype=torch.bool)
    for t2 in (True, False):
        expected = losses.view_loss(student, on_copies, 2.0, t2).item()
        assert losses.occlusion_loss(student, teacher, drop, every, 2.0, t2).item() == pytest.approx(expected, abs=1e-6)
    some = every.clone()
    some[1:] = False  # only the first example's copies count
    expected = losses.view_loss(student[:1], on_copies[:1], 2.0).item()
    assert losses.occlusion_loss(student, teacher, drop, some, 2.0).item() == pytest.approx(expected, abs=1e-6)
    assert losses.occlusion_loss(student, teacher, drop, torch.zeros_like(every), 2.0).item() == 0.0


def test_occlusion_rank_loss_exact_on_hand_made_copies():
    """y = 1; the student's log-odds of y on three copies are 1, 2, 3, so its drops rank copy 0 first, copy 2 last.

    Negated log-odds (-1, -2, -3), standardised: z = (1, 0, -1) / sqrt(2/3). The teacher's drops (0.3, 0.1, 0.2)
    order the copies 0 > 2 > 1: the pairs (0, 1), (0, 2), (2, 1) cost softplus(z_j - z_i) each.
    """
    teacher = torch.tensor([[0.0, 1.0]])
    student = torch.tensor([[[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]])
    drop = torch.tensor([[0.3, 0.1, 0.2]])
    valid = torch.ones(1, 3, dtype=torch.bool)
    unit = 1 / math.sqrt(2 / 3)
    pairs = [-unit, -2 * unit, unit]  # z_1 - z_0, z_2 - z_0, z_1 - z_2
    expected = sum(math.log1p(math.exp(x)) for x in pairs) / 3
    assert losses.occlusion_rank_loss(student, teacher, drop, valid).item() == pytest.approx(expected, abs=1e-6)
    # Only the order of the student's copies counts: not its full-input score, not its scale.
    shifted = student * 4.0 + torch.tensor([0.0, -9.0])
    assert losses.occlusion_rank_loss(shifted, teacher, drop, valid).item() == pytest.approx(expected, abs=1e-5)
    # The explained class is the teacher's: with y = 0 the log-odds flip sign, and so does the order.
    flipped = losses.occlusion_rank_loss(student, teacher.flip(-1), drop, valid).item()
    assert flipped == pytest.approx(sum(math.log1p(math.exp(-x)) for x in pairs) / 3, abs=1e-6)
    # An invalid copy leaves its pairs out: copies 0 and 1 alone, in the teacher's order.
    some = torch.tensor([[True, True, False]])
    assert losses.occlusion_rank_loss(student, teacher, drop, some).item() == pytest.approx(math.log1p(math.exp(-2.0)))
    # Regression: the drop ranks as the negated output on the copy.
    outputs = torch.tensor([[[1.0], [2.0], [3.0]]])
    assert losses.occlusion_rank_loss(outputs, torch.tensor([[0.5]]), drop, valid).item() == pytest.approx(
        expected, abs=1e-6
    )


def test_occlusion_loss_exact_on_the_target_class_against_the_rest():
    """Three classes: p(y) = 0.5 on the full input, drop 0.3 -> the teacher's copy has p(y) 0.2, odds 1:4."""
    teacher = torch.tensor([[math.log(2.0), 0.0, 0.0]])  # p = (0.5, 0.25, 0.25), y = 0
    student = torch.zeros(1, 1, 3)  # p(y) = 1/3 on the copy, odds 1:2
    kl = 0.2 * math.log(0.2 / (1 / 3)) + 0.8 * math.log(0.8 / (2 / 3))
    drop = torch.tensor([[0.3]])
    valid = torch.tensor([[True]])
    assert losses.occlusion_loss(student, teacher, drop, valid, 1.0).item() == pytest.approx(kl, abs=1e-6)
    assert losses.target_log_odds(student[0], torch.tensor([0])).item() == pytest.approx(math.log(0.5), abs=1e-6)
    regression = losses.occlusion_loss(
        torch.tensor([[[1.0], [4.0]]]),
        torch.tensor([[3.0]]),
        torch.tensor([[0.5, -1.0]]),
        torch.tensor([[True, True]]),
        2.0,
    )
    assert regression.item() == pytest.approx(((1.0 - 2.5) ** 2 + 0.0) / 2)  # the output minus the drop, by MSE

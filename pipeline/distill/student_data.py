"""Cached teacher rows -> student examples and padded student batches.

When the student shares the teacher's tokenizer (equal tokenizer hashes), the
cached ``input_ids`` are used as they are. Otherwise the cached text is
re-tokenised with the student's tokenizer and every per-token teacher field is
re-projected onto the student's tokens through character offsets, segment by
segment:

* scores (the attribution): a student token gets the **sum** of the scores of
  the teacher tokens whose character spans overlap its own;
* masks (perturbation views, the feature selection): a student token is
  masked / selected when it overlaps **any** masked / selected teacher token.

Special tokens never overlap anything (they get 0 / False).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.cache_schema import CachedExample
from pipeline.data import Example
from pipeline.encoding import TokenBatch, encode
from pipeline.errors import EgkdError


@dataclass(frozen=True)
class TokenLayout:
    """Where each token of one example sits: its segment (-1 special) and character span."""

    segments: np.ndarray  # (T,) int: 0 first text, 1 second text, -1 special token
    offsets: np.ndarray  # (T, 2) int: character span within its segment's text


@dataclass(frozen=True)
class StudentExample:
    example_id: str
    label: float | int | None
    input_ids: np.ndarray  # (T,) the student tokenizer's ids
    token_type_ids: np.ndarray  # (T,)
    special_mask: np.ndarray  # (T,) bool
    attribution: np.ndarray  # (T,) float32, teacher scores on student tokens
    teacher_logits: np.ndarray  # (C,)
    view_masks: np.ndarray | None = None  # (P, T) bool
    view_logits: np.ndarray | None = None  # (P, C)
    selection_mask: np.ndarray | None = None  # (T,) bool
    selection_logits: np.ndarray | None = None  # (C,)


@dataclass(frozen=True)
class StudentBatch:
    """A padded batch of student examples; ``tokens`` tensors are (B, T)."""

    tokens: TokenBatch
    labels: torch.Tensor | None  # (B,) long (classification) or float (regression); None if unlabelled
    teacher_logits: torch.Tensor  # (B, C)
    attribution: torch.Tensor  # (B, T) float
    view_masks: torch.Tensor | None  # (B, P, T) bool, False on padded views
    view_logits: torch.Tensor | None  # (B, P, C)
    view_counts: torch.Tensor | None  # (B,) long: real views per example
    selection_mask: torch.Tensor | None  # (B, T) bool
    selection_logits: torch.Tensor | None  # (B, C)

    @property
    def real_tokens(self) -> torch.Tensor:
        """(B, T) bool: tokens that are neither special nor padding."""
        return ~self.tokens.special_mask


def teacher_layout(row: CachedExample) -> TokenLayout:
    segments = np.where(row.special_mask, -1, row.token_type_ids.astype(np.int64))
    return TokenLayout(segments, row.offsets.astype(np.int64))


def overlap_matrix(source: TokenLayout, target: TokenLayout) -> np.ndarray:
    """(T_target, T_source) bool: target token j overlaps source token i in the same segment."""
    s_start, s_end = source.offsets[:, 0], source.offsets[:, 1]
    t_start, t_end = target.offsets[:, 0], target.offsets[:, 1]
    same = (target.segments[:, None] == source.segments[None, :]) & (target.segments[:, None] >= 0)
    spans = (np.maximum(t_start[:, None], s_start[None, :]) < np.minimum(t_end[:, None], s_end[None, :]))
    return same & spans


def project_scores(scores: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """(T_source,) scores -> (T_target,): the sum over overlapping source tokens."""
    return (overlap.astype(np.float64) @ scores.astype(np.float64)).astype(np.float32)


def project_masks(masks: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """(..., T_source) bool -> (..., T_target) bool: any overlapping source token is True."""
    return (masks.astype(np.int64) @ overlap.T.astype(np.int64)) > 0


def _student_layouts(tokenizer, rows: Sequence[CachedExample], max_length: int):
    examples = [Example(r.example_id, r.split, r.text_a, r.text_b, r.label) for r in rows]
    encoded = encode(tokenizer, examples, max_length)
    pairs = rows[0].text_b is not None
    enc = tokenizer([r.text_a for r in rows], [r.text_b or "" for r in rows] if pairs else None,
                    truncation=True, max_length=max_length)
    layouts = []
    for i, item in enumerate(encoded):
        seq = enc.sequence_ids(i)
        segments = np.array([-1 if s is None else s for s in seq], dtype=np.int64)
        layouts.append(TokenLayout(np.where(item.special_mask, -1, segments), item.offsets.astype(np.int64)))
    return encoded, layouts


def to_student_examples(rows: Sequence[CachedExample], tokenizer=None,
                        max_length: int = 512) -> list[StudentExample]:
    """Student examples from cached rows; ``tokenizer`` None means "the teacher's tokens as cached"."""
    if not rows:
        return []
    if tokenizer is None:
        return [StudentExample(r.example_id, r.label, r.input_ids, r.token_type_ids, r.special_mask,
                               r.attribution.astype(np.float32), r.teacher_logits, r.view_masks,
                               r.view_logits, r.selection_mask, r.selection_logits) for r in rows]
    encoded, layouts = _student_layouts(tokenizer, rows, max_length)
    out = []
    for row, item, layout in zip(rows, encoded, layouts):
        overlap = overlap_matrix(teacher_layout(row), layout)
        out.append(StudentExample(
            row.example_id, row.label, item.input_ids, item.token_type_ids, item.special_mask,
            project_scores(row.attribution, overlap), row.teacher_logits,
            None if row.view_masks is None else project_masks(row.view_masks, overlap), row.view_logits,
            None if row.selection_mask is None else project_masks(row.selection_mask, overlap),
            row.selection_logits,
        ))
    return out


def collate_students(items: Sequence[StudentExample], pad_token_id: int) -> StudentBatch:
    from pipeline.encoding import EncodedExample, collate

    tokens = collate([EncodedExample(i.example_id, i.input_ids, i.token_type_ids, i.special_mask,
                                     np.zeros((len(i.input_ids), 2), np.int32), i.label, False)
                      for i in items], pad_token_id)
    size, length = tokens.input_ids.shape
    attribution = torch.zeros((size, length))
    for row, item in enumerate(items):
        attribution[row, :len(item.attribution)] = torch.from_numpy(item.attribution.astype(np.float32))
    labels = None
    if all(i.label is not None for i in items):
        regression = len(items[0].teacher_logits) == 1
        labels = torch.tensor([i.label for i in items], dtype=torch.float32 if regression else torch.long)
    views = _collate_views(items, length)
    selection_mask = selection_logits = None
    if all(i.selection_mask is not None for i in items):
        selection_mask = torch.zeros((size, length), dtype=torch.bool)
        for row, item in enumerate(items):
            selection_mask[row, :len(item.selection_mask)] = torch.from_numpy(item.selection_mask)
        if all(i.selection_logits is not None for i in items):
            selection_logits = torch.from_numpy(np.stack([i.selection_logits for i in items]).astype(np.float32))
    teacher = torch.from_numpy(np.stack([i.teacher_logits for i in items]).astype(np.float32))
    return StudentBatch(tokens, labels, teacher, attribution, *views, selection_mask, selection_logits)


def _collate_views(items: Sequence[StudentExample], length: int):
    if not all(i.view_masks is not None and i.view_logits is not None for i in items):
        return None, None, None
    counts = [len(i.view_masks) for i in items]
    if min(counts) == 0:
        raise EgkdError(f"example {items[counts.index(0)].example_id} has no cached perturbed views")
    size, views, classes = len(items), max(counts), len(items[0].teacher_logits)
    masks = torch.zeros((size, views, length), dtype=torch.bool)
    logits = torch.zeros((size, views, classes))
    for row, item in enumerate(items):
        p, t = item.view_masks.shape
        masks[row, :p, :t] = torch.from_numpy(item.view_masks.astype(bool))
        logits[row, :p] = torch.from_numpy(item.view_logits.astype(np.float32))
    return masks, logits, torch.tensor(counts, dtype=torch.long)

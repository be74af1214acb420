"""Cached teacher rows -> examples on a student's tokens, and padded student batches.

When the student shares the teacher's tokenizer (equal tokenizer hashes), the
cached ``input_ids`` are used as they are. Otherwise the cached text is
re-tokenised with the student's tokenizer and every per-token teacher field is
re-projected onto the student's tokens through character offsets, segment by
segment (segments come from the cache's ``segments`` column, never from token
type ids, which RoBERTa-style tokenizers leave all zero):

* scores (the attribution): a student token gets the **sum** of the scores of
  the teacher tokens whose character spans overlap its own;
* masks (perturbed views, a selection): a student token is masked / selected
  when it overlaps **any** masked / selected teacher token
  (:func:`pipeline.cache.extras.project`).

Special tokens never overlap anything (they get 0 / False). Stage two trains on
these examples and evaluation compares a student's explanations with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.cache.extras import Extras, project, stack, to_device
from pipeline.cache.schema import CachedExample
from pipeline.data import Example
from pipeline.encoding import EncodedExample, TokenBatch, encode, pad_rows, pad_tokens


@dataclass(frozen=True, kw_only=True)
class StudentExample:
    example_id: str
    label: float | int | None
    input_ids: np.ndarray  # (T,) the student tokenizer's ids
    token_type_ids: np.ndarray  # (T,)
    special_mask: np.ndarray  # (T,) bool
    attribution: np.ndarray  # (T,) float32, teacher scores on student tokens
    teacher_logits: np.ndarray  # (C,)
    extras: Extras = field(default_factory=Extras)  # the method's extras, on student tokens


@dataclass(frozen=True, kw_only=True)
class StudentBatch:
    """A padded batch of student examples; ``tokens`` tensors are (B, T)."""

    tokens: TokenBatch
    labels: torch.Tensor | None  # (B,) long (classification) or float (regression); None if no example has one
    teacher_logits: torch.Tensor  # (B, C)
    attribution: torch.Tensor  # (B, T) float
    extras: Extras  # (B, ...) tensors, token axes padded to T
    labelled: torch.Tensor | None = None  # (B,) bool: the examples whose ``labels`` entry is a gold label
    # (None: all of them when ``labels`` is given); an unlabelled example's entry is a placeholder 0

    @property
    def real_tokens(self) -> torch.Tensor:
        """(B, T) bool: tokens that are neither special nor padding."""
        return ~self.tokens.special_mask

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StudentBatch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return StudentBatch(
            tokens=self.tokens.to(device, non_blocking),
            labels=None if self.labels is None else move(self.labels),
            teacher_logits=move(self.teacher_logits),
            attribution=move(self.attribution),
            extras=to_device(self.extras, device, non_blocking),
            labelled=None if self.labelled is None else move(self.labelled),
        )


@dataclass(frozen=True)
class TokenLayout:
    """Where each token of one example sits: its segment (-1 special) and character span."""

    segments: np.ndarray  # (T,) int: 0 first text, 1 second text, -1 special token
    offsets: np.ndarray  # (T, 2) int: character span within its segment's text


def overlap_matrix(source: TokenLayout, target: TokenLayout) -> np.ndarray:
    """(T_target, T_source) bool: target token j overlaps source token i in the same segment."""
    s_start, s_end = source.offsets[:, 0], source.offsets[:, 1]
    t_start, t_end = target.offsets[:, 0], target.offsets[:, 1]
    same = (target.segments[:, None] == source.segments[None, :]) & (target.segments[:, None] >= 0)
    spans = np.maximum(t_start[:, None], s_start[None, :]) < np.minimum(t_end[:, None], s_end[None, :])
    return same & spans


def project_scores(scores: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """(T_source,) scores -> (T_target,): the sum over overlapping source tokens."""
    return (overlap.astype(np.float64) @ scores.astype(np.float64)).astype(np.float32)


def layout(item: EncodedExample | CachedExample) -> TokenLayout:
    return TokenLayout(item.segments.astype(np.int64), item.offsets.astype(np.int64))


def to_student_examples(rows: Sequence[CachedExample], tokenizer=None, max_length: int = 512) -> list[StudentExample]:
    """Student examples from cached rows; ``tokenizer`` None means "the teacher's tokens as cached"."""
    if not rows:
        return []
    if tokenizer is None:
        return [
            StudentExample(
                example_id=r.example_id,
                label=r.label,
                input_ids=r.input_ids,
                token_type_ids=r.token_type_ids,
                special_mask=r.special_mask,
                attribution=r.attribution.astype(np.float32, copy=False),  # the cache's are float32 already
                teacher_logits=r.teacher_logits,
                extras=r.extras,
            )
            for r in rows
        ]
    examples = [Example(r.example_id, r.split, r.text_a, r.text_b, r.label) for r in rows]
    out = []
    for row, item in zip(rows, encode(tokenizer, examples, max_length), strict=True):
        overlap = overlap_matrix(layout(row), layout(item))
        out.append(
            StudentExample(
                example_id=row.example_id,
                label=row.label,
                input_ids=item.input_ids,
                token_type_ids=item.token_type_ids,
                special_mask=item.special_mask,
                attribution=project_scores(row.attribution, overlap),
                teacher_logits=row.teacher_logits,
                extras=project(row.extras, overlap),
            )
        )
    return out


def collate_students(items: Sequence[StudentExample], pad_token_id: int, pin_memory: bool = False) -> StudentBatch:
    """Pad ``items`` into one batch (to the longest); ``pin_memory`` for fast, asynchronous copies to a GPU."""
    tokens = pad_tokens(
        [i.example_id for i in items],
        [i.input_ids for i in items],
        [i.token_type_ids for i in items],
        [i.special_mask for i in items],
        pad_token_id,
    )
    length = tokens.input_ids.shape[1]
    attribution = pad_rows([i.attribution for i in items], tokens.attention_mask.numpy() > 0, 0.0, np.float32)
    labels, labelled = None, None
    if any(i.label is not None for i in items):
        regression = len(items[0].teacher_logits) == 1
        gold = [0 if i.label is None else i.label for i in items]
        labels = torch.tensor(gold, dtype=torch.float32 if regression else torch.long)
    if not all(i.label is not None for i in items):
        labelled = torch.tensor([i.label is not None for i in items])
    teacher = torch.from_numpy(np.stack([i.teacher_logits for i in items]).astype(np.float32))
    batch = StudentBatch(
        tokens=tokens,
        labels=labels,
        teacher_logits=teacher,
        attribution=torch.from_numpy(attribution),
        extras=stack([i.extras for i in items], length),
        labelled=labelled,
    )
    return _pinned(batch) if pin_memory else batch


def _pinned(batch: StudentBatch) -> StudentBatch:
    pin = lambda t: t.pin_memory()  # noqa: E731
    tokens = batch.tokens
    return StudentBatch(
        tokens=TokenBatch(
            example_ids=tokens.example_ids,
            input_ids=pin(tokens.input_ids),
            attention_mask=pin(tokens.attention_mask),
            token_type_ids=pin(tokens.token_type_ids),
            special_mask=pin(tokens.special_mask),
        ),
        labels=None if batch.labels is None else pin(batch.labels),
        teacher_logits=pin(batch.teacher_logits),
        attribution=pin(batch.attribution),
        extras=batch.extras.map(lambda _, t: t.pin_memory()),
        labelled=None if batch.labelled is None else pin(batch.labelled),
    )

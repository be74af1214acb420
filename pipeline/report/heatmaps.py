"""Token explanations of a few dev sentences, teacher beside students, for the report's heatmaps.

The teacher's maps come from the caches' dev partitions as stage one stored
them. Each student is explained on the same sentences by the same explainer
with the same parameters (:func:`pipeline.explain.make_explainer`, the
parameters recorded in the cache), through its own tokenizer; every token keeps
its character span, so teacher and student maps line up on the text even when
the tokenizers differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cache.schema import CachedExample, CacheMetadata
from pipeline.config import ExplainParams
from pipeline.methods import Method


@dataclass(frozen=True)
class TokenScore:
    segment: int  # 0: text_a, 1: text_b
    start: int  # character span within its segment's text
    end: int
    score: float


@dataclass(frozen=True)
class HeatRow:
    who: str  # "teacher" or the student's name
    prediction: str
    confidence: float  # probability of the predicted class
    tokens: tuple[TokenScore, ...]


@dataclass(frozen=True)
class HeatBlock:
    method: str
    rows: tuple[HeatRow, ...]


@dataclass(frozen=True)
class SentenceHeatmaps:
    example_id: str
    text_a: str
    text_b: str | None
    label: str
    blocks: tuple[HeatBlock, ...]


@dataclass(frozen=True)
class HeatmapStudent:
    name: str
    model: Path


def _label(meta: CacheMetadata, index: int) -> str:
    names = meta.label_names
    return names[index] if names and 0 <= index < len(names) else str(index)


def _prediction(meta: CacheMetadata, logits: np.ndarray) -> tuple[str, float]:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.size == 1:  # regression
        return f"{float(logits[0]):.2f}", 1.0
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    best = int(probs.argmax())
    return _label(meta, best), float(probs[best])


def _tokens(
    segments: np.ndarray, special: np.ndarray, offsets: np.ndarray, scores: np.ndarray
) -> tuple[TokenScore, ...]:
    return tuple(
        TokenScore(int(seg), int(span[0]), int(span[1]), float(score))
        for seg, is_special, span, score in zip(segments, special, offsets, scores, strict=False)
        if not is_special and span[1] > span[0]
    )


def teacher_row(meta: CacheMetadata, row: CachedExample) -> HeatRow:
    prediction, confidence = _prediction(meta, row.teacher_logits)
    return HeatRow(
        "teacher", prediction, confidence, _tokens(row.segments, row.special_mask, row.offsets, row.attribution)
    )


def pick_examples(
    rows: Sequence[CachedExample], count: int, min_tokens: int = 6, max_tokens: int = 28
) -> list[CachedExample]:
    """The first ``count`` rows of readable length (dataset order: the same rows for every method)."""
    fitting = [r for r in rows if min_tokens <= int((~r.special_mask).sum()) <= max_tokens]
    return (fitting or list(rows))[:count]


def student_rows(
    student: HeatmapStudent, meta: CacheMetadata, rows: Sequence[CachedExample], explain: ExplainParams
) -> list[HeatRow]:
    """The student's own explanations (same method and parameters as the cache) of ``rows``."""
    from pipeline.data import Example
    from pipeline.encoding import collate, encode
    from pipeline.explain.base import make_explainer
    from pipeline.explain.record import explain_params_from_cache
    from pipeline.models import load_classifier, load_tokenizer

    method = Method.parse(meta.method)
    tokenizer = load_tokenizer(str(student.model))
    model = load_classifier(str(student.model), meta.num_labels).eval()
    examples = [Example(r.example_id, r.split, r.text_a, r.text_b, r.label) for r in rows]
    encoded = encode(tokenizer, examples, meta.max_length)
    batch = collate(encoded, tokenizer.pad_token_id or 0)
    params = explain_params_from_cache(explain, method, meta.method_params)
    explainer = make_explainer(method, model, params, tokenizer.mask_token_id)
    explanation = explainer.explain(batch)
    scores = explanation.attribution.detach().float().cpu().numpy()
    logits = explanation.logits.detach().float().cpu().numpy()
    out = []
    for i, item in enumerate(encoded):
        n = len(item.input_ids)
        prediction, confidence = _prediction(meta, logits[i])
        out.append(
            HeatRow(
                student.name,
                prediction,
                confidence,
                _tokens(item.segments, item.special_mask, item.offsets, scores[i, :n]),
            )
        )
    return out


def build_heatmaps(
    caches: Sequence[Path], students: Sequence[HeatmapStudent], explain: ExplainParams, count: int, split: str = "dev"
) -> list[SentenceHeatmaps]:
    """Heatmaps of ``count`` sentences of ``split`` for every method found in ``caches``."""
    from pipeline.cache.store import find_caches, list_partitions, read_cache

    partitions: list[tuple[CacheMetadata, list[CachedExample]]] = []
    for cache in find_caches(caches):
        for method, part_split in list_partitions(cache):
            if part_split == split:
                partitions.append(read_cache(cache, method, split))
    if not partitions or count <= 0:
        return []
    canonical = [m.value for m in Method]
    partitions.sort(key=lambda p: canonical.index(p[0].method) if p[0].method in canonical else len(canonical))
    chosen = pick_examples(partitions[0][1], count)
    ids = [r.example_id for r in chosen]
    blocks_by_id: dict[str, list[HeatBlock]] = {i: [] for i in ids}
    for meta, rows in partitions:
        by_id = {r.example_id: r for r in rows}
        mine = [by_id[i] for i in ids if i in by_id]
        if not mine:
            continue
        per_student = [student_rows(s, meta, mine, explain) for s in students]
        for index, row in enumerate(mine):
            heat = (teacher_row(meta, row),) + tuple(rows_of[index] for rows_of in per_student)
            blocks_by_id[row.example_id].append(HeatBlock(meta.method, heat))
    meta = partitions[0][0]
    return [
        SentenceHeatmaps(r.example_id, r.text_a, r.text_b, _gold(meta, r.label), tuple(blocks_by_id[r.example_id]))
        for r in chosen
    ]


def _gold(meta: CacheMetadata, label: float | int | None) -> str:
    if label is None:
        return "?"
    return f"{float(label):.2f}" if meta.num_labels == 1 else _label(meta, int(label))

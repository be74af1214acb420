"""Tokenised examples and length-bucketed batches.

:class:`EncodedExample` keeps one example's token ids and character offsets
(what the cache stores); :func:`collate` pads a list of them into a
:class:`TokenBatch` of ``(B, T)`` tensors, padding only to the longest in the
batch. :func:`bucketed_batches` sorts by length first, so batches waste little
compute on padding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import torch

from pipeline.data import Example
from pipeline.models import token_type_inputs


@dataclass(frozen=True, kw_only=True)
class EncodedExample:
    example_id: str
    input_ids: np.ndarray  # (T,) int32
    token_type_ids: np.ndarray  # (T,) int8: what the model is given (all 0 for RoBERTa-style tokenizers)
    special_mask: np.ndarray  # (T,) bool: [CLS], [SEP] and the like
    segments: np.ndarray  # (T,) int8: the text each token comes from (0 first, 1 second), -1 special tokens
    offsets: np.ndarray  # (T, 2) int32: character span of each token within its own segment's text
    label: float | int | None
    truncated: bool


@dataclass(frozen=True, kw_only=True)
class TokenBatch:
    """A padded batch; every tensor is ``(B, T)``."""

    example_ids: list[str]
    input_ids: torch.Tensor  # long
    attention_mask: torch.Tensor  # long, 1 on real tokens
    token_type_ids: torch.Tensor  # long
    special_mask: torch.Tensor  # bool, True on special tokens and padding: never explained
    host: TokenBatch | None = field(default=None, repr=False, compare=False)  # the CPU batch this was moved from

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]

    def on_host(self) -> TokenBatch:
        """This batch on the CPU: itself, or the CPU batch it was moved from (no copy back, no waiting)."""
        if self.input_ids.device.type == "cpu":
            return self
        return self.host if self.host is not None else self.to("cpu")

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenBatch:
        """This batch on ``device``; ``non_blocking`` from the CPU to a GPU pins the host tensors first, so
        the copy does not wait for the work already queued on the GPU."""
        pin = non_blocking and torch.device(device).type == "cuda" and self.input_ids.device.type == "cpu"

        def move(tensor: torch.Tensor) -> torch.Tensor:
            return (tensor.pin_memory() if pin else tensor).to(device, non_blocking=non_blocking)

        return TokenBatch(
            example_ids=self.example_ids,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            token_type_ids=move(self.token_type_ids),
            special_mask=move(self.special_mask),
            host=self if self.input_ids.device.type == "cpu" else self.host,
        )

    def model_inputs(self, model: Any = None) -> dict[str, torch.Tensor]:
        """The forward's inputs; for ``model``, token type ids only where it takes them."""
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if model is None:
            return {**inputs, "token_type_ids": self.token_type_ids}
        return {**inputs, **token_type_inputs(model, self.token_type_ids)}


def encode(tokenizer, examples: Sequence[Example], max_length: int) -> list[EncodedExample]:
    """Tokenise examples (pairs too), truncating to ``max_length`` tokens.

    A fast tokenizer's backend is called once for the whole list (:func:`_encode_fast`), and every field
    is gathered into one flat array, of which each example's arrays are views; a tokenizer without a
    backend goes through its own ``__call__`` (:func:`_encode_slow`). Both give the same arrays.
    """
    if not examples:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return _encode_slow(tokenizer, examples, max_length)
    return _encode_fast(tokenizer, backend, examples, max_length)


@contextmanager
def _backend_settings(tokenizer, backend, max_length: int) -> Iterator[None]:
    """Truncation to ``max_length`` (longest first, as the tokenizer's ``__call__`` with ``truncation=True``),
    no padding and the tokenizer's own special-token splitting, on its backend for the duration; the
    backend's settings are restored afterwards."""
    truncation, padding, split = backend.truncation, backend.padding, backend.encode_special_tokens
    backend.enable_truncation(
        max_length, stride=0, strategy="longest_first", direction=getattr(tokenizer, "truncation_side", "right")
    )
    backend.no_padding()
    backend.encode_special_tokens = bool(getattr(tokenizer, "split_special_tokens", False))
    try:
        yield
    finally:
        if truncation is None:
            backend.no_truncation()
        else:
            backend.enable_truncation(**truncation)
        if padding is not None:
            backend.enable_padding(**padding)
        backend.encode_special_tokens = split


def _encode_fast(tokenizer, backend, examples: Sequence[Example], max_length: int) -> list[EncodedExample]:
    pairs = examples[0].text_b is not None
    inputs = [(e.text_a, e.text_b or "") for e in examples] if pairs else [e.text_a for e in examples]
    with _backend_settings(tokenizer, backend, max_length):
        encodings = backend.encode_batch(inputs, add_special_tokens=True)
    ids = [e.ids for e in encodings]
    bounds = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, ids), dtype=np.int64, count=len(ids)), out=bounds[1:])
    total = int(bounds[-1])

    def flat(values: Iterator, dtype: type, count: int = total) -> np.ndarray:
        return np.fromiter(values, dtype=dtype, count=count)

    input_ids = flat(chain.from_iterable(ids), np.int32)
    types = flat(chain.from_iterable(e.type_ids for e in encodings), np.int8)
    if not _gives_token_types(tokenizer):
        types[:] = 0
    special = flat(chain.from_iterable(e.special_tokens_mask for e in encodings), np.bool_)
    spans = flat(chain.from_iterable(chain.from_iterable(e.offsets for e in encodings)), np.int32, 2 * total)
    if pairs:  # which text each token comes from; -1 where the tokenizer added it
        sequences = chain.from_iterable(e.sequence_ids for e in encodings)
        segments = np.where(special, -1, flat((-1 if s is None else s for s in sequences), np.int8))
    else:  # one text: all its tokens come from it
        segments = np.where(special, -1, 0)
    spans = trim_spaces(spans.reshape(-1, 2), segments, bounds, examples)
    columns = [_rows(array, bounds) for array in (input_ids, types, special, segments.astype(np.int8), spans)]
    return [
        EncodedExample(
            example_id=example.example_id,
            input_ids=row_ids,
            token_type_ids=row_types,
            special_mask=row_special,
            segments=row_segments,
            offsets=row_spans,
            label=example.label,
            truncated=bool(encoding.overflowing),
        )
        for example, encoding, row_ids, row_types, row_special, row_segments, row_spans in zip(
            examples, encodings, *columns, strict=True
        )
    ]


def _gives_token_types(tokenizer) -> bool:
    """Whether the tokenizer gives its model token type ids (RoBERTa's, DistilBERT's, ModernBERT's do not: their
    backends may still number a pair's second text 1, which such a model must never see)."""
    return "token_type_ids" in getattr(tokenizer, "model_input_names", ("token_type_ids",))


def trim_spaces(spans: np.ndarray, segments: np.ndarray, bounds: np.ndarray, examples: Sequence[Example]) -> np.ndarray:
    """``(N, 2)`` character spans of the tokens of ``examples`` (example ``i``'s are ``bounds[i]:bounds[i + 1]``)
    without the whitespace at their ends; a token of whitespace alone gets an empty span at its start.

    Sentencepiece tokenizers (DeBERTa-v2's) and byte-level BPE ones without offset trimming count the space
    a token starts with ("▁is" is " is"): trimmed, every tokenizer's spans cover the same characters of a
    word, so maps re-project between them (:mod:`pipeline.cache.project`) and heatmaps mark words. Spans of
    special tokens (segment -1) are left as they are. Vectorised over all the texts at once.
    """
    texts = [text for e in examples for text in (e.text_a, e.text_b or "")]  # example i's segment s: 2 * i + s
    joined = "".join(texts)
    if not joined:
        return spans
    starts = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=starts[1:])
    solid = np.flatnonzero(np.fromiter((not c.isspace() for c in joined), dtype=np.bool_, count=len(joined)))
    owner = np.repeat(np.arange(len(examples)), np.diff(bounds))
    real = np.flatnonzero(segments >= 0)
    base = starts[2 * owner[real] + segments[real].astype(np.int64)]
    begin, end = spans[real, 0] + base, spans[real, 1] + base
    first = np.append(solid, len(joined))[np.searchsorted(solid, begin)]  # the first solid character from begin
    last = np.concatenate([[-1], solid])[np.searchsorted(solid, end)] + 1  # past the last one before end
    empty = first >= last
    out = spans.copy()
    out[real, 0] = np.where(empty, begin, first) - base
    out[real, 1] = np.where(empty, begin, last) - base
    return out


def _rows(values: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
    """Row ``i`` is ``values[bounds[i]:bounds[i + 1]]``, a view."""
    ends = bounds.tolist()
    return [values[start:end] for start, end in zip(ends[:-1], ends[1:], strict=True)]


def _encode_slow(tokenizer, examples: Sequence[Example], max_length: int) -> list[EncodedExample]:
    first = [e.text_a for e in examples]
    pairs = examples[0].text_b is not None
    second = [e.text_b or "" for e in examples] if pairs else None
    full = tokenizer(first, second, add_special_tokens=True, truncation=False, return_length=True)
    enc = tokenizer(
        first,
        second,
        add_special_tokens=True,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_token_type_ids=True,
    )
    out = []
    for i, example in enumerate(examples):
        ids = np.asarray(enc["input_ids"][i], dtype=np.int32)
        special = np.asarray(enc["special_tokens_mask"][i], dtype=bool)
        types = np.asarray(enc["token_type_ids"][i], dtype=np.int8)
        segments = _segments(enc, i, special, types)
        offsets = np.asarray(enc["offset_mapping"][i], dtype=np.int32).reshape(-1, 2)
        out.append(
            EncodedExample(
                example_id=example.example_id,
                input_ids=ids,
                token_type_ids=types if _gives_token_types(tokenizer) else np.zeros_like(types),
                special_mask=special,
                segments=segments,
                offsets=trim_spaces(offsets, segments, np.array([0, len(ids)]), [example]),
                label=example.label,
                truncated=full["length"][i] > max_length,
            )
        )
    return out


def _segments(enc, index: int, special: np.ndarray, types: np.ndarray) -> np.ndarray:
    """Which text each token comes from, from the fast tokenizer's sequence ids (token type ids otherwise)."""
    try:
        ids = enc.sequence_ids(index)
    except (ValueError, AttributeError):  # a slow tokenizer: its token type ids are all there is
        return np.where(special, -1, types).astype(np.int8)
    segments = np.array([-1 if s is None else s for s in ids], dtype=np.int8)
    return np.where(special, -1, segments).astype(np.int8)


def pad_rows(arrays: Sequence[np.ndarray], real: np.ndarray, fill: int | float | bool, dtype: type) -> np.ndarray:
    """``(B, T)``: row ``b`` holds ``arrays[b]`` where ``real[b]`` (its first ``len(arrays[b])`` places), else ``fill``.

    One scatter of the concatenated rows instead of a copy per row: collating a training batch of
    hundreds of sentences stays well under a GPU step.
    """
    out: np.ndarray = np.full(real.shape, fill, dtype=dtype)
    out[real] = np.concatenate(arrays)
    return out


def real_positions(lengths: np.ndarray) -> np.ndarray:
    """``(B, max(lengths))`` bool: True on each row's first ``lengths[b]`` places."""
    return np.arange(int(lengths.max()))[None, :] < lengths[:, None]


def pad_tokens(
    example_ids: list[str],
    input_ids: Sequence[np.ndarray],
    token_type_ids: Sequence[np.ndarray],
    special_masks: Sequence[np.ndarray],
    pad_token_id: int,
) -> TokenBatch:
    """A :class:`TokenBatch` of rows given field by field, padded to the longest."""
    real = real_positions(np.fromiter(map(len, input_ids), dtype=np.int64, count=len(input_ids)))
    return TokenBatch(
        example_ids=example_ids,
        input_ids=torch.from_numpy(pad_rows(input_ids, real, pad_token_id, np.int64)),
        attention_mask=torch.from_numpy(real.astype(np.int64)),
        token_type_ids=torch.from_numpy(pad_rows(token_type_ids, real, 0, np.int64)),
        special_mask=torch.from_numpy(pad_rows(special_masks, real, True, np.bool_)),
    )


def collate(items: Sequence[EncodedExample], pad_token_id: int) -> TokenBatch:
    return pad_tokens(
        [item.example_id for item in items],
        [item.input_ids for item in items],
        [item.token_type_ids for item in items],
        [item.special_mask for item in items],
        pad_token_id,
    )


def bucketed_batches(items: Sequence[EncodedExample], batch_size: int) -> Iterator[list[int]]:
    """Indices of ``items`` in batches of similar length (longest first, stable order within a length)."""
    order = sorted(range(len(items)), key=lambda i: -len(items[i].input_ids))
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]

"""Random but well-formed cache rows and metadata for any registered method (extras made from their declaration),
and the row-at-a-time reference of what stage one caches of an explained batch."""

from __future__ import annotations

import dataclasses

import numpy as np

from pipeline.cache.extras import Axis, Extra, Extras, to_host
from pipeline.cache.schema import SCHEMA_VERSION, CachedExample, CacheMetadata
from pipeline.data import Example
from pipeline.encoding import EncodedExample
from pipeline.explain.base import Explanation, explainer_class
from pipeline.methods import Method


def extras_of(method: str) -> tuple[str, ...]:
    return tuple(kind.kind for kind in explainer_class(Method(method)).cached_extras())


def make_meta(
    method: str = "perturbation", num_examples: int = 10, partition_size: int = 4, **changes
) -> CacheMetadata:
    meta = CacheMetadata(
        schema_version=SCHEMA_VERSION,
        egkd_version="test",
        task="mrpc",
        split="dev",
        method=method,
        method_params='{"seed": 0}',
        precision="fp32",
        extras=extras_of(method),
        teacher="t",
        teacher_base="b",
        teacher_weights_hash="w" * 64,
        tokenizer_hash="k" * 64,
        dataset_fingerprint="f" * 64,
        dataset_source="src",
        limit=None,
        max_length=32,
        num_labels=2,
        label_names=("0", "1"),
        partition_size=partition_size,
        num_parts=-(-num_examples // partition_size),
        num_examples=num_examples,
    )
    return dataclasses.replace(meta, **changes)


def random_extra(kind: type[Extra], tokens: int, classes: int, rng: np.random.Generator, views: int = 3) -> Extra:
    """An extra of ``kind`` with random values of the declared axes and dtypes."""
    values = {}
    for spec in kind.columns():
        shape = [{Axis.TOKEN: tokens, Axis.CLASS: classes, Axis.VIEW: views}[axis] for axis in spec.axes]
        if spec.dtype == np.bool_:
            values[spec.field] = rng.random(shape) < 0.4
        else:
            values[spec.field] = rng.normal(size=shape).astype(spec.dtype)
    return kind(**values)


def make_rows(method: str, start: int, count: int, seed: int = 0) -> list[CachedExample]:
    rng = np.random.default_rng(seed + start)
    rows = []
    for i in range(start, start + count):
        tokens = 5 + i % 4
        special = np.zeros(tokens, dtype=bool)
        special[[0, -1]] = True
        attribution = rng.normal(size=tokens).astype(np.float32)
        attribution[special] = 0.0
        pair = i % 3 != 0
        types = (np.arange(tokens) > tokens // 2).astype(np.int8) if pair else np.zeros(tokens, np.int8)
        extras = Extras(
            tuple(random_extra(kind, tokens, 2, rng) for kind in explainer_class(Method(method)).cached_extras())
        )
        rows.append(
            CachedExample(
                example_id=f"dev-{i}",
                split="dev",
                label=None if i == start else i % 2,
                text_a=f"sentence é {i}",
                text_b=f"second {i}" if pair else None,
                input_ids=rng.integers(0, 1000, tokens).astype(np.int32),
                token_type_ids=types,
                segments=np.where(special, -1, types).astype(np.int8),
                special_mask=special,
                offsets=np.stack([np.arange(tokens), np.arange(tokens) + 1], axis=1).astype(np.int32),
                attribution=attribution,
                teacher_logits=rng.normal(size=2).astype(np.float32),
                extras=extras,
            )
        )
    return rows


def assert_rows_equal(left: list[CachedExample], right: list[CachedExample]) -> None:
    assert len(left) == len(right)
    for a, b in zip(left, right, strict=True):
        for field in dataclasses.fields(CachedExample):
            x, y = getattr(a, field.name), getattr(b, field.name)
            if field.name == "extras":
                assert x.kinds == y.kinds
                for item_x, item_y in zip(x.items, y.items, strict=True):
                    for (spec, u), (_, v) in zip(item_x.arrays(), item_y.arrays(), strict=True):
                        assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v), spec.name
            elif isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
                assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), field.name
            else:
                assert x == y and type(x) is type(y), field.name


def batch_rows(explanation: Explanation, examples: list[Example], encoded: list[EncodedExample]) -> list[CachedExample]:
    """The cache rows of one explained batch, one example at a time: every token axis cut to the example's own
    tokens. What stage one cached row by row before it built a batch's table a column at a time
    (:func:`pipeline.cache.format.explained_table`), which must equal ``rows_to_table`` of these rows."""
    attribution = explanation.attribution.detach().float().cpu().numpy()
    logits = explanation.logits.detach().float().cpu().numpy()
    extras = to_host(explanation.extras)
    rows = []
    for i, (example, item) in enumerate(zip(examples, encoded, strict=True)):
        n = len(item.input_ids)
        rows.append(
            CachedExample(
                example_id=example.example_id,
                split=example.split,
                label=example.label,
                text_a=example.text_a,
                text_b=example.text_b,
                input_ids=item.input_ids,
                token_type_ids=item.token_type_ids,
                segments=item.segments,
                special_mask=item.special_mask,
                offsets=item.offsets,
                attribution=attribution[i, :n].copy(),
                teacher_logits=logits[i].copy(),
                extras=extras.map(
                    lambda spec, a, i=i, n=n: a[i][..., :n].copy() if Axis.TOKEN in spec.axes else a[i].copy()
                ),
            )
        )
    return rows

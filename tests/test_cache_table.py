"""A batch's cache table built a column at a time (`explained_table`) is the table of its rows, value for value.

Stage one used to make one ``CachedExample`` per explained example and then a table of those rows; it now
builds each batch's table straight from the padded batch arrays. These tests hold the two to the same table,
the same digest and the same Parquet bytes, for every registered method on real single-sentence and pair
rows, and for every registered kind of extra (token, class and view axes, no views at all), with garbage
in the padding that must not leak into a row.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from rows import batch_rows, make_meta, make_rows, random_extra
from test_explain_run import LIMIT, PART
from test_explain_run import request as explain_request

from pipeline.cache.extras import KINDS, Axis, Extra, Extras, to_host
from pipeline.cache.format import explained_table, part_digest, rows_to_table, schema_for
from pipeline.cache.schema import CachedExample
from pipeline.cache.store import part_path, read_part, temp_files, write_part, write_table
from pipeline.config import ExplainParams
from pipeline.data import Example, load_dataset
from pipeline.encoding import EncodedExample, collate, encode
from pipeline.errors import EgkdError
from pipeline.explain import REGISTRY, explainer_class, make_explainer
from pipeline.explain.part import _not_finite
from pipeline.explain.run import run_explain
from pipeline.methods import Method
from pipeline.models import load_classifier, load_tokenizer
from pipeline.tasks import get_task

METHODS = sorted(REGISTRY, key=lambda m: m.value)
GARBAGE = {np.dtype(np.bool_): True, np.dtype(np.float32): np.nan}


def kinds_of(method: Method) -> tuple[str, ...]:
    return tuple(kind.kind for kind in explainer_class(method).cached_extras())


def assert_same_part(table: pa.Table, rows: list[CachedExample], kinds: tuple[str, ...], tmp_path: Path) -> None:
    """``table`` is ``rows_to_table(rows)``: equal columns, equal digest, and the same bytes written."""
    reference = rows_to_table(rows, kinds)
    assert table.schema.equals(schema_for(kinds)) and table.num_rows == len(rows)
    for name in reference.column_names:
        assert table.column(name).equals(reference.column(name)), name
    meta = make_meta(extras=kinds, num_examples=len(rows), partition_size=len(rows))
    assert part_digest(meta, 0, table) == part_digest(meta, 0, reference)
    by_rows = write_part(tmp_path / "rows" / "part-00000.parquet", meta, 0, rows, 3)
    by_table = write_table(tmp_path / "table" / "part-00000.parquet", meta, 0, table, 3)
    assert by_table == by_rows
    assert (tmp_path / "table" / "part-00000.parquet").read_bytes() == (
        tmp_path / "rows" / "part-00000.parquet"
    ).read_bytes()


@pytest.fixture(scope="module", params=["sst2", "qnli"])
def real_rows(request, glue_dir: Path) -> tuple[list[Example], str]:
    """Ten real dev rows: SST-2 sentences, or QNLI question/sentence pairs (some cut to the length limit)."""
    task = get_task(request.param)
    source = glue_dir if request.param == "sst2" else glue_dir.parent / "glue-qnli"
    return load_dataset(source, task, "dev", 10).examples, request.param


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.value)
def test_a_real_batch_table_is_the_table_of_its_rows(
    method: Method, real_rows, tiny_model_dir: Path, tmp_path: Path
) -> None:
    examples, task = real_rows
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_classifier(str(tiny_model_dir), 2).eval()
    encoded = encode(tokenizer, examples, 40)
    if task == "qnli":  # the pair case: second segments, and pairs cut to the length limit
        assert all((item.segments == 1).any() for item in encoded) and any(item.truncated for item in encoded)
    assert len({len(item.input_ids) for item in encoded}) > 1  # rows of different lengths: padding to cut
    explanation = make_explainer(method, model, ExplainParams(), tokenizer.mask_token_id).explain(
        collate(encoded, tokenizer.pad_token_id)
    )
    kinds = kinds_of(method)
    table = explained_table(
        examples,
        encoded,
        explanation.attribution.detach().float().numpy(),
        explanation.logits.detach().float().numpy(),
        to_host(explanation.extras),
        kinds,
    )
    assert_same_part(table, batch_rows(explanation, examples, encoded), kinds, tmp_path)


def padded_batch(rows: list[CachedExample]) -> tuple[np.ndarray, np.ndarray, Extras]:
    """The batch arrays an explainer would give for ``rows``: token axes padded with garbage to the longest."""
    width = max(len(row.input_ids) for row in rows) + 2

    def pad(arrays: list[np.ndarray], token: bool) -> np.ndarray:
        shape = (len(arrays), *arrays[0].shape[:-1], width) if token else (len(arrays), *arrays[0].shape)
        out = np.full(shape, GARBAGE.get(arrays[0].dtype, 7), dtype=arrays[0].dtype)
        for b, array in enumerate(arrays):
            out[(b, *(slice(0, n) for n in array.shape))] = array
        return out

    attribution = pad([row.attribution for row in rows], True)
    logits = pad([row.teacher_logits for row in rows], False)
    items: list[Extra] = []
    for position, first in enumerate(rows[0].extras.items):
        arrays = {
            spec.field: pad([getattr(row.extras.items[position], spec.field) for row in rows], Axis.TOKEN in spec.axes)
            for spec in first.columns()
        }
        items.append(type(first)(**arrays))
    return attribution, logits, Extras(tuple(items))


def as_batch(rows: list[CachedExample]) -> tuple[list[Example], list[EncodedExample]]:
    examples = [Example(r.example_id, r.split, r.text_a, r.text_b, r.label) for r in rows]
    encoded = [
        EncodedExample(
            example_id=r.example_id,
            input_ids=r.input_ids,
            token_type_ids=r.token_type_ids,
            special_mask=r.special_mask,
            segments=r.segments,
            offsets=r.offsets,
            label=r.label,
            truncated=False,
        )
        for r in rows
    ]
    return examples, encoded


EXTRA_CASES = [
    (kind, views)
    for kind in KINDS.values()
    for views in ((3, 0) if any(Axis.VIEW in s.axes for s in kind.columns()) else (3,))
]


@pytest.mark.parametrize("kind, views", EXTRA_CASES, ids=lambda case: getattr(case, "kind", str(case)))
def test_every_kind_of_extra_is_cut_to_each_rows_tokens(kind: type[Extra], views: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    rows = [
        dataclasses.replace(row, extras=Extras((random_extra(kind, len(row.input_ids), 2, rng, views),)))
        for row in make_rows("gradient", 0, 7)  # 5 to 8 tokens, pairs and single sentences, a null label
    ]
    attribution, logits, extras = padded_batch(rows)
    assert np.isnan(attribution).any()  # the padding is garbage that a correct cut never reads
    table = explained_table(*as_batch(rows), attribution, logits, extras, (kind.kind,))
    assert_same_part(table, rows, (kind.kind,), tmp_path)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.value)
def test_each_methods_extras_together(method: Method, tmp_path: Path) -> None:
    rows = make_rows(method.value, 0, 6)
    table = explained_table(*as_batch(rows), *padded_batch(rows), kinds_of(method))
    assert_same_part(table, rows, kinds_of(method), tmp_path)


def test_extras_other_than_the_cache_declares_are_refused() -> None:
    rows = make_rows("perturbation", 0, 2)
    with pytest.raises(ValueError, match="expected"):
        explained_table(*as_batch(rows), *padded_batch(rows), ())
    with pytest.raises(ValueError, match="columns differ"):
        table = rows_to_table(rows, kinds_of(Method.PERTURBATION))
        write_table(Path("unused.parquet"), make_meta("gradient"), 0, table, 0)


def test_not_finite_names_rows_with_bad_values_in_their_tokens_only() -> None:
    rows = make_rows("gradient", 0, 5)
    attribution, logits, extras = padded_batch(rows)  # NaN padding: not part of any row
    attribution[1, 2] = np.nan
    logits[3, 0] = np.inf
    kinds = kinds_of(Method.GRADIENT)
    table = explained_table(*as_batch(rows), attribution, logits, extras, kinds)
    assert _not_finite(table) == ["dev-1", "dev-3"]
    assert _not_finite(explained_table(*as_batch(rows), *padded_batch(rows), kinds)) == []


def test_a_part_with_a_non_finite_explanation_is_not_written(
    tiny_model_dir: Path, glue_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    explainer = explainer_class(Method.GRADIENT)
    original = explainer.explain

    def broken(self, batch):
        explanation = original(self, batch)
        if "dev-5" in batch.example_ids:
            explanation.attribution[batch.example_ids.index("dev-5"), 1] = float("nan")
        return explanation

    monkeypatch.setattr(explainer, "explain", broken)
    out = tmp_path / "cache"
    with pytest.raises(EgkdError, match=r"not finite for 1 example\(s\) of part 0 \(first 'dev-5'\)"):
        run_explain(explain_request(tiny_model_dir, glue_dir, out))
    assert not part_path(out, "gradient", "dev", 0).exists()
    assert not temp_files(part_path(out, "gradient", "dev", 0).parent)
    monkeypatch.undo()
    run_explain(explain_request(tiny_model_dir, glue_dir, out))  # the rerun computes what is missing
    parts = [read_part(part_path(out, "gradient", "dev", i)) for i in range(LIMIT // PART)]
    assert [row.example_id for part in parts for row in part.rows] == [f"dev-{i}" for i in range(LIMIT)]


@pytest.mark.parametrize(
    "rows",
    [
        [[[1.0, 2.0], [3.0, 4.0]], [], [[5.0, 6.0, 7.0]]],  # matrices of their own widths, an empty row
        [[], []],
    ],
)
def test_rank_two_columns_decode_as_each_rows_stacked_inner_lists(rows: list) -> None:
    """Views' masks and logits are rank-2 columns; the fast path for matrix rows gives what stacking gives."""
    from pipeline.cache.format import _unnested

    column = pa.array(rows, type=pa.list_(pa.list_(pa.float32())))
    decoded = _unnested(column, 2, np.dtype(np.float32))
    expected = [np.array(row, dtype=np.float32) if row else np.empty((0, 0), dtype=np.float32) for row in rows]
    assert len(decoded) == len(expected)
    for got, want in zip(decoded, expected, strict=True):
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want)


def test_a_ragged_rank_two_row_is_refused_as_before() -> None:
    """A row whose inner lists differ in length is no matrix: decoding falls back to stacking, which refuses it."""
    from pipeline.cache.format import _unnested

    column = pa.array([[[1.0], [2.0]], [[1.0, 2.0], [3.0]]], type=pa.list_(pa.list_(pa.float32())))
    with pytest.raises(ValueError):
        _unnested(column, 2, np.dtype(np.float32))

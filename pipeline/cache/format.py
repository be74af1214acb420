"""How cached rows and metadata become Parquet: the Arrow schema, row conversion, metadata JSON, digests.

Everything here is plain data: Arrow tables, JSON and sha256. Nothing is
pickled, and nothing read from a file is ever executed or used as a path.
:mod:`pipeline.cache.store` builds the on-disk layout on top of these functions.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline.cache.extras import Axis, Extras, extra_types, with_view_shapes
from pipeline.cache.schema import CachedExample, CacheMetadata
from pipeline.data import Example

if TYPE_CHECKING:
    from pipeline.encoding import EncodedExample  # torch: imported where batches are explained, not to read a cache

META_KEY = b"egkd"  # schema-metadata key of the run's CacheMetadata (JSON)
PART_KEY = b"egkd.part"  # schema-metadata key of this part's PartInfo (JSON)
# schema-metadata key of the teacher's tokenizer files when the part was made (pipeline.models.tokenizer_files_hash):
# not part of the metadata nor the digest, only what lets a rerun take the metadata's tokenizer hash as its own
TEACHER_FILES_KEY = b"egkd.teacher_files"

CORE = pa.schema(
    [
        pa.field("example_id", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("label", pa.float64()),  # null on unlabelled splits
        pa.field("text_a", pa.string(), nullable=False),
        pa.field("text_b", pa.string()),  # null for single-sentence tasks
        pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
        pa.field("token_type_ids", pa.list_(pa.int8()), nullable=False),
        pa.field("segments", pa.list_(pa.int8()), nullable=False),
        pa.field("special_mask", pa.list_(pa.bool_()), nullable=False),
        pa.field("offset_start", pa.list_(pa.int32()), nullable=False),  # character span of each token
        pa.field("offset_end", pa.list_(pa.int32()), nullable=False),  # within its own segment's text
        pa.field("attribution", pa.list_(pa.float32()), nullable=False),
        pa.field("teacher_logits", pa.list_(pa.float32()), nullable=False),
    ]
)
_CORE_ARRAYS = {
    "input_ids": np.int32,
    "token_type_ids": np.int8,
    "segments": np.int8,
    "special_mask": np.bool_,
    "attribution": np.float32,
    "teacher_logits": np.float32,
}


def schema_for(extras: Sequence[str]) -> pa.Schema:
    """The Arrow schema of a part whose rows carry these kinds of extras: the core columns, then theirs."""
    fields = list(CORE)
    for kind in extra_types(extras):
        fields += [pa.field(spec.name, spec.arrow_type, nullable=False) for spec in kind.columns()]
    return pa.schema(fields)


@dataclass(frozen=True)
class PartInfo:
    """Per-part facts, stored beside the run's metadata in each part's schema metadata."""

    index: int
    rows: int
    truncated: int  # sentences longer than max_length, cut to it
    digest: str  # sha256 over the run metadata, the part index and every column's values (part_digest)


# --- rows <-> Arrow -------------------------------------------------------------------------------


def _nested(arrays: Sequence[np.ndarray], arrow_type: pa.DataType, dtype: np.dtype) -> pa.Array:
    """Per-row arrays of one shape rank -> a list (of lists...) column of that rank, of ``dtype`` values."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays)), out=offsets[1:])
    inner_type = arrow_type.value_type
    if pa.types.is_list(inner_type):
        inner = _nested([part for a in arrays for part in a], inner_type, dtype)
    else:
        flat = np.concatenate(arrays, dtype=dtype) if arrays else np.empty(0, dtype=dtype)
        inner = pa.array(flat, type=inner_type)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def _padded(array: np.ndarray, lengths: np.ndarray | None, arrow_type: pa.DataType, dtype: np.dtype) -> pa.Array:
    """A ``(B, d1, ..., dk)`` batch array -> a list column of rank k; with ``lengths``, the last axis is the
    token axis, padded, and row ``b`` keeps its first ``lengths[b]`` entries of it (every other axis whole)."""
    rows, dims = array.shape[0], array.shape[1:]
    if lengths is not None:
        keep = np.arange(dims[-1]) < lengths[:, None]
        flat = array[np.broadcast_to(keep.reshape(rows, *[1] * (len(dims) - 1), dims[-1]), array.shape)]
    else:
        flat = array.reshape(-1)
    leaf = arrow_type
    while pa.types.is_list(leaf):
        leaf = leaf.value_type
    column: pa.Array = pa.array(np.ascontiguousarray(flat, dtype=dtype), type=leaf)
    for level in reversed(range(len(dims))):
        parents = rows * int(np.prod(dims[:level], dtype=np.int64))
        if lengths is not None and level == len(dims) - 1:
            sizes = np.repeat(lengths, parents // rows)
        else:
            sizes = np.full(parents, dims[level])
        offsets = np.zeros(parents + 1, dtype=np.int32)
        np.cumsum(sizes, out=offsets[1:])
        column = pa.ListArray.from_arrays(pa.array(offsets), column)
    return column


def _rows_of(values: np.ndarray, offsets: np.ndarray) -> list[np.ndarray]:
    """Row ``i`` is ``values[offsets[i]:offsets[i + 1]]``, a view."""
    bounds = offsets.tolist()
    return [values[start:end] for start, end in zip(bounds[:-1], bounds[1:], strict=True)]


def _numpy(array: pa.Array) -> np.ndarray:
    """The values of a primitive Arrow array as numpy, a read-only view of its buffer (booleans unpacked from their
    bits); nulls are not looked at. Not ``to_numpy``, whose first call imports pandas: 0.2 s of a process."""
    start, count = array.offset, len(array)
    dtype = np.dtype(array.type.to_pandas_dtype())
    if not count:
        return np.empty(0, dtype=dtype)
    if pa.types.is_boolean(array.type):
        bits = np.unpackbits(np.frombuffer(array.buffers()[1], dtype=np.uint8), count=start + count, bitorder="little")
        return bits[start:].view(np.bool_)
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=start + count)[start:]


def _bounds(array: pa.Array) -> np.ndarray:
    """The offsets of a list or string array without nulls (``array.offsets``, without its call's overhead): row
    ``i`` spans ``[bounds[i], bounds[i + 1])`` of its values."""
    if not len(array):
        return np.zeros(1, dtype=np.int32)
    return np.frombuffer(array.buffers()[1], dtype=np.int32, count=array.offset + len(array) + 1)[array.offset :]


def _owned(array: pa.Array, dtype: np.dtype) -> np.ndarray:
    """The values of a primitive Arrow array as a writable numpy array of ``dtype`` that the rows own (a view of the
    Arrow buffer is read-only; booleans are unpacked into a new array already)."""
    values = _numpy(array)
    return values.astype(dtype, copy=not pa.types.is_boolean(array.type))


def _unnested(array: pa.ListArray, rank: int, dtype: np.dtype) -> list[np.ndarray]:
    """A list column of ``rank`` -> per-row arrays of that rank (views of one array per column)."""
    offsets = _bounds(array)
    if rank == 1:
        return _rows_of(_owned(array.values, dtype), offsets)
    if rank == 2 and (rows := _matrices(array, offsets, dtype)) is not None:
        return rows
    inner = _unnested(array.values, rank - 1, dtype)
    return [
        np.stack(inner[offsets[i] : offsets[i + 1]])
        if offsets[i + 1] > offsets[i]
        else np.empty((0,) * rank, dtype=dtype)
        for i in range(len(array))
    ]


def _matrices(array: pa.ListArray, offsets: np.ndarray, dtype: np.dtype) -> list[np.ndarray] | None:
    """A rank-2 list column whose rows are matrices (every inner list of a row equally long, as views' masks
    and logits are) -> per-row ``(n, m)`` views of one array; None when some row is ragged.

    The same arrays as stacking each row's inner lists, without a copy per row: 5-8x faster on the views.
    """
    inner = _bounds(array.values)
    widths, counts = np.diff(inner), np.diff(offsets)
    width = np.zeros(len(counts), dtype=np.int64)
    width[counts > 0] = widths[offsets[:-1][counts > 0]]
    if not np.array_equal(widths, np.repeat(width, counts)):
        return None
    values = _owned(array.values.values, dtype)
    starts = inner[offsets[:-1]]
    return [
        values[start : start + n * m].reshape(n, m) if n else np.empty((0, 0), dtype=dtype)
        for start, n, m in zip(starts.tolist(), counts.tolist(), width.tolist(), strict=True)
    ]


def rows_to_table(rows: Sequence[CachedExample], extras: Sequence[str]) -> pa.Table:
    """One Arrow table in :func:`schema_for` ``(extras)`` (without metadata) from cached rows."""
    schema = schema_for(extras)
    for row in rows:
        if row.extras.kinds != tuple(extras):
            raise ValueError(f"row {row.example_id!r} carries extras {row.extras.kinds}, expected {tuple(extras)}")
    columns = _example_columns(rows, [np.asarray(r.offsets).reshape(-1, 2) for r in rows])
    for name, dtype in _CORE_ARRAYS.items():
        columns[name] = _nested([getattr(r, name) for r in rows], CORE.field(name).type, np.dtype(dtype))
    for position, kind in enumerate(extra_types(extras)):
        for spec in kind.columns():
            columns[spec.name] = _nested(
                [getattr(r.extras.items[position], spec.field) for r in rows], spec.arrow_type, spec.dtype
            )
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _example_columns(items: Sequence[Example | CachedExample], spans: Sequence[np.ndarray]) -> dict[str, pa.Array]:
    """The columns every row has from its example: id, split, label, texts, and its ``(n, 2)`` character spans."""
    columns: dict[str, pa.Array] = {
        "example_id": pa.array([e.example_id for e in items], pa.string()),
        "split": pa.array([e.split for e in items], pa.string()),
        "label": pa.array([None if e.label is None else float(e.label) for e in items], pa.float64()),
        "text_a": pa.array([e.text_a for e in items], pa.string()),
        "text_b": pa.array([e.text_b for e in items], pa.string()),
    }
    for position, name in enumerate(("offset_start", "offset_end")):
        columns[name] = _nested([span[:, position] for span in spans], CORE.field(name).type, np.dtype(np.int32))
    return columns


def explained_table(
    examples: Sequence[Example],
    encoded: Sequence[EncodedExample],
    attribution: np.ndarray,
    logits: np.ndarray,
    extras: Extras,
    kinds: Sequence[str],
) -> pa.Table:
    """One explained batch as a table in :func:`schema_for` ``(kinds)``, its rows in batch order.

    ``attribution`` is ``(B, T)``, ``logits`` ``(B, C)`` and every extra ``(B, ...)``, on the host, token axes
    padded to ``T``; row ``b`` keeps the first ``len(encoded[b].input_ids)`` entries of each token axis. The
    table is the one :func:`rows_to_table` makes of the batch's rows, each array cut to its example's tokens
    (same values, same digest), but gathered a column at a time from the padded batch arrays, without a
    :class:`CachedExample` and a copy of each array per row: that was most of stage one's host time.
    """
    if extras.kinds != tuple(kinds):
        raise ValueError(f"the batch carries extras {extras.kinds}, expected {tuple(kinds)}")
    lengths = np.fromiter((len(item.input_ids) for item in encoded), dtype=np.int64, count=len(encoded))
    columns = _example_columns(examples, [item.offsets for item in encoded])
    columns["attribution"] = _padded(attribution, lengths, CORE.field("attribution").type, np.dtype(np.float32))
    columns["teacher_logits"] = _padded(logits, None, CORE.field("teacher_logits").type, np.dtype(np.float32))
    for name in ("input_ids", "token_type_ids", "segments", "special_mask"):
        arrays = [getattr(item, name) for item in encoded]
        columns[name] = _nested(arrays, CORE.field(name).type, np.dtype(_CORE_ARRAYS[name]))
    for item in extras.items:
        for spec, array in item.arrays():
            tokens = lengths if Axis.TOKEN in spec.axes else None
            columns[spec.name] = _padded(np.asarray(array), tokens, spec.arrow_type, spec.dtype)
    schema = schema_for(kinds)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def table_to_rows(table: pa.Table, meta: CacheMetadata) -> list[CachedExample]:
    """Cached rows from a table in the schema of ``meta.extras``; classification labels come back as ints.

    Each row's arrays are views of one array per column (no copy per row).
    """

    def column(name: str) -> pa.Array:
        array = table.column(name).combine_chunks()
        if array.null_count:
            raise ValueError(f"column {name} has {array.null_count} null rows")
        return array

    def arrays(name: str, rank: int, dtype: type | np.dtype) -> list[np.ndarray]:
        return _unnested(column(name), rank, np.dtype(dtype))

    text = {name: table.column(name).to_pylist() for name in ("example_id", "split", "text_a", "text_b")}
    labels = table.column("label").to_pylist()
    if meta.num_labels > 1:
        labels = [None if label is None else int(label) for label in labels]
    core = {name: arrays(name, 1, dtype) for name, dtype in _CORE_ARRAYS.items()}
    starts, ends = column("offset_start"), column("offset_end")
    if not np.array_equal(_bounds(starts), _bounds(ends)):
        raise ValueError("columns offset_start and offset_end disagree on the number of tokens")
    spans = np.stack([_numpy(starts.values).astype(np.int32), _numpy(ends.values).astype(np.int32)], axis=1)
    offsets = _rows_of(spans, _bounds(starts))
    kinds = extra_types(meta.extras)
    if kinds:
        lengths = [len(ids) for ids in core["input_ids"]]
        per_kind = []
        for kind in kinds:
            fields = [
                with_view_shapes(spec, arrays(spec.name, len(spec.axes), spec.dtype), lengths, meta.num_labels)
                for spec in kind.columns()
            ]
            per_kind.append(list(map(kind, *fields)))
        extras = list(map(Extras, zip(*per_kind, strict=True)))
    else:
        extras = [Extras()] * table.num_rows  # immutable: one shared empty value
    return [
        CachedExample(
            example_id=example_id,
            split=split,
            label=label,
            text_a=text_a,
            text_b=text_b,
            input_ids=input_ids,
            token_type_ids=token_type_ids,
            segments=segments,
            special_mask=special_mask,
            offsets=offset,
            attribution=attribution,
            teacher_logits=teacher_logits,
            extras=extra,
        )
        for (
            example_id,
            split,
            label,
            text_a,
            text_b,
            input_ids,
            token_type_ids,
            segments,
            special_mask,
            offset,
            attribution,
            teacher_logits,
            extra,
        ) in zip(
            text["example_id"],
            text["split"],
            labels,
            text["text_a"],
            text["text_b"],
            core["input_ids"],
            core["token_type_ids"],
            core["segments"],
            core["special_mask"],
            offsets,
            core["attribution"],
            core["teacher_logits"],
            extras,
            strict=True,
        )
    ]


# --- metadata JSON ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)  # the parts of a run share one: each part's digest starts with it
def metadata_json(meta: CacheMetadata) -> bytes:
    """The metadata as stored (and digested); a field added later with a default is left out while it holds that
    default, so parts written before the field existed keep their digests."""
    data = dataclasses.asdict(meta)
    for f in dataclasses.fields(CacheMetadata):
        if f.default is not dataclasses.MISSING and data[f.name] == f.default:
            del data[f.name]
    return json.dumps(data, sort_keys=True).encode("utf-8")


def _check_type(name: str, value: Any, hint: object) -> Any:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is tuple and isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
    raise ValueError(f"metadata field {name!r} has an unexpected value {value!r}")


@functools.cache
def _hints(record: type) -> dict[str, Any]:
    """The field types of a record (evaluated once: a cache's parts are many, and each footer holds two records)."""
    return typing.get_type_hints(record)


def parse_metadata(raw: bytes) -> CacheMetadata:
    """Decode and type-check a CacheMetadata JSON; ``ValueError`` on anything unexpected."""
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("metadata is not a JSON object")
    hints = _hints(CacheMetadata)
    optional = {f.name for f in dataclasses.fields(CacheMetadata) if f.default is not dataclasses.MISSING}
    differ = set(data) ^ set(hints)
    if differ - optional or set(data) - set(hints):  # a field with a default may be absent (an older writer)
        raise ValueError(f"metadata fields differ from this egkd's: {sorted(differ)}")
    return CacheMetadata(**{name: _check_type(name, data[name], hints[name]) for name in data})


def part_info_json(info: PartInfo) -> bytes:
    return json.dumps(dataclasses.asdict(info), sort_keys=True).encode("utf-8")


def parse_part_info(raw: bytes) -> PartInfo:
    data = json.loads(raw.decode("utf-8"))
    hints = _hints(PartInfo)
    if not isinstance(data, dict) or set(data) != set(hints):
        raise ValueError("part info fields are not the expected ones")
    return PartInfo(**{name: _check_type(name, data[name], hint) for name, hint in hints.items()})


# --- digests --------------------------------------------------------------------------------------


def part_digest(meta: CacheMetadata, index: int, table: pa.Table) -> str:
    """sha256 over the metadata, the part index and every value of every column, as a reader decodes them.

    Column by column in schema order: its name, then (:func:`_feed`) its nulls, the lengths of its lists
    at each nesting level, and its flat values (little-endian numbers, one byte per boolean, UTF-8
    text). Those determine every row's decoded values, and they do not depend on how the table was
    built, chunked or encoded in Parquet, so a part's digest is computed from its Arrow buffers in one
    pass, without decoding rows (cache schema version 4).
    """
    digest = hashlib.sha256(metadata_json(meta))
    digest.update(b"part%d;rows%d;" % (index, table.num_rows))
    for name in table.column_names:
        digest.update(b"C%d;%s" % (len(name), name.encode("utf-8")))
        _feed(digest, table.column(name).combine_chunks())
    return digest.hexdigest()


def _feed(digest: Any, array: pa.Array) -> None:
    digest.update(b"N%d;" % array.null_count)
    if array.null_count:
        digest.update(np.packbits(_numpy(array.is_valid())).tobytes())
        array = array.drop_null()
    if pa.types.is_list(array.type):
        bounds = _bounds(array)
        digest.update(b"L%d;" % len(array))
        digest.update(np.diff(bounds).astype("<i8").tobytes())  # each list's length
        _feed(digest, array.values.slice(int(bounds[0]), int(bounds[-1] - bounds[0])))  # every value of them
    elif pa.types.is_string(array.type):
        bounds = _bounds(array)
        digest.update(b"S%d;" % len(array))
        digest.update(np.diff(bounds).astype("<i8").tobytes())
        if len(array):
            digest.update(memoryview(array.buffers()[2])[int(bounds[0]) : int(bounds[-1])])
    else:
        values = _numpy(array)
        values = np.ascontiguousarray(values, dtype=values.dtype.newbyteorder("<"))
        digest.update(b"P%s%d;" % (values.dtype.str.encode(), len(values)))
        digest.update(values.view(np.uint8) if values.size else b"")

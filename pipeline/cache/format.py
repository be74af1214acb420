"""How cached rows and metadata become Parquet: the Arrow schema, row conversion, metadata JSON, digests.

Everything here is plain data: Arrow tables, JSON and sha256. Nothing is
pickled, and nothing read from a file is ever executed or used as a path.
:mod:`pipeline.cache.store` builds the on-disk layout on top of these functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.cache.extras import Extras, extra_types, with_view_shapes
from pipeline.cache.schema import CachedExample, CacheMetadata

META_KEY = b"egkd"  # schema-metadata key of the run's CacheMetadata (JSON)
PART_KEY = b"egkd.part"  # schema-metadata key of this part's PartInfo (JSON)

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
    digest: str  # sha256 over the run metadata, the part index and the decoded rows


# --- rows <-> Arrow -------------------------------------------------------------------------------


def _nested(arrays: Sequence[np.ndarray], arrow_type: pa.DataType) -> pa.Array:
    """Per-row arrays of one shape rank -> a list (of lists...) column of that rank."""
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    inner_type = arrow_type.value_type
    if pa.types.is_list(inner_type):
        inner = _nested([part for a in arrays for part in a], inner_type)
    else:
        dtype = inner_type.to_pandas_dtype()
        flat = [np.asarray(a, dtype=dtype).ravel() for a in arrays]
        inner = pa.array(np.concatenate(flat) if flat else np.empty(0, dtype=dtype), type=inner_type)
    return pa.ListArray.from_arrays(pa.array(offsets), inner)


def _unnested(array: pa.ListArray, rank: int, dtype: np.dtype) -> list[np.ndarray]:
    """A list column of ``rank`` -> per-row arrays of that rank."""
    offsets = np.asarray(array.offsets)
    if rank == 1:
        values = array.values.to_numpy(zero_copy_only=False).astype(dtype, copy=True)
        return [values[offsets[i] : offsets[i + 1]] for i in range(len(array))]
    inner = _unnested(array.values, rank - 1, dtype)
    return [
        np.stack(inner[offsets[i] : offsets[i + 1]])
        if offsets[i + 1] > offsets[i]
        else np.empty((0,) * rank, dtype=dtype)
        for i in range(len(array))
    ]


def rows_to_table(rows: Sequence[CachedExample], extras: Sequence[str]) -> pa.Table:
    """One Arrow table in :func:`schema_for` ``(extras)`` (without metadata) from cached rows."""
    schema = schema_for(extras)
    for row in rows:
        if row.extras.kinds != tuple(extras):
            raise ValueError(f"row {row.example_id!r} carries extras {row.extras.kinds}, expected {tuple(extras)}")
    columns: dict[str, pa.Array] = {
        "example_id": pa.array([r.example_id for r in rows], pa.string()),
        "split": pa.array([r.split for r in rows], pa.string()),
        "label": pa.array([None if r.label is None else float(r.label) for r in rows], pa.float64()),
        "text_a": pa.array([r.text_a for r in rows], pa.string()),
        "text_b": pa.array([r.text_b for r in rows], pa.string()),
        "offset_start": _nested([np.asarray(r.offsets).reshape(-1, 2)[:, 0] for r in rows], pa.list_(pa.int32())),
        "offset_end": _nested([np.asarray(r.offsets).reshape(-1, 2)[:, 1] for r in rows], pa.list_(pa.int32())),
    }
    for name in _CORE_ARRAYS:
        columns[name] = _nested([getattr(r, name) for r in rows], CORE.field(name).type)
    for position, kind in enumerate(extra_types(extras)):
        for spec in kind.columns():
            columns[spec.name] = _nested([getattr(r.extras.items[position], spec.field) for r in rows], spec.arrow_type)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def table_to_rows(table: pa.Table, meta: CacheMetadata) -> list[CachedExample]:
    """Cached rows from a table in the schema of ``meta.extras``; classification labels come back as ints."""

    def arrays(name: str, rank: int, dtype: type | np.dtype) -> list[np.ndarray]:
        column = table.column(name).combine_chunks()
        if column.null_count:
            raise ValueError(f"column {name} has {column.null_count} null rows")
        return _unnested(column, rank, np.dtype(dtype))

    text = {name: table.column(name).to_pylist() for name in ("example_id", "split", "text_a", "text_b")}
    labels = table.column("label").to_pylist()
    core = {name: arrays(name, 1, dtype) for name, dtype in _CORE_ARRAYS.items()}
    starts, ends = arrays("offset_start", 1, np.int32), arrays("offset_end", 1, np.int32)
    kinds = extra_types(meta.extras)
    lengths = [len(ids) for ids in core["input_ids"]]
    extra_arrays = [
        {
            spec.field: with_view_shapes(spec, arrays(spec.name, len(spec.axes), spec.dtype), lengths, meta.num_labels)
            for spec in kind.columns()
        }
        for kind in kinds
    ]
    rows = []
    for i in range(table.num_rows):
        label = labels[i]
        if label is not None and meta.num_labels > 1:
            label = int(label)
        extras = Extras(
            tuple(
                kind(**{name: values[i] for name, values in fields.items()})
                for kind, fields in zip(kinds, extra_arrays, strict=True)
            )
        )
        rows.append(
            CachedExample(
                example_id=text["example_id"][i],
                split=text["split"][i],
                label=label,
                text_a=text["text_a"][i],
                text_b=text["text_b"][i],
                offsets=np.stack([starts[i], ends[i]], axis=1),
                extras=extras,
                **{name: values[i] for name, values in core.items()},
            )
        )
    return rows


# --- metadata JSON ----------------------------------------------------------------------------------


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


def parse_metadata(raw: bytes) -> CacheMetadata:
    """Decode and type-check a CacheMetadata JSON; ``ValueError`` on anything unexpected."""
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("metadata is not a JSON object")
    hints = typing.get_type_hints(CacheMetadata)
    optional = {f.name for f in dataclasses.fields(CacheMetadata) if f.default is not dataclasses.MISSING}
    differ = set(data) ^ set(hints)
    if differ - optional or set(data) - set(hints):  # a field with a default may be absent (an older writer)
        raise ValueError(f"metadata fields differ from this egkd's: {sorted(differ)}")
    return CacheMetadata(**{name: _check_type(name, data[name], hints[name]) for name in data})


def part_info_json(info: PartInfo) -> bytes:
    return json.dumps(dataclasses.asdict(info), sort_keys=True).encode("utf-8")


def parse_part_info(raw: bytes) -> PartInfo:
    data = json.loads(raw.decode("utf-8"))
    hints = typing.get_type_hints(PartInfo)
    if not isinstance(data, dict) or set(data) != set(hints):
        raise ValueError("part info fields are not the expected ones")
    return PartInfo(**{name: _check_type(name, data[name], hint) for name, hint in hints.items()})


# --- digests --------------------------------------------------------------------------------------


def _feed(digest: Any, value: Any) -> None:
    if value is None:
        digest.update(b"N;")
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"A{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    elif isinstance(value, str):
        data = value.encode("utf-8")
        digest.update(b"S%d;" % len(data))
        digest.update(data)
    else:
        digest.update(f"F{float(value)!r};".encode())


def part_digest(meta: CacheMetadata, index: int, rows: Sequence[CachedExample]) -> str:
    """sha256 over the metadata, the part index and every field of every row (decoded values)."""
    digest = hashlib.sha256(metadata_json(meta))
    digest.update(b"part%d;" % index)
    for row in rows:
        for field in dataclasses.fields(CachedExample):
            if field.name == "extras":
                for item in row.extras.items:
                    for _, array in item.arrays():
                        _feed(digest, array)
            else:
                _feed(digest, getattr(row, field.name))
    return digest.hexdigest()

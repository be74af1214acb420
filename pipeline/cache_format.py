"""How cached rows and metadata become Parquet: the Arrow schema, row conversion, metadata JSON, digests.

Everything here is plain data: Arrow tables, JSON and sha256. Nothing is
pickled, and nothing read from a file is ever executed or used as a path.
:mod:`pipeline.cache` builds the on-disk layout on top of these functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.cache_schema import CachedExample, CacheMetadata

META_KEY = b"egkd"  # schema-metadata key of the run's CacheMetadata (JSON)
PART_KEY = b"egkd.part"  # schema-metadata key of this part's PartInfo (JSON)

# Method-specific columns: null in every row for the other methods.
METHOD_EXTRAS: dict[str, tuple[str, ...]] = {
    "perturbation": ("view_masks", "view_logits"),
    "feature_selection": ("selection_mask", "selection_logits"),
}
EXTRA_COLUMNS = ("view_masks", "view_logits", "selection_mask", "selection_logits")

SCHEMA = pa.schema([
    pa.field("example_id", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("label", pa.float64()),  # null on unlabelled splits
    pa.field("text_a", pa.string(), nullable=False),
    pa.field("text_b", pa.string()),  # null for single-sentence tasks
    pa.field("input_ids", pa.list_(pa.int32()), nullable=False),
    pa.field("token_type_ids", pa.list_(pa.int8()), nullable=False),
    pa.field("special_mask", pa.list_(pa.bool_()), nullable=False),
    pa.field("offset_start", pa.list_(pa.int32()), nullable=False),  # character span of each token
    pa.field("offset_end", pa.list_(pa.int32()), nullable=False),  # within its own segment's text
    pa.field("attribution", pa.list_(pa.float32()), nullable=False),
    pa.field("teacher_logits", pa.list_(pa.float32()), nullable=False),
    pa.field("view_masks", pa.list_(pa.list_(pa.bool_()))),
    pa.field("view_logits", pa.list_(pa.list_(pa.float32()))),
    pa.field("selection_mask", pa.list_(pa.bool_())),
    pa.field("selection_logits", pa.list_(pa.float32())),
])


@dataclass(frozen=True)
class PartInfo:
    """Per-part facts, stored beside the run's metadata in each part's schema metadata."""

    index: int
    rows: int
    truncated: int  # sentences longer than max_length, cut to it
    digest: str  # sha256 over the run metadata, the part index and the decoded rows


# --- rows <-> Arrow -------------------------------------------------------------------------------


def _flat_list(arrays: Sequence[np.ndarray], value_type: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    dtype = value_type.to_pandas_dtype()
    values = np.concatenate([np.asarray(a, dtype=dtype).ravel() for a in arrays]) if arrays else \
        np.empty(0, dtype=dtype)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=value_type))


def _list_column(arrays: Sequence[np.ndarray | None], field: pa.Field) -> pa.Array:
    present = [a is not None for a in arrays]
    if not any(present):
        return pa.nulls(len(arrays), field.type)
    if not all(present):
        raise ValueError(f"column {field.name}: some rows have it and some do not")
    inner = field.type.value_type
    if pa.types.is_list(inner):  # (P, X) arrays: a list of P lists
        rows = [np.asarray(a) for a in arrays]
        flat = _flat_list([r for a in rows for r in a], inner.value_type)
        offsets = np.zeros(len(rows) + 1, dtype=np.int32)
        np.cumsum([a.shape[0] for a in rows], out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), flat)
    return _flat_list(arrays, inner)


def rows_to_table(rows: Sequence[CachedExample]) -> pa.Table:
    """One Arrow table in :data:`SCHEMA` (without metadata) from cached rows."""
    columns: dict[str, pa.Array] = {
        "example_id": pa.array([r.example_id for r in rows], pa.string()),
        "split": pa.array([r.split for r in rows], pa.string()),
        "label": pa.array([None if r.label is None else float(r.label) for r in rows], pa.float64()),
        "text_a": pa.array([r.text_a for r in rows], pa.string()),
        "text_b": pa.array([r.text_b for r in rows], pa.string()),
        "offset_start": _flat_list([np.asarray(r.offsets).reshape(-1, 2)[:, 0] for r in rows], pa.int32()),
        "offset_end": _flat_list([np.asarray(r.offsets).reshape(-1, 2)[:, 1] for r in rows], pa.int32()),
    }
    for name in ("input_ids", "token_type_ids", "special_mask", "attribution", "teacher_logits",
                 *EXTRA_COLUMNS):
        columns[name] = _list_column([getattr(r, name) for r in rows], SCHEMA.field(name))
    return pa.Table.from_arrays([columns[f.name] for f in SCHEMA], schema=SCHEMA)


def _split_flat(array: pa.ListArray, dtype: np.dtype) -> list[np.ndarray]:
    offsets = np.asarray(array.offsets)
    values = array.values.to_numpy(zero_copy_only=False).astype(dtype, copy=True)
    return [values[offsets[i]:offsets[i + 1]] for i in range(len(array))]


def _split_column(column: pa.ChunkedArray, dtype: np.dtype) -> list[np.ndarray | None]:
    array = column.combine_chunks()
    if array.null_count == len(array):
        return [None] * len(array)
    if array.null_count:
        raise ValueError(f"column has {array.null_count} null rows out of {len(array)}")
    if pa.types.is_list(array.type.value_type):
        inner = _split_flat(array.values, dtype)
        offsets = np.asarray(array.offsets)
        return [np.stack(inner[offsets[i]:offsets[i + 1]]) if offsets[i + 1] > offsets[i]
                else np.empty((0, 0), dtype=dtype) for i in range(len(array))]
    return _split_flat(array, dtype)


def table_to_rows(table: pa.Table, num_labels: int) -> list[CachedExample]:
    """Cached rows from a table in :data:`SCHEMA`; classification labels come back as ints."""
    text = {name: table.column(name).to_pylist() for name in ("example_id", "split", "text_a", "text_b")}
    labels = table.column("label").to_pylist()
    dtypes = {"input_ids": np.int32, "token_type_ids": np.int8, "special_mask": np.bool_,
              "offset_start": np.int32, "offset_end": np.int32, "attribution": np.float32,
              "teacher_logits": np.float32, "view_masks": np.bool_, "view_logits": np.float32,
              "selection_mask": np.bool_, "selection_logits": np.float32}
    lists = {name: _split_column(table.column(name), np.dtype(dtype)) for name, dtype in dtypes.items()}
    rows = []
    for i in range(table.num_rows):
        label = labels[i]
        if label is not None and num_labels > 1:
            label = int(label)
        rows.append(CachedExample(
            example_id=text["example_id"][i], split=text["split"][i], label=label,
            text_a=text["text_a"][i], text_b=text["text_b"][i],
            input_ids=lists["input_ids"][i], token_type_ids=lists["token_type_ids"][i],
            special_mask=lists["special_mask"][i],
            offsets=np.stack([lists["offset_start"][i], lists["offset_end"][i]], axis=1),
            attribution=lists["attribution"][i], teacher_logits=lists["teacher_logits"][i],
            **{name: lists[name][i] for name in EXTRA_COLUMNS},
        ))
    return rows


# --- metadata JSON ----------------------------------------------------------------------------------


def metadata_json(meta: CacheMetadata) -> bytes:
    return json.dumps(dataclasses.asdict(meta), sort_keys=True).encode("utf-8")


def _check_type(name: str, value: object, hint: object) -> object:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    options = typing.get_args(hint) if union else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is str and isinstance(value, str):
            return value
        if typing.get_origin(option) is tuple and isinstance(value, list) \
                and all(isinstance(v, str) for v in value):
            return tuple(value)
    raise ValueError(f"metadata field {name!r} has an unexpected value {value!r}")


def parse_metadata(raw: bytes) -> CacheMetadata:
    """Decode and type-check a CacheMetadata JSON; ``ValueError`` on anything unexpected."""
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("metadata is not a JSON object")
    hints = typing.get_type_hints(CacheMetadata)
    if set(data) != set(hints):
        raise ValueError(f"metadata fields differ from this egkd's: {sorted(set(data) ^ set(hints))}")
    return CacheMetadata(**{name: _check_type(name, data[name], hint) for name, hint in hints.items()})


def part_info_json(info: PartInfo) -> bytes:
    return json.dumps(dataclasses.asdict(info), sort_keys=True).encode("utf-8")


def parse_part_info(raw: bytes) -> PartInfo:
    data = json.loads(raw.decode("utf-8"))
    hints = typing.get_type_hints(PartInfo)
    if not isinstance(data, dict) or set(data) != set(hints):
        raise ValueError("part info fields are not the expected ones")
    return PartInfo(**{name: _check_type(name, data[name], hint) for name, hint in hints.items()})


# --- digests --------------------------------------------------------------------------------------


def _feed(digest: hashlib._Hash, value: object) -> None:
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
            _feed(digest, getattr(row, field.name))
    return digest.hexdigest()

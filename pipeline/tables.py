"""A user's data file (CSV, TSV, JSON Lines, JSON, Parquet) or a hub dataset split, read as a typed table.

:func:`read_table` reads every row of one file and keeps where each row came from (the line of a CSV, TSV or JSON
Lines file; the row of a JSON document or a Parquet file), so that :mod:`pipeline.own_data` names the file and the
line in every message about a row. Nothing here knows which column is the text or the label.

The formats are read by the standard library (``csv``, ``json``) and pyarrow, not by the ``datasets`` builders:
those write an Arrow copy of every file to the datasets cache and lose the line numbers. CSV and TSV fields are
quoted the way pandas (and so the ``datasets`` csv builder) writes and reads them: a field that starts with ``"``
is quoted. (A GLUE TSV file, whose quotes are plain characters, is read by :mod:`pipeline.data`.) A hub dataset
(:func:`read_hub`) is read with ``datasets.load_dataset``, which finds it in the local datasets cache when offline.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pipeline.errors import EgkdError


class DataFormat(str, Enum):
    CSV = "csv"
    TSV = "tsv"
    JSONL = "jsonl"
    JSON = "json"
    PARQUET = "parquet"


EXTENSIONS: dict[str, DataFormat] = {
    ".csv": DataFormat.CSV,
    ".tsv": DataFormat.TSV,
    ".jsonl": DataFormat.JSONL,
    ".ndjson": DataFormat.JSONL,
    ".json": DataFormat.JSON,
    ".parquet": DataFormat.PARQUET,
}


@dataclass(frozen=True)
class Row:
    number: int  # the line of the file where the row starts (CSV, TSV, JSON Lines), else its row number from 1
    values: tuple[object, ...]  # in the table's column order; None where a JSON record lacks the key


@dataclass(frozen=True)
class ClassNames:
    """A hub dataset's ``ClassLabel`` column: its values are read as these names, in this order."""

    column: str
    names: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Table:
    source: str  # the file's path, or hub:<name>[/<config>]/<split>
    columns: tuple[str, ...]
    rows: tuple[Row, ...]
    fingerprint: str  # sha256 of the file's bytes, or the hub dataset's fingerprint
    by_line: bool  # rows are numbered by the file's lines (else by their position, from 1)
    class_names: tuple[ClassNames, ...] = ()

    def where(self, row: Row) -> str:
        """Where ``row`` is, for a message: ``path:line`` or ``path: row n``."""
        return f"{self.source}:{row.number}" if self.by_line else f"{self.source}: row {row.number}"

    def column_values(self, column: str) -> list[object]:
        index = self.columns.index(column)
        return [row.values[index] for row in self.rows]


def format_of(path: Path, override: DataFormat | None = None) -> DataFormat:
    """The format ``override`` names, else the one of ``path``'s extension."""
    if override is not None:
        return override
    fmt = EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        known = ", ".join(EXTENSIONS)
        raise EgkdError(f"{path}: unknown data format {path.suffix!r}; known extensions: {known} (or set data.format)")
    return fmt


def read_table(path: Path, fmt: DataFormat | None = None, encoding: str = "utf-8") -> Table:
    """Every row of the data file ``path`` (its format from the extension unless ``fmt``); text in ``encoding``."""
    if not path.is_file():
        raise EgkdError(f"data file not found: {path}")
    fmt = format_of(path, fmt)
    raw = path.read_bytes()
    fingerprint = hashlib.sha256(raw).hexdigest()
    if fmt is DataFormat.PARQUET:
        return _read_parquet(path, fingerprint)
    text = _decode(path, raw, encoding)
    if fmt in (DataFormat.CSV, DataFormat.TSV):
        columns, rows = _read_delimited(path, text, "\t" if fmt is DataFormat.TSV else ",")
        return Table(source=str(path), columns=columns, rows=rows, fingerprint=fingerprint, by_line=True)
    if fmt is DataFormat.JSON:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            if err.msg != "Extra data":  # anything but JSON Lines in a .json file
                raise EgkdError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        else:
            columns, rows = _records(path, _json_records(path, document))
            return Table(source=str(path), columns=columns, rows=rows, fingerprint=fingerprint, by_line=False)
    columns, rows = _read_json_lines(path, text)
    return Table(source=str(path), columns=columns, rows=rows, fingerprint=fingerprint, by_line=True)


def _decode(path: Path, raw: bytes, encoding: str) -> str:
    try:
        codec = codecs.lookup(encoding).name
    except LookupError:
        raise EgkdError(f"unknown encoding {encoding!r} (data.encoding)") from None
    try:
        return raw.decode("utf-8-sig" if codec == "utf-8" else encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise EgkdError(
            f"{path}:{line}: bytes that are not {encoding} ({err.reason}); "
            f"set data.encoding to the file's encoding (e.g. latin-1)"
        ) from None


def _read_delimited(path: Path, text: str, delimiter: str) -> tuple[tuple[str, ...], tuple[Row, ...]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns: tuple[str, ...] | None = None
    rows: list[Row] = []
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not any(f.strip() for f in fields):
                continue
            if columns is None:
                columns = tuple(f.strip() for f in fields)
                _check_header(path, columns)
            elif len(fields) != len(columns):
                raise EgkdError(f"{path}:{line}: {len(fields)} fields, expected {len(columns)} ({list(columns)})")
            else:
                rows.append(Row(line, tuple(fields)))
    except csv.Error as err:
        raise EgkdError(f"{path}:{reader.line_num}: {err}") from None
    if columns is None:
        raise EgkdError(f"{path}: empty file, expected a header line")
    return columns, tuple(rows)


def _check_header(path: Path, columns: tuple[str, ...]) -> None:
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated or "" in columns:
        what = f"repeated column name(s) {repeated}" if repeated else "an empty column name"
        raise EgkdError(f"{path}:1: the header line has {what}: {list(columns)}")


def _read_json_lines(path: Path, text: str) -> tuple[tuple[str, ...], tuple[Row, ...]]:
    records: list[tuple[int, object]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            raise EgkdError(f"{path}:{number}: not valid JSON ({err.msg})") from None
    return _records(path, records, by_line=True)


def _json_records(path: Path, document: object) -> list[tuple[int, object]]:
    """The records of a JSON document: a list of objects, or an object with one list of them (``{"data": [...]}``)."""
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(document) != 1 or len(lists) != 1:
            raise EgkdError(f"{path}: expected a list of records, or one key holding them; found keys {list(document)}")
        document = lists[0]
    if not isinstance(document, list):
        raise EgkdError(f"{path}: expected a list of records, found a {type(document).__name__}")
    return list(enumerate(document, start=1))


def _records(
    path: Path, records: list[tuple[int, object]], by_line: bool = False
) -> tuple[tuple[str, ...], tuple[Row, ...]]:
    columns: dict[str, None] = {}  # the keys in order of first appearance
    objects: list[tuple[int, dict[str, object]]] = []
    for number, record in records:
        if not isinstance(record, dict):
            where = f"{path}:{number}" if by_line else f"{path}: row {number}"
            raise EgkdError(f"{where}: expected a JSON object (a record), found {type(record).__name__}")
        columns.update(dict.fromkeys(record))
        objects.append((number, record))
    names = tuple(columns)
    return names, tuple(Row(number, tuple(record.get(c) for c in names)) for number, record in objects)


def _read_parquet(path: Path, fingerprint: str) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise EgkdError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from None
    columns = tuple(table.column_names)
    data = [table.column(c).to_pylist() for c in columns]
    rows = tuple(Row(n + 1, tuple(column[n] for column in data)) for n in range(table.num_rows))
    return Table(source=str(path), columns=columns, rows=rows, fingerprint=fingerprint, by_line=False)


def read_hub(name: str, config: str | None, split: str) -> Table:
    """One split of the hub dataset ``name`` through ``datasets.load_dataset`` (from the local cache when offline)."""
    label = f"{name}/{config}" if config else name
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a dependency
        raise EgkdError(f"a hub dataset needs the `datasets` package: {err}") from None
    try:
        data = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # offline, not cached, no such dataset or split: one line for the user
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if "split" in first.lower() and isinstance(err, (ValueError, KeyError)):
            raise EgkdError(f"hub dataset {label}: no split {split!r} ({first})") from None
        raise EgkdError(
            f"could not load the hub dataset {label!r} (split {split!r}): it is not in the local datasets cache "
            f"and the hub cannot be reached, or no such dataset exists ({type(err).__name__}: {first})"
        ) from None
    if not isinstance(data, datasets.Dataset):  # pragma: no cover - a split name always gives one Dataset
        raise EgkdError(f"hub dataset {label}: split {split!r} is not one table")
    columns = tuple(data.column_names)
    body = data.to_dict()
    rows = tuple(Row(n + 1, tuple(body[c][n] for c in columns)) for n in range(data.num_rows))
    names = tuple(
        ClassNames(column, tuple(feature.names))
        for column, feature in data.features.items()
        if isinstance(feature, datasets.ClassLabel)
    )
    return Table(
        source=f"hub:{label}/{split}",
        columns=columns,
        rows=rows,
        fingerprint=data._fingerprint,
        by_line=False,
        class_names=names,
    )

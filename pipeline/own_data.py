"""A user's own data set: split files in a folder, one file, or a hub dataset, as egkd examples and a task.

Beside the GLUE registry (:mod:`pipeline.tasks`, :func:`pipeline.data.load_dataset`), a task can be described by its
data alone: a :class:`DataSpec`. :func:`open_data` finds the splits, reads the training split and resolves
everything the examples depend on, once: the text columns (named, or detected the way Hugging Face's
``run_glue.py`` detects them), the label set (in a stable order) or regression, and the :class:`TaskSpec`
(:func:`pipeline.tasks.make_task`). :func:`load_split` then reads one split as the same
:class:`~pipeline.data.Dataset` of :class:`~pipeline.data.Example` a GLUE folder gives.

Sources:

* a folder of split files named by their split, with any supported extension: ``train.csv``, ``dev.jsonl`` (or
  ``validation.jsonl``), ``test.parquet``; any other file stem is a split of its own name;
* one file: the training split;
* anything else is a hub dataset name (``datasets.load_dataset(name, config, split=...)``), with the splits
  ``train``, ``dev`` and ``test`` read from ``train_split_name``, ``validation_split_name`` and
  ``test_split_name``.

Every example id is ``<split>-<id>`` (the id column's value) or ``<split>-<row index>`` (its position among the
file's rows, from 0). A dataset's fingerprint covers the file's bytes and every setting that changes its examples,
so a cache explained from one file or setting is refused for another.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from pipeline.data import Dataset, Example
from pipeline.errors import EgkdError
from pipeline.own_labels import LabelSet, labelled_rows, resolve_labels, single_class_error
from pipeline.tables import EXTENSIONS, DataFormat, Table, read_hub, read_table
from pipeline.tasks import TaskSpec, make_task

TRAIN, DEV, TEST = "train", "dev", "test"
_ALIASES = {"validation": DEV}  # file stems read as another split
DETECTED_TEXT_COLUMNS = (("sentence1", "sentence2"), ("text",), ("sentence",))  # tried in this order


class SourceKind(str, Enum):
    FOLDER = "folder"  # a folder of split files
    FILE = "file"  # one file, the training split
    HUB = "hub"  # a Hugging Face dataset name


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """A user's data set, as params describe it; every field but ``source`` has a default."""

    source: str  # a folder of split files, one data file, or a hub dataset name
    name: str | None = None  # the task's name; None: the folder's, the file's or the dataset's name
    dataset_config: str | None = None  # the hub dataset's configuration
    format: DataFormat | None = None  # None: from each file's extension
    text_columns: tuple[str, ...] = ()  # one or two; empty: detected
    label_column: str = "label"
    id_column: str | None = None  # None: ids are row positions
    label_names: tuple[str, ...] | None = None  # the labels in model order; None: sorted from the training split
    encoding: str = "utf-8"
    regression: bool | None = None  # None: regression when the training labels are floats
    train_split_name: str = "train"  # hub split names of egkd's train, dev and test splits
    validation_split_name: str = "validation"
    test_split_name: str = "test"


@dataclass(frozen=True)
class SplitSource:
    split: str  # egkd's split name: train, dev, test, or a file's own stem
    location: str  # the file's path, or the hub split's name
    format: DataFormat | None  # None for a hub split


@dataclass(frozen=True)
class Columns:
    text: tuple[str, ...]  # one or two
    label: str
    id: str | None


@dataclass(frozen=True, kw_only=True)
class OwnData:
    """A :class:`DataSpec` resolved against its files: where each split is, the columns, the labels, the task."""

    spec: DataSpec
    kind: SourceKind
    splits: tuple[SplitSource, ...]
    columns: Columns
    labels: LabelSet
    task: TaskSpec
    settings: str  # canonical JSON of the settings that change the examples (part of every fingerprint)
    # The training split as open_data read it, so that loading it does not parse the file a second time
    train_table: Table | None = field(default=None, repr=False, compare=False)

    @property
    def split_names(self) -> tuple[str, ...]:
        return tuple(s.split for s in self.splits)

    def split_source(self, split: str) -> SplitSource:
        for source in self.splits:
            if source.split == split:
                return source
        if self.kind is SourceKind.HUB:
            return SplitSource(split, split, None)
        where = "it is one file, the training split" if self.kind is SourceKind.FILE else "its files"
        raise EgkdError(f"{self.spec.source}: no split {split!r} ({where}: {', '.join(self.split_names)})")


def source_kind(source: str) -> SourceKind:
    """A folder, a file, or (neither on disk, nor shaped like a path) a hub dataset name."""
    path = Path(source).expanduser()
    if path.is_dir():
        return SourceKind.FOLDER
    if path.is_file():
        return SourceKind.FILE
    shaped_like_a_path = source.startswith((".", "/", "~")) or source.endswith("/") or source.count("/") > 1
    if path.suffix.lower() in EXTENSIONS or shaped_like_a_path:  # a hub name is "name" or "owner/name"
        raise EgkdError(f"data not found: {source} (no such file or folder)")
    return SourceKind.HUB


def find_splits(spec: DataSpec) -> tuple[SourceKind, tuple[SplitSource, ...]]:
    """Where each split of ``spec`` is read from."""
    kind = source_kind(spec.source)
    if kind is SourceKind.HUB:
        names = (spec.train_split_name, spec.validation_split_name, spec.test_split_name)
        return kind, tuple(SplitSource(s, n, None) for s, n in zip((TRAIN, DEV, TEST), names, strict=True))
    path = Path(spec.source).expanduser()
    if kind is SourceKind.FILE:
        return kind, (SplitSource(TRAIN, str(path), spec.format),)
    found: dict[str, Path] = {}
    for file in sorted(path.iterdir()):
        supported = spec.format is not None or file.suffix.lower() in EXTENSIONS
        if not file.is_file() or file.name.startswith(".") or not supported:
            continue
        split = _ALIASES.get(file.stem, file.stem)
        if split in found:
            raise EgkdError(f"{path}: two files for the split {split!r}: {found[split].name} and {file.name}")
        found[split] = file
    if not found:
        exts = ", ".join(EXTENSIONS)
        raise EgkdError(f"{path}: no data files (train.csv, dev.jsonl, test.parquet...; extensions {exts})")
    order = sorted(found, key=lambda s: ((TRAIN, DEV, TEST).index(s) if s in (TRAIN, DEV, TEST) else 3, s))
    return kind, tuple(SplitSource(s, str(found[s]), spec.format) for s in order)


def read_split(spec: DataSpec, source: SplitSource) -> Table:
    if source.format is None and source_kind(spec.source) is SourceKind.HUB:
        return read_hub(spec.source, spec.dataset_config, source.location)
    return read_table(Path(source.location), source.format, spec.encoding)


def open_data(spec: DataSpec) -> OwnData:
    """Resolve ``spec``: its splits, its columns and labels (from the training split), and its task."""
    if len(spec.text_columns) > 2:
        raise EgkdError(f"one or two text columns, got {len(spec.text_columns)}: {list(spec.text_columns)}")
    kind, splits = find_splits(spec)
    has_train = any(s.split == TRAIN for s in splits)
    if not has_train and spec.label_names is None and spec.regression is not True:
        raise EgkdError(
            f"{spec.source}: no training split to take the labels from; name them (data.label_names) "
            "or set data.do_regression"
        )
    first = read_split(spec, next(s for s in splits if s.split == TRAIN) if has_train else splits[0])
    if not first.rows:
        raise EgkdError(f"{first.source}: no examples")
    columns = Columns(_text_columns(spec, first), spec.label_column, spec.id_column)
    _check_columns(first, columns, labelled=has_train)
    labels = resolve_labels(first if has_train else None, spec.label_column, spec.label_names, spec.regression)
    name = _task_name(spec, kind)
    task = make_task(name, labels.names, columns.text, columns.label, columns.id, {s.split: s.location for s in splits})
    settings = json.dumps(
        {
            "text_columns": list(columns.text),
            "label_column": columns.label,
            "id_column": columns.id,
            "labels": None if labels.names is None else list(labels.names),
            "encoding": spec.encoding,
            "format": None if spec.format is None else spec.format.value,
            "dataset_config": spec.dataset_config,
        },
        sort_keys=True,
    )
    return OwnData(
        spec=spec,
        kind=kind,
        splits=splits,
        columns=columns,
        labels=labels,
        task=task,
        settings=settings,
        train_table=first if has_train else None,
    )


def load_split(data: OwnData, split: str, limit: int | None = None) -> Dataset:
    """Split ``split`` of ``data`` as examples; ``limit`` keeps the first N (every row is checked all the same)."""
    if limit is not None and limit <= 0:
        raise EgkdError(f"limit must be a positive number of examples, got {limit}")
    source = data.split_source(split)
    table = data.train_table if split == TRAIN and data.train_table is not None else read_split(data.spec, source)
    labelled = split in (TRAIN, DEV) or data.columns.label in table.columns
    _check_columns(table, data.columns, labelled)
    examples = _examples(table, data, split, labelled)
    if not examples:
        raise EgkdError(f"{table.source}: no examples")
    digest = hashlib.sha256(f"egkd-own-data-v1\n{table.fingerprint}\n{data.settings}".encode()).hexdigest()
    return Dataset(data.task, split, examples[:limit], digest, table.source)


def load_own_dataset(spec: DataSpec, split: str, limit: int | None = None) -> Dataset:
    """:func:`open_data` then :func:`load_split`: one split of a user's data set."""
    return load_split(open_data(spec), split, limit)


def _examples(table: Table, data: OwnData, split: str, labelled: bool) -> list[Example]:
    columns = data.columns
    text_at = [table.columns.index(c) for c in columns.text]
    id_at = None if columns.id is None else table.columns.index(columns.id)
    raw_labels = labelled_rows(table, columns.label) if labelled else [(table.where(r), None) for r in table.rows]
    required = labelled and split in (TRAIN, DEV)  # another split may leave some (a hub test split: all) unlabelled
    examples: list[Example] = []
    seen: dict[str, str] = {}
    for position, (row, (where, raw)) in enumerate(zip(table.rows, raw_labels, strict=True)):
        texts = []
        for column, at in zip(columns.text, text_at, strict=True):
            value = row.values[at]
            text = value if isinstance(value, str) else "" if value is None else str(value)
            if not text.strip():
                raise EgkdError(f"{where}: empty text in column {column!r}")
            texts.append(text)
        row_id = str(position) if id_at is None else _row_id(row.values[id_at], where, columns.id)
        if row_id in seen:
            raise EgkdError(f"{where}: duplicate id {row_id!r} in column {columns.id!r} (first at {seen[row_id]})")
        seen[row_id] = where
        label = data.labels.target(raw, where, columns.label, required) if labelled else None
        examples.append(Example(f"{split}-{row_id}", split, texts[0], texts[1] if len(texts) == 2 else None, label))
    present = {e.label for e in examples if e.label is not None}
    if data.labels.names is not None and len(present) == 1:
        raise EgkdError(single_class_error(table.source, data.labels.names[int(present.pop())]))
    return examples


def _row_id(value: object, where: str, column: str | None) -> str:
    text = "" if value is None else str(value).strip()
    if not text:
        raise EgkdError(f"{where}: empty id in column {column!r}")
    return text


def _text_columns(spec: DataSpec, table: Table) -> tuple[str, ...]:
    if spec.text_columns:
        return spec.text_columns
    others = [c for c in table.columns if c not in (spec.label_column, spec.id_column)]
    for candidate in DETECTED_TEXT_COLUMNS:
        if all(c in others for c in candidate):
            return candidate
    strings = [c for c in others if _is_text_column(table.column_values(c))]
    if not strings:
        raise EgkdError(
            f"{table.source}: no text column found among {list(table.columns)}; name it (data.text_column_names)"
        )
    return tuple(strings[:2])


def _is_text_column(values: list[object]) -> bool:
    """Strings, not all of them numbers (a CSV file's numeric columns are strings too)."""
    present = [v for v in values if v is not None]
    if not present or not all(isinstance(v, str) for v in present):
        return False
    return not all(re.fullmatch(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*", str(v)) for v in present)


def _check_columns(table: Table, columns: Columns, labelled: bool) -> None:
    needed = list(columns.text) + ([columns.label] if labelled else []) + ([columns.id] if columns.id else [])
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise EgkdError(
            f"{table.source}: no column {', '.join(map(repr, missing))}; the file has columns {list(table.columns)}"
        )


def _task_name(spec: DataSpec, kind: SourceKind) -> str:
    if spec.name:
        return spec.name
    if kind is SourceKind.HUB:
        base = spec.source.rstrip("/").split("/")[-1] + (f"-{spec.dataset_config}" if spec.dataset_config else "")
    else:
        path = Path(spec.source).expanduser().resolve()
        is_split = kind is SourceKind.FILE and _ALIASES.get(path.stem, path.stem) in (TRAIN, DEV, TEST)
        base = path.parent.name if is_split else path.stem if kind is SourceKind.FILE else path.name
    return re.sub(r"[^a-z0-9_.-]+", "-", base.lower()).strip("-") or "data"

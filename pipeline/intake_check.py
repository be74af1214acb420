"""What ``egkd data add`` reads back from a data set it has copied, before the copy takes the place of ``--out``:
every split loaded in full as the stages will load it (its columns, every label, every text, every id), and what
was found, said in a few lines (the text and label columns, the classes or regression, each split's rows).

An error names the file and row of the copy as it will be once added (``--out``'s path), and nothing is added: a
data set the stages would refuse is refused here, and ``--replace`` never replaces a good data set with a bad one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

from pipeline.config import DataParams
from pipeline.data import tsv_path
from pipeline.errors import EgkdError
from pipeline.own_data import (
    DETECTED_TEXT_COLUMNS,
    DEV,
    TEST,
    TRAIN,
    DataSpec,
    OwnData,
    SplitSource,
    find_splits,
    load_split,
    read_split,
)
from pipeline.own_labels import ordered_labels, resolve_labels
from pipeline.sources import is_glue_folder, open_source, own_spec
from pipeline.tasks import TaskSpec

# The data settings a copied set is read with by the stages (the hub's dataset and split names are not: its copy is
# train.parquet, dev.parquet and test.parquet)
READ_WITH = (
    "text_column_names",
    "label_column_name",
    "id_column_name",
    "label_names",
    "do_regression",
    "format",
    "encoding",
)
_SHOWN_CLASSES = 12


def read_back(folder: Path, params: DataParams, shown_as: Mapping[str, str]) -> tuple[str, ...]:
    """Every split of the data set copied to ``folder`` loaded as the stages load it; what was found, in lines. An
    error names each copied file or folder as ``shown_as`` maps it (the user's file it was copied from, or where it
    will be)."""
    try:
        return _read_back(folder, params)
    except EgkdError as err:
        said = str(err)
        for copy, shown in shown_as.items():
            said = said.replace(copy, shown)
        raise EgkdError(said) from None


def changed_settings(params: DataParams, folder: Path) -> tuple[str, ...]:
    """``data.<key>: <value>`` for each setting of :data:`READ_WITH` that is not the default (none for a GLUE
    folder, which is read by its task alone)."""
    if is_glue_folder(folder, params):
        return ()
    defaults = DataParams()
    changed = []
    for key in READ_WITH:
        value = getattr(params, key)
        if value != getattr(defaults, key):
            shown = value if isinstance(value, str) else json.dumps(list(value) if isinstance(value, tuple) else value)
            changed.append(f"data.{key}: {shown}")
    return tuple(changed)


def _read_back(folder: Path, params: DataParams) -> tuple[str, ...]:
    if is_glue_folder(folder, params):
        source = open_source(folder, params)
        task = source.task
        rows = {s: len(source.load(s)) for s in task.splits if tsv_path(folder, task, s).is_file()}
        columns = ", ".join(map(repr, task.tsv.text_columns))
        return f"text: {columns}; {_labels(task, f'the GLUE task {task.name}')}", _rows(rows)
    spec = own_spec(str(folder), params)
    splits = find_splits(spec)[1]
    if not any(s.split in (TRAIN, DEV, TEST) for s in splits):
        names = ", ".join(Path(s.location).name for s in splits)
        raise EgkdError(
            f"{folder}: no train, dev or test file among {names}: name each file by its split (train.csv, "
            "dev.jsonl, test.parquet...)"
        )
    evaluation_only = not any(s.split == TRAIN for s in splits) and params.label_names is None
    if evaluation_only and params.do_regression is not True:
        classes = _labels_of_files(spec, splits, params.label_column_name)
        if classes is None:
            params = dataclasses.replace(params, do_regression=True)
        else:
            params = dataclasses.replace(params, label_names=classes)
    own = open_source(str(folder), params).own
    assert own is not None
    rows = {s.split: len(load_split(own, s.split)) for s in own.splits}
    origin = "its files (no training split: an evaluation set, scored by label name)" if evaluation_only else None
    said, *notes = _columns(own, params, origin)
    return (said, _rows(rows), *notes)


def _labels_of_files(spec: DataSpec, splits: tuple[SplitSource, ...], column: str) -> tuple[str, ...] | None:
    """An evaluation set's classes: those of all its files, in the order a training split's would be in; None where
    its labels are numbers (a regression set)."""
    found: set[str] = set()
    for split in splits:
        table = read_split(spec, split)
        if column not in table.columns:
            raise EgkdError(f"{table.source}: no column {column!r}; the file has columns {list(table.columns)}")
        labels = resolve_labels(table, column, None, None)
        if labels.names is None:
            return None
        found.update(labels.names)
    return ordered_labels(found)


def _columns(own: OwnData, params: DataParams, origin: str | None) -> tuple[str, ...]:
    text = ", ".join(map(repr, own.columns.text))
    detected = not params.text_column_names
    said = f"text: {text}{' (detected)' if detected else ''}; {_labels(own.task, origin or own.labels.origin)}"
    lines = [said + (f"; ids: {own.columns.id!r}" if own.columns.id else "")]
    if detected and len(own.columns.text) == 2 and own.columns.text not in DETECTED_TEXT_COLUMNS:
        lines.append(
            f"note: two text columns were detected, {text}: a sentence-pair task; if one of them is not the text, "
            "name the text column (--text-column-names, data.text_column_names)"
        )
    return tuple(lines)


def _labels(task: TaskSpec, origin: str) -> str:
    column = repr(task.tsv.label_column)
    if task.labels is None:
        return f"labels: {column}, numbers: a regression task"
    shown = ", ".join(task.labels[:_SHOWN_CLASSES]) + (", ..." if len(task.labels) > _SHOWN_CLASSES else "")
    return f"labels: {column}, {len(task.labels)} classes from {origin}: {shown}"


def _rows(rows: dict[str, int]) -> str:
    return "rows: " + ", ".join(f"{split} {count:,}" for split, count in rows.items())

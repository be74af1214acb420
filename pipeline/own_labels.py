"""The label set of a user's data set, and each raw label's model target.

A class label is read as a string key whatever its type: an integer ``3`` and a CSV field ``"3"`` are the same
label ``"3"``; a float with an integral value (``3.0`` in JSON) is ``"3"`` too; ``true``/``false`` are
``"true"``/``"false"``. The set comes from the training split, in a stable order: numerically when every label is
an integer, else sorted as strings; ``label_names`` gives it explicitly, and a hub dataset's ``ClassLabel`` gives
its own names in its own order. Float labels (a Python float, or a field such as ``"3.5"``) make a regression task
unless ``regression`` says otherwise.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipeline.errors import EgkdError
from pipeline.tables import Table

_INT = re.compile(r"[-+]?\d+")
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


@dataclass(frozen=True)
class LabelSet:
    names: tuple[str, ...] | None  # in model order; None: a regression task
    origin: str  # where the names come from, for messages: "the training split", "data.label_names"...

    def target(self, raw: object, where: str, column: str, required: bool = True) -> int | float | None:
        """The model's target for ``raw`` (a class index, or a score); None for no label where none is required."""
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if required:
                raise EgkdError(f"{where}: no label in column {column!r}")
            return None
        if self.names is None:
            return _score(raw, where)
        key = _key(raw, where)
        if key not in self.names:
            raise EgkdError(f"{where}: label {key!r} is not in {self.origin}'s labels {list(self.names)}")
        return self.names.index(key)


def single_class_error(source: str, label: str) -> str:
    return f"{source}: every example has the label {label!r}: a split with one class only (two or more are needed)"


def labelled_rows(table: Table, column: str) -> list[tuple[str, object]]:
    """``(where, raw label)`` of every row; a ``ClassLabel`` column's indices read as its names (-1: no label)."""
    names = next((c.names for c in table.class_names if c.column == column), None)
    at = table.columns.index(column)
    rows: list[tuple[str, object]] = []
    for row in table.rows:
        raw = row.values[at]
        if names is not None and isinstance(raw, int) and not isinstance(raw, bool):
            raw = names[raw] if 0 <= raw < len(names) else None
        rows.append((table.where(row), raw))
    return rows


def resolve_labels(
    train: Table | None, column: str, label_names: tuple[str, ...] | None, regression: bool | None
) -> LabelSet:
    """The label set of a data set whose training split is ``train`` (None: there is none)."""
    if label_names is not None:
        repeated = sorted({n for n in label_names if label_names.count(n) > 1})
        if repeated or len(label_names) < 2:
            raise EgkdError(f"data.label_names: two or more distinct labels, got {list(label_names)}")
    if regression is True:
        return LabelSet(None, "regression")
    if train is None:
        assert label_names is not None  # open_data asks for them without a training split
        return LabelSet(tuple(label_names), "data.label_names")
    rows = [(where, raw) for where, raw in labelled_rows(train, column)]
    for where, raw in rows:
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            raise EgkdError(f"{where}: no label in column {column!r}")
    _one_type(rows, column)
    if regression is None and label_names is None and _floats(raw for _, raw in rows):
        return LabelSet(None, "regression")
    keys = [(where, _key(raw, where)) for where, raw in rows]
    class_names = next((c.names for c in train.class_names if c.column == column), None)
    if label_names is not None:
        for where, key in keys:
            if key not in label_names:
                raise EgkdError(f"{where}: label {key!r} is not in data.label_names {list(label_names)}")
        labels = LabelSet(tuple(label_names), "data.label_names")
    elif class_names is not None:
        labels = LabelSet(class_names, f"{train.source}'s ClassLabel")
    else:
        labels = LabelSet(ordered_labels({key for _, key in keys}), "the training split")
    distinct = {key for _, key in keys}
    if len(distinct) == 1:
        raise EgkdError(single_class_error(train.source, distinct.pop()))
    return labels


def ordered_labels(keys: set[str]) -> tuple[str, ...]:
    """Labels in a stable order: numerically when every one is an integer, else sorted as strings."""
    return tuple(sorted(keys, key=int) if all(_INT.fullmatch(k) for k in keys) else sorted(keys))


def _kind(raw: object) -> str | None:
    """A label's type as a message names it; None for a value that is no label at all (``_key`` refuses it)."""
    if isinstance(raw, bool):
        return "a boolean"
    return "a number" if isinstance(raw, (int, float)) else "a string" if isinstance(raw, str) else None


def _one_type(rows: list[tuple[str, object]], column: str) -> None:
    """Refuse a label column of a typed file (JSON, Parquet) that mixes booleans, numbers and strings: ``1`` and
    ``"1"`` would be one class, ``true`` and ``1`` two. (A CSV or TSV file's labels are all strings.)"""
    typed = [(where, raw) for where, raw in rows if _kind(raw) is not None]
    if not typed:
        return
    first_where, first = typed[0]
    for where, raw in typed[1:]:
        if _kind(raw) != _kind(first):
            raise EgkdError(
                f"{where}: label {raw!r} is {_kind(raw)}, but {first_where}'s label {first!r} is {_kind(first)}: "
                f"one type of label per column ({column!r})"
            )


def _floats(values: object) -> bool:
    """Every label a number, and at least one written as a float: a regression task."""
    seen_float = False
    for raw in values:  # type: ignore[attr-defined]
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            return False
        if isinstance(raw, str):
            text = raw.strip()
            if not _NUMBER.fullmatch(text):
                return False
            seen_float = seen_float or not _INT.fullmatch(text)
        else:
            seen_float = seen_float or isinstance(raw, float)
    return seen_float


def _key(raw: object, where: str) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int):
        return str(raw)
    if isinstance(raw, float):
        if not math.isfinite(raw):
            raise EgkdError(f"{where}: label {raw!r} does not parse: not a finite number")
        return str(int(raw)) if raw.is_integer() else str(raw)
    if isinstance(raw, str):
        return raw.strip()
    raise EgkdError(
        f"{where}: label {raw!r} does not parse: one integer or string per example, not a {type(raw).__name__}"
    )


def _score(raw: object, where: str) -> float:
    try:
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueError
        value = float(raw)
    except ValueError:
        raise EgkdError(f"{where}: label {raw!r} does not parse as a number (a regression task)") from None
    if not math.isfinite(value):
        raise EgkdError(f"{where}: label {raw!r} does not parse as a finite number (a regression task)")
    return value

"""GLUE examples from a folder of GLUE TSV files or from the Hugging Face hub.

Every example carries a stable ``example_id`` (``<split>-<index>``, the file's
index column where the task has one, else the data row number) that joins
explanation caches to data; caches are never joined by row order.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import EgkdError
from pipeline.tasks import TaskSpec

HUB = "hub"  # the data source that means "the GLUE dataset on the Hugging Face hub"
TRANSFER = "transfer"  # the split of unlabelled examples read from a plain-text file (a transfer set)


@dataclass(frozen=True)
class Example:
    example_id: str
    split: str
    text_a: str
    text_b: str | None
    label: float | int | None  # None on unlabelled (test) splits


@dataclass(frozen=True)
class Dataset:
    task: TaskSpec
    split: str
    examples: list[Example]
    fingerprint: str  # sha256 of the source file (or the hub dataset's fingerprint)
    source: str

    def __len__(self) -> int:
        return len(self.examples)


def resolve_source(data: str | Path, source: str) -> str:
    """What to load from: ``data`` (a GLUE folder), or the hub when ``data`` is "hub" or ``data.source`` is hub."""
    return HUB if str(data) == HUB or source == HUB else str(data)


def load_dataset(source: str | Path, task: TaskSpec, split: str, limit: int | None = None) -> Dataset:
    """Load ``split`` of ``task`` from a GLUE folder, or from the hub when ``source == "hub"``.

    ``limit`` keeps the first N examples (a deterministic subset).
    """
    if split not in task.splits:
        raise EgkdError(f"task {task.name} has no split {split!r}; splits: {', '.join(task.splits)}")
    if limit is not None and limit <= 0:
        raise EgkdError(f"limit must be a positive number of examples, got {limit}")
    if str(source) == HUB:
        return _load_hub(task, split, limit)
    return _load_tsv(Path(source), task, split, limit)


def tsv_path(folder: Path, task: TaskSpec, split: str) -> Path:
    return folder / task.glue_dir / f"{task.splits[split]}.tsv"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _load_tsv(folder: Path, task: TaskSpec, split: str, limit: int | None) -> Dataset:
    if not folder.is_dir():
        raise EgkdError(f"data folder not found: {folder}")
    path = tsv_path(folder, task, split)
    if not path.is_file():
        raise EgkdError(f"{task.name} {split} file not found: {path} (expected the GLUE TSV layout)")
    lines = _read_lines(path)
    layout = task.tsv
    rows = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    numbered = ((n, row) for n, row in enumerate(rows, start=1) if row and any(f.strip() for f in row))
    if layout.columns is None:
        first = next(numbered, None)
        if first is None:
            raise EgkdError(f"{path}: empty file, expected a header line")
        columns = tuple(first[1])
    else:
        columns = layout.columns
    labelled = split != "test"
    needed = list(layout.text_columns) + ([layout.label_column] if labelled else [])
    needed += [layout.id_column] if layout.id_column else []
    missing = [c for c in needed if c not in columns]
    if missing:
        raise EgkdError(f"{path}: missing column(s) {', '.join(map(repr, missing))}; found {list(columns)}")
    index = {c: columns.index(c) for c in columns}
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for line_no, row in numbered:
        if len(row) < len(columns) and not _mnli_tolerant(task, row, columns):
            raise EgkdError(f"{path}:{line_no}: {len(row)} fields, expected {len(columns)} ({list(columns)})")
        if len(row) > len(columns) and task.name != "mnli":
            raise EgkdError(f"{path}:{line_no}: {len(row)} fields, expected {len(columns)} ({list(columns)})")
        row_id = row[index[layout.id_column]] if layout.id_column else str(len(examples))
        example_id = f"{split}-{row_id}"
        if example_id in seen:
            raise EgkdError(f"{path}:{line_no}: duplicate id {row_id!r} (first at line {seen[example_id]})")
        seen[example_id] = line_no
        label = None
        if labelled:
            raw = row[index[layout.label_column]] if task.name != "mnli" else row[-1]
            try:
                label = task.label_index(raw.strip())
            except ValueError as err:
                raise EgkdError(f"{path}:{line_no}: {err}") from None
        texts = [row[index[c]] for c in layout.text_columns]
        examples.append(Example(example_id, split, texts[0], texts[1] if task.is_pair else None, label))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise EgkdError(f"{path}: no examples")
    return Dataset(task, split, examples, _file_sha256(path), str(path))


def load_text(path: str | Path, task: TaskSpec, limit: int | None = None) -> Dataset:
    """Unlabelled examples of ``task`` from a plain-text file: the ``transfer`` split.

    One example per line, UTF-8; a pair task's two texts are separated by a tab. Blank lines are skipped, and an
    example's id is ``transfer-<line number - 1>``, so ids stay put when lines are appended. ``limit`` keeps the
    first N examples.
    """
    path = Path(path)
    if limit is not None and limit <= 0:
        raise EgkdError(f"limit must be a positive number of examples, got {limit}")
    if not path.is_file():
        raise EgkdError(f"text file not found: {path}")
    lines = _read_lines(path)
    fields = 2 if task.is_pair else 1
    shape = "two texts separated by a tab" if task.is_pair else "one text and no tab"
    examples: list[Example] = []
    for n, line in enumerate(lines):
        if not line.strip():
            continue
        texts = line.split("\t")
        if len(texts) != fields:
            raise EgkdError(f"{path}:{n + 1}: expected {shape} per line ({task.name}), found {len(texts)} field(s)")
        if not all(t.strip() for t in texts):
            raise EgkdError(f"{path}:{n + 1}: an empty text ({task.name} expects {shape} per line)")
        examples.append(Example(f"{TRANSFER}-{n}", TRANSFER, texts[0], texts[1] if task.is_pair else None, None))
        if limit is not None and len(examples) >= limit:
            break
    if not examples:
        raise EgkdError(f"{path}: no examples (one per line)")
    return Dataset(task, TRANSFER, examples, _file_sha256(path), str(path))


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (a byte-order mark is dropped); other bytes are refused naming the line."""
    try:
        return path.read_bytes().decode("utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        line_no = path.read_bytes()[: err.start].count(b"\n") + 1
        raise EgkdError(f"{path}:{line_no}: bytes that are not UTF-8 ({err.reason})") from None


def _mnli_tolerant(task: TaskSpec, row: list[str], columns: tuple[str, ...]) -> bool:
    # MNLI dev files carry a variable number of annotator labels before gold_label.
    return task.name == "mnli" and len(row) >= columns.index("sentence2") + 2


def _load_hub(task: TaskSpec, split: str, limit: int | None) -> Dataset:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a dependency
        raise EgkdError(f"the hub source needs the `datasets` package: {err}") from None
    hub_split = task.hub.splits[split]
    try:
        table = datasets.load_dataset("nyu-mll/glue", task.hub.config, split=hub_split)
    except Exception as err:  # network or hub failure: one line for the user
        raise EgkdError(f"could not load glue/{task.hub.config} from the hub: {err}".splitlines()[0]) from None
    examples: list[Example] = []
    for row in table:
        raw = row["label"]
        label = None if raw is None or raw == -1 else raw
        fields = [row[f] for f in task.hub.text_fields]
        examples.append(Example(f"{split}-{row['idx']}", split, fields[0], fields[1] if task.is_pair else None, label))
        if limit is not None and len(examples) >= limit:
            break
    return Dataset(task, split, examples, table._fingerprint, f"hub:glue/{task.hub.config}/{hub_split}")

"""The GLUE task registry (each task's files, columns, label set and metrics), and :func:`make_task` for any other.

A task that is not GLUE (a user's CSV, JSON Lines, Parquet files or a hub dataset: :mod:`pipeline.own_data`) gets its
:class:`TaskSpec` from :func:`make_task`: its metrics follow from its labels (classification: accuracy and macro-F1,
binary tasks also F1 of the positive class, the second label; regression: Pearson and Spearman).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pipeline.errors import EgkdError


class Metric(str, Enum):
    ACCURACY = "accuracy"
    F1 = "f1"  # F1 of the positive class (label index 1) of a binary task
    MACRO_F1 = "macro_f1"  # the unweighted mean of every class's F1
    MATTHEWS = "matthews_corrcoef"
    PEARSON = "pearson"
    SPEARMAN = "spearman"


@dataclass(frozen=True)
class TsvLayout:
    """Where a task's fields sit in its GLUE TSV files.

    Columns are named by the header line; files without a header (CoLA) give
    their column names in ``columns``.
    """

    text_columns: tuple[str, ...]
    label_column: str
    id_column: str | None = None
    columns: tuple[str, ...] | None = None  # set when the files have no header line


@dataclass(frozen=True)
class HubLayout:
    """The same task as the `glue` dataset on the Hugging Face hub names it."""

    config: str
    text_fields: tuple[str, ...]
    splits: dict[str, str]  # egkd split name -> hub split name


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    name: str
    glue_dir: str
    tsv: TsvLayout
    hub: HubLayout
    labels: tuple[str, ...] | None  # None: a regression task (STS-B)
    metrics: tuple[Metric, ...]
    splits: dict[str, str]  # split name -> TSV file stem (a task made by make_task: the split's file or hub split)
    score_range: tuple[float, float] | None = None  # a regression task's valid scores (STS-B: 0 to 5), None: any

    @property
    def is_glue(self) -> bool:
        """A task of the GLUE registry (looked up by name); False for one made by :func:`make_task`."""
        return bool(self.glue_dir)

    @property
    def is_pair(self) -> bool:
        return len(self.tsv.text_columns) == 2

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    def label_index(self, raw: str) -> float | int:
        """Map a raw label string to the model's target; raise ``ValueError`` if outside the set."""
        if self.labels is None:
            value = float(raw)
            if self.score_range is not None and not self.score_range[0] <= value <= self.score_range[1]:
                low, high = self.score_range
                raise ValueError(f"score {raw!r} outside [{low:g}, {high:g}]")
            return value
        if raw not in self.labels:
            raise ValueError(f"label {raw!r} not in {list(self.labels)}")
        return self.labels.index(raw)


_STD = {"train": "train", "dev": "dev", "test": "test"}
_HUB_STD = {"train": "train", "dev": "validation", "test": "test"}
_BINARY = ("0", "1")
_NLI2 = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec(
            name="sst2",
            glue_dir="SST-2",
            tsv=TsvLayout(("sentence",), "label"),
            hub=HubLayout("sst2", ("sentence",), _HUB_STD),
            labels=_BINARY,
            metrics=(Metric.ACCURACY,),
            splits=_STD,
        ),
        TaskSpec(
            name="cola",
            glue_dir="CoLA",
            tsv=TsvLayout(("sentence",), "label", columns=("source", "label", "label_notes", "sentence")),
            hub=HubLayout("cola", ("sentence",), _HUB_STD),
            labels=_BINARY,
            metrics=(Metric.MATTHEWS, Metric.ACCURACY),
            splits=_STD,
        ),
        TaskSpec(
            name="mrpc",
            glue_dir="MRPC",
            tsv=TsvLayout(("#1 String", "#2 String"), "Quality"),
            hub=HubLayout("mrpc", ("sentence1", "sentence2"), _HUB_STD),
            labels=_BINARY,
            metrics=(Metric.F1, Metric.ACCURACY),
            splits=_STD,
        ),
        TaskSpec(
            name="qqp",
            glue_dir="QQP",
            tsv=TsvLayout(("question1", "question2"), "is_duplicate", "id"),
            hub=HubLayout("qqp", ("question1", "question2"), _HUB_STD),
            labels=_BINARY,
            metrics=(Metric.F1, Metric.ACCURACY),
            splits=_STD,
        ),
        TaskSpec(
            name="stsb",
            glue_dir="STS-B",
            tsv=TsvLayout(("sentence1", "sentence2"), "score", "index"),
            hub=HubLayout("stsb", ("sentence1", "sentence2"), _HUB_STD),
            labels=None,
            metrics=(Metric.PEARSON, Metric.SPEARMAN),
            splits=_STD,
            score_range=(0.0, 5.0),
        ),
        TaskSpec(
            name="mnli",
            glue_dir="MNLI",
            tsv=TsvLayout(("sentence1", "sentence2"), "gold_label", "index"),
            hub=HubLayout(
                "mnli",
                ("premise", "hypothesis"),
                {"train": "train", "dev": "validation_matched", "dev_mismatched": "validation_mismatched"},
            ),
            labels=("entailment", "neutral", "contradiction"),
            metrics=(Metric.ACCURACY,),
            splits={"train": "train", "dev": "dev_matched", "dev_mismatched": "dev_mismatched"},
        ),
        TaskSpec(
            name="qnli",
            glue_dir="QNLI",
            tsv=TsvLayout(("question", "sentence"), "label", "index"),
            hub=HubLayout("qnli", ("question", "sentence"), _HUB_STD),
            labels=_NLI2,
            metrics=(Metric.ACCURACY,),
            splits=_STD,
        ),
        TaskSpec(
            name="rte",
            glue_dir="RTE",
            tsv=TsvLayout(("sentence1", "sentence2"), "label", "index"),
            hub=HubLayout("rte", ("sentence1", "sentence2"), _HUB_STD),
            labels=_NLI2,
            metrics=(Metric.ACCURACY,),
            splits=_STD,
        ),
        TaskSpec(
            name="wnli",
            glue_dir="WNLI",
            tsv=TsvLayout(("sentence1", "sentence2"), "label", "index"),
            hub=HubLayout("wnli", ("sentence1", "sentence2"), _HUB_STD),
            labels=_BINARY,
            metrics=(Metric.ACCURACY,),
            splits=_STD,
        ),
    )
}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}


def _key(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def is_glue_task(name: str) -> bool:
    """Whether ``name`` names a task of the GLUE registry (as :func:`get_task` spells them)."""
    return _key(name) in TASKS


def get_task(name: str) -> TaskSpec:
    """Look a task up by name (``sst2``, ``SST-2``, ``mnli``...); unknown names are an EgkdError."""
    key = _key(name)
    if key not in TASKS:
        raise EgkdError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]


def task_metrics(labels: tuple[str, ...] | None) -> tuple[Metric, ...]:
    """The metrics of a task made by :func:`make_task`, the first its main one (accuracy, or Pearson)."""
    if labels is None:
        return (Metric.PEARSON, Metric.SPEARMAN)
    return (Metric.ACCURACY, Metric.MACRO_F1) + ((Metric.F1,) if len(labels) == 2 else ())


def make_task(
    name: str,
    labels: tuple[str, ...] | None,
    text_columns: tuple[str, ...],
    label_column: str = "label",
    id_column: str | None = None,
    splits: dict[str, str] | None = None,
) -> TaskSpec:
    """A task outside the GLUE registry: ``labels`` in model order (None: regression), one or two text columns.

    ``splits`` maps each split name to where it is read from (a file name, a hub split); only for display.
    """
    if len(text_columns) not in (1, 2):
        raise EgkdError(f"task {name}: one or two text columns, got {len(text_columns)} ({list(text_columns)})")
    if labels is not None and len(labels) < 2:
        raise EgkdError(f"task {name}: a classification task needs two or more labels, got {list(labels)}")
    return TaskSpec(
        name=name,
        glue_dir="",
        tsv=TsvLayout(text_columns, label_column, id_column),
        hub=HubLayout("", text_columns, dict(splits or {})),
        labels=labels,
        metrics=task_metrics(labels),
        splits=dict(splits or {}),
    )

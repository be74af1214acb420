"""The GLUE task registry: each task's files, columns, label set and metric."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pipeline.errors import EgkdError


class Metric(str, Enum):
    ACCURACY = "accuracy"
    F1 = "f1"
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


@dataclass(frozen=True)
class TaskSpec:
    name: str
    glue_dir: str
    tsv: TsvLayout
    hub: HubLayout
    labels: tuple[str, ...] | None  # None: a regression task (STS-B)
    metrics: tuple[Metric, ...]
    splits: dict[str, str]  # split name -> TSV file stem

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
            if not 0.0 <= value <= 5.0:
                raise ValueError(f"score {raw!r} outside [0, 5]")
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
            "sst2",
            "SST-2",
            TsvLayout(("sentence",), "label"),
            HubLayout("sst2", ("sentence",), _HUB_STD),
            _BINARY,
            (Metric.ACCURACY,),
            _STD,
        ),
        TaskSpec(
            "cola",
            "CoLA",
            TsvLayout(("sentence",), "label", columns=("source", "label", "label_notes", "sentence")),
            HubLayout("cola", ("sentence",), _HUB_STD),
            _BINARY,
            (Metric.MATTHEWS, Metric.ACCURACY),
            _STD,
        ),
        TaskSpec(
            "mrpc",
            "MRPC",
            TsvLayout(("#1 String", "#2 String"), "Quality"),
            HubLayout("mrpc", ("sentence1", "sentence2"), _HUB_STD),
            _BINARY,
            (Metric.F1, Metric.ACCURACY),
            _STD,
        ),
        TaskSpec(
            "qqp",
            "QQP",
            TsvLayout(("question1", "question2"), "is_duplicate", "id"),
            HubLayout("qqp", ("question1", "question2"), _HUB_STD),
            _BINARY,
            (Metric.F1, Metric.ACCURACY),
            _STD,
        ),
        TaskSpec(
            "stsb",
            "STS-B",
            TsvLayout(("sentence1", "sentence2"), "score", "index"),
            HubLayout("stsb", ("sentence1", "sentence2"), _HUB_STD),
            None,
            (Metric.PEARSON, Metric.SPEARMAN),
            _STD,
        ),
        TaskSpec(
            "mnli",
            "MNLI",
            TsvLayout(("sentence1", "sentence2"), "gold_label", "index"),
            HubLayout(
                "mnli",
                ("premise", "hypothesis"),
                {"train": "train", "dev": "validation_matched", "dev_mismatched": "validation_mismatched"},
            ),
            ("entailment", "neutral", "contradiction"),
            (Metric.ACCURACY,),
            {"train": "train", "dev": "dev_matched", "dev_mismatched": "dev_mismatched"},
        ),
        TaskSpec(
            "qnli",
            "QNLI",
            TsvLayout(("question", "sentence"), "label", "index"),
            HubLayout("qnli", ("question", "sentence"), _HUB_STD),
            _NLI2,
            (Metric.ACCURACY,),
            _STD,
        ),
        TaskSpec(
            "rte",
            "RTE",
            TsvLayout(("sentence1", "sentence2"), "label", "index"),
            HubLayout("rte", ("sentence1", "sentence2"), _HUB_STD),
            _NLI2,
            (Metric.ACCURACY,),
            _STD,
        ),
        TaskSpec(
            "wnli",
            "WNLI",
            TsvLayout(("sentence1", "sentence2"), "label", "index"),
            HubLayout("wnli", ("sentence1", "sentence2"), _HUB_STD),
            _BINARY,
            (Metric.ACCURACY,),
            _STD,
        ),
    )
}

_ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli"}


def get_task(name: str) -> TaskSpec:
    """Look a task up by name (``sst2``, ``SST-2``, ``mnli``...); unknown names are an EgkdError."""
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in TASKS:
        raise EgkdError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[key]

"""The labelled sets a model is scored on beside its split (``experiment.eval_sets``): held-out and shifted data.

A set (:class:`pipeline.config.EvalSetParams`) is the task's own data (``data: null``: the evaluation's ``--data``)
or a data folder under ``egkd evaluate --sets-root`` (a folder of split files, read as own data by
:mod:`pipeline.own_data`, or a GLUE folder), one split of it, ``skip`` examples dropped from the split's start and at
most ``limit`` kept after them. ``data.dev_limit`` caps the task's dev split as it caps the evaluation itself, so the
set ``dev`` is exactly the dev evaluation's examples; ``data.train_limit`` does not apply (a held-out set of the
training split reads the rows beyond it, :func:`training_notes` says when it does not).

A set's labels are the model's task's, by name: a folder's labels are read as strings (an integer ``1`` and a CSV
field ``"1"`` are the label ``1``, as :mod:`pipeline.own_labels` reads them) and mapped onto the task's labels in the
task's order, so every target is the model's own class index; a label the task does not have is a one-line error
naming the file and row. The set is scored with its own task's metrics: the task's for its own data, accuracy,
macro-F1 (and a binary task's F1) for a folder (:func:`pipeline.tasks.make_task`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import DataParams, EvalSetParams
from pipeline.data import Dataset
from pipeline.errors import EgkdError
from pipeline.own_labels import LabelSet
from pipeline.sources import DataSource, open_source

DEV, TRAIN = "dev", "train"


@dataclass(frozen=True, kw_only=True)
class EvalSet:
    """One set, resolved: where its examples come from and which of them."""

    name: str
    source: DataSource
    split: str
    skip: int = 0
    end: int | None = None  # the examples read from the split's start, the skipped ones included; None: all

    def reads(self, source: DataSource, split: str, end: int | None) -> bool:
        """Whether the set is the first ``end`` examples of ``split`` of ``source``, no more and no fewer."""
        return self.source is source and (self.split, self.skip, self.end) == (split, 0, end)

    def load(self) -> Dataset:
        """The set's labelled examples, in the split's order."""
        try:
            dataset = self.source.load(self.split, self.end)
        except EgkdError as err:  # a missing split, a bad row: name the set too
            raise EgkdError(f"eval set {self.name!r}: {err}") from None
        examples = dataset.examples[self.skip :]
        if not examples:
            raise EgkdError(
                f"eval set {self.name!r}: {dataset.source} has {len(dataset.examples)} examples, none after skipping "
                f"{self.skip}"
            )
        unlabelled = next((e.example_id for e in examples if e.label is None), None)
        if unlabelled is not None:
            raise EgkdError(f"eval set {self.name!r}: {dataset.source}: example {unlabelled} has no label")
        return dataclasses.replace(dataset, examples=examples)


def open_sets(
    sets: Mapping[str, EvalSetParams], data: DataSource, params: DataParams, root: Path | None
) -> tuple[EvalSet, ...]:
    """Every set of ``sets`` against the evaluation's data (``data``, read with the ``params`` data section), a set's
    folder ``root/<data>``; a set that needs a folder without a ``root`` is refused."""
    return tuple(open_set(name, chosen, data, params, root) for name, chosen in sets.items())


def open_set(name: str, chosen: EvalSetParams, data: DataSource, params: DataParams, root: Path | None) -> EvalSet:
    end = None if chosen.limit is None else chosen.skip + chosen.limit
    folder = chosen.folder(root) if root is not None else None
    if chosen.data is None:
        if chosen.split == DEV and params.dev_limit is not None:  # the dev evaluation's examples, as it reads them
            end = params.dev_limit if end is None else min(end, params.dev_limit)
        return EvalSet(name=name, source=data, split=chosen.split, skip=chosen.skip, end=end)
    if folder is None:
        raise EgkdError(f"eval set {name!r} reads the data folder {chosen.data!r}: name the folder that holds it")
    if not folder.exists():
        raise EgkdError(f"eval set {name!r}: data folder not found: {folder}")
    return EvalSet(
        name=name, source=set_source(name, folder, chosen, data, params), split=chosen.split, skip=chosen.skip, end=end
    )


def set_source(name: str, folder: Path, chosen: EvalSetParams, data: DataSource, params: DataParams) -> DataSource:
    """The data of a set's folder, its labels the model's task's (by name, in the task's order)."""
    task = data.task
    settings = DataParams(
        task=params.task,
        text_column_names=chosen.text_column_names,
        label_column_name=chosen.label_column_name,
        label_names=task.labels,
        do_regression=task.is_regression,
    )
    source = open_source(folder, settings)
    if source.own is None:  # a GLUE folder of the same task: its labels are the task's
        return source
    if source.task.is_pair != task.is_pair:
        texts = len(source.task.tsv.text_columns)
        raise EgkdError(
            f"eval set {name!r}: {folder} gives {texts} text column(s), the {task.name} task's examples have "
            f"{len(task.tsv.text_columns)} (name them: text_column_names)"
        )
    labels = LabelSet(task.labels, f"the {task.name} task")  # the messages name the task, not data.label_names
    return dataclasses.replace(source, own=dataclasses.replace(source.own, labels=labels))


def training_notes(sets: Mapping[str, EvalSetParams], params: DataParams) -> list[str]:
    """A note for each set of the task's own training split that starts within the rows the teacher trains on."""
    notes = []
    for name, chosen in sets.items():
        if chosen.data is not None or chosen.split != TRAIN:
            continue
        limit = params.train_limit
        if limit is None or chosen.skip < limit:
            trained = "every row" if limit is None else f"the first {limit:,} rows"
            notes.append(
                f"note: eval set {name!r} reads the training split from row {chosen.skip:,}, and the teacher trains on "
                f"{trained} (data.train_limit): it is not held out"
            )
    return notes

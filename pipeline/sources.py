"""Where a run's examples come from: a GLUE task (a folder of GLUE TSVs, or the hub) or the user's own data.

``--data`` (dvc.yaml's data path) and the ``data`` params section decide: ``hub`` (or ``data.source: hub``) is the
GLUE task on the hub; a folder holding the GLUE task's own folder (``<dir>/SST-2/``) is a GLUE folder; anything else
is the user's own data set (:mod:`pipeline.own_data`): a folder of split files, one file, or a hub dataset name.
Every command that reads examples (finetune, explain, evaluate) opens its data here, and every command after stage
one rebuilds the task from a cache's metadata (:func:`task_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.cache.schema import CacheMetadata
from pipeline.config import DataParams
from pipeline.data import HUB, Dataset, load_dataset
from pipeline.errors import EgkdError
from pipeline.own_data import DataSpec, OwnData, SourceKind, load_split, open_data
from pipeline.tables import DataFormat
from pipeline.tasks import TASKS, TaskSpec, get_task, is_glue_task, make_task


@dataclass(frozen=True)
class DataSource:
    """A task and where its splits are read from: a GLUE folder or ``hub`` (``glue``), or own data (``own``)."""

    task: TaskSpec
    glue: str | None = None
    own: OwnData | None = None

    def has(self, split: str) -> bool:
        """Whether the data has split ``split`` (a hub dataset's splits are known only when read: True)."""
        if self.own is None:
            return split in self.task.splits
        return self.own.kind is SourceKind.HUB or split in self.own.split_names

    def load(self, split: str, limit: int | None = None) -> Dataset:
        """Split ``split``, its first ``limit`` examples (None: all)."""
        if self.own is not None:
            return load_split(self.own, split, limit)
        assert self.glue is not None
        return load_dataset(self.glue, self.task, split, limit)


def open_source(data: str | Path, params: DataParams) -> DataSource:
    """The data of ``--data`` (a GLUE folder, ``hub``, or own data) as the ``data`` params describe it."""
    where = str(data)
    if where == HUB or params.source == HUB:
        return DataSource(get_task(params.task), glue=HUB)
    folder = Path(where).expanduser()
    if is_glue_folder(folder, params):
        return DataSource(get_task(params.task), glue=where)
    if not is_glue_task(params.task) and any((folder / spec.glue_dir).is_dir() for spec in TASKS.values()):
        get_task(params.task)  # a GLUE folder with a task it does not hold: "unknown task ..., known tasks: ..."
    own = open_data(own_spec(where, params))
    return DataSource(own.task, own=own)


def is_glue_folder(data: str | Path, params: DataParams) -> bool:
    """Whether ``data`` is a GLUE folder holding the params' GLUE task."""
    return is_glue_task(params.task) and (Path(str(data)).expanduser() / get_task(params.task).glue_dir).is_dir()


def own_spec(source: str, params: DataParams) -> DataSpec:
    """The :class:`DataSpec` of own data at ``source`` with the ``data`` params' column, label and file settings."""
    return DataSpec(
        source=source,
        name=None if is_glue_task(params.task) else params.task,
        dataset_config=params.dataset_config_name,
        format=None if params.format is None else DataFormat(params.format),
        text_columns=params.text_column_names,
        label_column=params.label_column_name,
        id_column=params.id_column_name,
        label_names=params.label_names,
        encoding=params.encoding,
        regression=params.do_regression,
        train_split_name=params.train_split_name,
        validation_split_name=params.validation_split_name,
        test_split_name=params.test_split_name,
    )


def task_of(meta: CacheMetadata) -> TaskSpec:
    """The task a cache was explained for: a GLUE task by name, or own data from the columns and labels recorded."""
    if not meta.text_columns:
        return get_task(meta.task)
    if meta.num_labels > 1 and meta.label_names is None:
        raise EgkdError(f"cache of {meta.task}: own data without label names recorded")
    return make_task(meta.task, meta.label_names, meta.text_columns)

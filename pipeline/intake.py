"""Bringing a data set into the workspace: ``egkd data add`` copies it under a folder of the pipeline (``data/sets/``
in dvc.yaml) and, in a DVC repository, tracks it with ``dvc add``.

Every stage then reads its data from inside the workspace, so ``dvc exp run --queue`` (which runs in a copy of the
workspace, where paths outside it do not exist) finds it, and ``dvc status`` sees a changed file. The data is checked
first (columns, labels, encoding: one line naming the file and row), copied as it is into a staging folder, and read
back in full as the stages will read it (:mod:`pipeline.intake_check`) before the copy takes the folder's place:

* a GLUE folder (``<dir>/SST-2/train.tsv``) gives ``<out>/SST-2/`` (the task's folder, its split files);
* a folder of split files gives their copies (``train.csv``, ``dev.jsonl``...), one file gives ``<out>/train.<ext>``;
* a Hugging Face dataset (from the local datasets cache when offline) gives one Parquet file per split, its class
  labels written as their names.

Data without a dev split (TREC has a train and a test file) can have one held out of its training split
(``dev_size`` rows, a seeded draw): the two are then written as ``train.parquet`` and ``dev.parquet``, the rows
otherwise as they were, and the other split files copied as they are.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import DataParams
from pipeline.data import HUB, tsv_path
from pipeline.errors import EgkdError
from pipeline.intake_check import changed_settings, read_back
from pipeline.own_data import DEV, TEST, TRAIN, SourceKind, SplitSource, find_splits, source_kind
from pipeline.sources import DataSource, is_glue_folder, open_source, own_spec
from pipeline.tables import Table, read_hub


@dataclass(frozen=True, kw_only=True)
class AddRequest:
    source: str  # a GLUE folder (data.task names the task), a folder of split files, one file, or a hub dataset
    out: Path  # the folder the data set is copied to (created; it must not exist unless replace)
    params: DataParams  # the task, columns, labels, encoding and hub settings the data is checked with
    replace: bool = False  # replace an existing ``out``
    dev_size: int | None = None  # data without a dev split: hold out this many training rows as one (seeded draw)
    seed: int = 0  # the draw's seed
    track: bool = True  # ``dvc add`` the folder when the working directory is a DVC repository


@dataclass(frozen=True, kw_only=True)
class AddedData:
    out: Path
    files: tuple[Path, ...]  # what was written, relative to ``out``
    found: tuple[str, ...]  # what the stages will read: the columns, the labels, each split's rows; and notes
    settings: tuple[str, ...]  # the ``data`` settings it was read with that are not the defaults (``key: value``)
    tracked_by: Path | None  # the ``.dvc`` file, or None when not tracked
    track_skipped: bool = False  # tracking was asked for, but the working directory is no DVC repository

    def lines(self) -> list[str]:
        files = ", ".join(str(f) for f in self.files)
        said = [f"added {self.out}: {files}", *self.found]
        if self.settings:
            said.append(f"the stages read it with these data settings (params.yaml): {', '.join(self.settings)}")
        if self.tracked_by is not None:
            said.append(f"tracked by {self.tracked_by}: commit it with git (`git add {self.tracked_by}`)")
        elif self.track_skipped:
            said.append("not tracked: this folder is not a DVC repository's root (run `dvc add` from there)")
        return said


def add_data(request: AddRequest) -> AddedData:
    """Check the data of ``request.source``, copy it to ``request.out`` and track it; see the module docstring."""
    if str(request.source) == HUB or request.params.source == HUB:
        raise EgkdError("GLUE on the hub is read directly (data.source: hub); add another hub dataset by its name")
    out = Path(request.out)
    track = request.track and _in_dvc_repo()
    _check_destination(out, request.replace, track)
    source = _checked(request.source, request.params)
    staging = out.with_name(f".{out.name}.adding")
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    except OSError as err:
        raise EgkdError(f"cannot write {out}: {err.strerror} ({err.filename})") from None
    try:
        files = _copy(source, request.source, staging)
        if request.dev_size is not None:
            files = _hold_out_dev(source, staging, files, request.dev_size, request.seed)
        found = read_back(staging, request.params, _shown_as(request, staging, files))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    tracked = _dvc_add(out) if track else None
    return AddedData(
        out=out,
        files=files,
        found=found,
        settings=changed_settings(request.params, out),
        tracked_by=tracked,
        track_skipped=request.track and not track,
    )


def _shown_as(request: AddRequest, staging: Path, files: tuple[Path, ...]) -> dict[str, str]:
    """How the read-back's errors name the copies: by the user's files they were copied from, where they are copied
    as they are, else (a held-out dev split, a hub dataset's Parquet) by the folder they are added to."""
    out = str(request.out)
    if request.dev_size is not None or source_kind(request.source) is SourceKind.HUB:
        return {str(staging): out}
    if source_kind(request.source) is SourceKind.FILE:
        return {str(staging / files[0]): request.source, str(staging): out}
    return {str(staging): request.source.rstrip("/")}


def _check_destination(out: Path, replace: bool, track: bool) -> None:
    """Refuse, before anything is written, a folder that would replace a data set unasked, or that DVC cannot track."""
    tracked_by = out.with_name(out.name + ".dvc")
    if not replace:
        if out.exists():
            raise EgkdError(f"{out} exists: add the data under another folder, or pass --replace")
        if tracked_by.exists():
            raise EgkdError(
                f"{tracked_by} exists (a tracked data set, not checked out: `dvc checkout {tracked_by}`): add the "
                "data under another folder, or pass --replace"
            )
    if track and not out.resolve().is_relative_to(Path.cwd().resolve()):
        raise EgkdError(
            f"{out} is outside the workspace, where DVC cannot track it: name a folder inside it (data/sets/<name>), "
            "or pass --no-dvc"
        )


def _checked(where: str, params: DataParams) -> DataSource | tuple[SplitSource, ...]:
    """The data opened as the stages will open it; for files without a training split (an evaluation set, whose
    labels are the task's), the split files (their rows are read back once copied, :mod:`pipeline.intake_check`)."""
    spec = own_spec(where, params)
    if not is_glue_folder(where, params) and source_kind(where) is not SourceKind.HUB:
        splits = find_splits(spec)[1]
        if spec.label_names is None and not any(s.split == TRAIN for s in splits):
            return splits
    return open_source(where, params)


def _copy(source: DataSource | tuple[SplitSource, ...], where: str, staging: Path) -> tuple[Path, ...]:
    if not isinstance(source, DataSource):
        return tuple(Path(_copy_file(Path(s.location), staging / Path(s.location).name).name) for s in source)
    if source.glue is not None:
        task = source.task
        names = [tsv_path(Path(where), task, split) for split in task.splits]
        (staging / task.glue_dir).mkdir()
        copied = [_copy_file(path, staging / task.glue_dir / path.name) for path in names if path.is_file()]
        return tuple(Path(task.glue_dir) / p.name for p in copied)
    own = source.own
    assert own is not None
    if own.kind is SourceKind.HUB:
        written = []
        for name in (TRAIN, DEV, TEST):
            location = own.split_source(name).location
            try:
                table = read_hub(own.spec.source, own.spec.dataset_config, location)
            except EgkdError:
                if name == TRAIN:
                    raise
                continue  # a dataset without this split
            written.append(_write_parquet(table, staging / f"{name}.parquet"))
        return tuple(Path(p.name) for p in written)
    copied = []
    for split in own.splits:
        path = Path(split.location)
        name = path.name if own.kind is SourceKind.FOLDER else f"{TRAIN}{path.suffix}"
        copied.append(_copy_file(path, staging / name))
    return tuple(Path(p.name) for p in copied)


def _hold_out_dev(
    source: DataSource | tuple[SplitSource, ...], staging: Path, files: tuple[Path, ...], size: int, seed: int
) -> tuple[Path, ...]:
    """The copied training split replaced by ``train.parquet`` and ``dev.parquet``: ``size`` of its rows, drawn
    with ``seed``, become the dev split (both keep the file's row order)."""
    own = source.own if isinstance(source, DataSource) else None
    if own is None or own.kind is SourceKind.HUB:
        raise EgkdError("--dev-size holds out a dev split of own data files (a folder of split files, or one file)")
    if DEV in own.split_names:
        raise EgkdError(f"{own.spec.source} has a dev split already: --dev-size is for data without one")
    table = own.train_table
    assert table is not None
    if not 0 < size < len(table.rows):
        raise EgkdError(f"--dev-size must be between 1 and {len(table.rows) - 1} (the training rows), got {size}")
    held = set(random.Random(seed).sample(range(len(table.rows)), size))
    kept = [Path(f) for f in files if Path(f).stem != TRAIN]
    for f in files:
        if Path(f).stem == TRAIN:
            (staging / f).unlink()
    for name, keep in ((TRAIN, lambda i: i not in held), (DEV, lambda i: i in held)):
        rows = tuple(row for i, row in enumerate(table.rows) if keep(i))
        _write_parquet(dataclasses.replace(table, rows=rows), staging / f"{name}.parquet")
    return (Path(f"{TRAIN}.parquet"), Path(f"{DEV}.parquet"), *kept)


def _copy_file(path: Path, to: Path) -> Path:
    shutil.copyfile(path, to)
    return to


def _write_parquet(table: Table, path: Path) -> Path:
    """``table`` as a Parquet file; a class-label column as its names (the names are what egkd reads as labels)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = {c.column: c.names for c in table.class_names}
    columns = {}
    for index, column in enumerate(table.columns):
        values = [row.values[index] for row in table.rows]
        if column in names:
            values = [names[column][v] if isinstance(v, int) else v for v in values]
        columns[column] = values
    pq.write_table(pa.table(columns), path)
    return path


def _in_dvc_repo() -> bool:
    return Path(".dvc").is_dir()


def _dvc_add(out: Path) -> Path:
    """``dvc add out``: the data goes to DVC's cache, ``out.dvc`` (to commit) records its hash."""
    done = subprocess.run([sys.executable, "-m", "dvc", "add", str(out)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        said = [line for line in (done.stderr + done.stdout).splitlines() if line.startswith("ERROR")]
        reason = said[0].removeprefix("ERROR:").strip() if said else f"exit code {done.returncode}"
        raise EgkdError(f"dvc add {out} failed (the data is copied; run `dvc add {out}` yourself): {reason}")
    return out.with_name(out.name + ".dvc")

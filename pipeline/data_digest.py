"""The content digest of the data folders the evaluations read, so that DVC reruns them only when those change.

A stage of ``dvc.yaml`` lists its dependencies one by one and cannot take a list from the params, while the
evaluation sets (``experiment.eval_sets``) name a different number of folders in each profile. So the evaluations
depend on one small file instead: ``egkd data digest`` writes the sha256 of each folder they read (the task's, and
each set's under ``data/sets``), over its files' relative paths and bytes. That stage depends on all of ``data/sets``
and reruns whenever anything there changes (it reads no model: well under a second for SST-2); its output, and with it
every evaluation, changes only when a folder they read does. Adding a data set for another experiment reruns no
evaluation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

from pipeline.config import EvalSetParams
from pipeline.errors import EgkdError

_CHUNK = 1 << 20


def folder_digest(path: Path) -> str:
    """sha256 over every file under ``path`` (or the one file ``path``): its path relative to ``path``, its size and
    its bytes, in sorted order; empty folders count nothing."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        name = file.relative_to(path).as_posix() if path.is_dir() else file.name
        digest.update(f"{name}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as stream:
            while chunk := stream.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def evaluation_folders(data: Path, sets: Mapping[str, EvalSetParams], sets_root: Path) -> list[Path]:
    """The task's data and the folder of every set that reads another (``<sets_root>/<set's data>``), once each."""
    folders = [data]
    for name, chosen in sets.items():
        folder = chosen.folder(sets_root)  # the folder `egkd evaluate --sets-root` opens for the set
        if folder is None:
            continue
        if not folder.exists():
            raise EgkdError(f"eval set {name!r}: data folder not found: {folder} (add it with `egkd data add`)")
        if folder not in folders:
            folders.append(folder)
    return folders


def evaluation_digest(data: Path, sets: Mapping[str, EvalSetParams], sets_root: Path) -> dict[str, str]:
    """``{folder: sha256}`` of :func:`evaluation_folders`, keyed by the path as given."""
    if not data.exists():
        raise EgkdError(f"data not found: {data}")
    return {folder.as_posix(): folder_digest(folder) for folder in evaluation_folders(data, sets, sets_root)}


def write_digest(digest: Mapping[str, str], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(dict(digest), indent=2, sort_keys=True) + "\n", encoding="utf-8")

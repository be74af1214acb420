"""What a rerun of stage one keeps: the parts already in the cache that the same run made, decided from footers.

:func:`existing_parts` reads each part's footer (its metadata, index and row count; with ``verify``, every row, as
``egkd cache verify`` does) and keeps the parts that are whole and were made by the same run: same teacher weights,
tokenizer, data, method parameters, precision, libraries... (:func:`run_metadata`). A part made by another run is
refused before anything is computed, naming the differing field.

:func:`kept_run` answers a rerun that has nothing to compute without torch, transformers or the teacher's model (a
no-op ``egkd explain`` of SST-2's training split in 0.6 s instead of 2.7 s on the 2-core machine). It rebuilds the
run's metadata from what is cheap to read: the data, the settings, the teacher's weight hash, the library versions,
the precision (for ``auto``, from a CPU-only torch build's metadata: :func:`pipeline.precision.local_device_type`)
and each family's cached extras (:func:`pipeline.explain.record.cached_kinds`). The one field only a loaded
tokenizer gives, its hash, is taken from the parts when the teacher's tokenizer files are byte for byte those the
parts were made with (the hash of those files, :func:`pipeline.models.tokenizer_files_hash`, is in every part's
footer). Any doubt (a hub teacher, parts written before that record, a head drawn from a seed, a part missing,
corrupt or of another run, any error) gives None, and the run takes the full path, which decides exactly as before
and says what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import __version__, versions
from pipeline.cache.schema import SCHEMA_VERSION, CacheMetadata
from pipeline.cache.store import (
    SchemaVersionError,
    check_compatible,
    part_index,
    read_part,
    read_part_header,
    read_teacher_files,
    temp_files,
)
from pipeline.data import Dataset
from pipeline.errors import EgkdError
from pipeline.explain.record import cached_kinds, method_params_json
from pipeline.precision import local_device_type, resolve_precision
from pipeline.tasks import TaskSpec

if TYPE_CHECKING:
    from pipeline.explain.run import ExplainRequest


@dataclass(frozen=True, kw_only=True)
class TeacherFacts:
    """What the cache metadata records of the teacher."""

    weights_hash: str
    tokenizer_hash: str
    base: str  # the pretrained model it was fine-tuned from
    head_seed: int | None  # None: its own trained head; else the seed its new head was drawn from


def run_metadata(
    request: ExplainRequest,
    task: TaskSpec,
    dataset: Dataset,
    teacher: TeacherFacts,
    precision: str,
    extras: tuple[str, ...],
) -> CacheMetadata:
    """The metadata every part of this run carries; ``precision`` resolved, ``extras`` the family's cached kinds."""
    size = request.params.partition_size
    return CacheMetadata(
        schema_version=SCHEMA_VERSION,
        egkd_version=__version__,
        task=task.name,
        split=request.split,
        method=request.method.value,
        method_params=method_params_json(request.method, request.params),
        precision=precision,
        extras=extras,
        teacher=request.teacher,
        teacher_base=teacher.base,
        teacher_weights_hash=teacher.weights_hash,
        tokenizer_hash=teacher.tokenizer_hash,
        dataset_fingerprint=dataset.fingerprint,
        dataset_source=dataset.source,
        limit=request.limit,
        max_length=request.max_length,
        num_labels=task.num_labels,
        label_names=task.labels,
        partition_size=size,
        num_parts=-(-len(dataset.examples) // size),
        num_examples=len(dataset.examples),
        teacher_head_seed=teacher.head_seed,
        libraries=versions.current().pinned(),
        text_columns=() if task.is_glue else task.tsv.text_columns,
    )


def _parts(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if part_index(p) is not None) if directory.is_dir() else []


def part_files(directory: Path) -> int:
    return len(_parts(directory))


def first_part(directory: Path) -> tuple[Path, CacheMetadata] | None:
    """The first part of ``directory`` whose footer reads, and its metadata."""
    for path in _parts(directory):
        try:
            return path, read_part_header(path)[0]
        except EgkdError:
            continue
    return None


def head_known_trained(directory: Path, weights: str, task: str, num_labels: int) -> bool:
    """Whether a part already in ``directory`` shows that this teacher's checkpoint holds its trained head.

    A part made from the same weight files (same hash) for the same task and label count, with no head seed
    recorded, was made by a teacher whose checkpoint held its whole head; the same files still do. Then a rerun
    need not load the model to check it (only missing parts do, where they are computed). Any doubt (no such
    part, an unreadable one, a head drawn from a seed): False, and the caller loads the model.
    """
    found = first_part(directory)
    if found is None:
        return False
    meta = found[1]
    return (
        meta.teacher_weights_hash == weights
        and meta.task == task
        and meta.num_labels == num_labels
        and meta.teacher_head_seed is None
    )


class OtherRunParts(EgkdError):
    """Whole parts of another run (other settings, teacher, data or egkd) in the partition; raised before any part is
    computed. ``reason`` names the part and what differs."""

    def __init__(self, reason: str, directory: Path) -> None:
        self.reason = reason
        super().__init__(f"{reason}; pass --overwrite to delete {directory} and recompute it")


def existing_parts(directory: Path, meta: CacheMetadata, verify: bool) -> tuple[dict[int, int], list[str]]:
    """Valid parts of this run (index -> truncated count) and corrupt part files (to recompute).

    A part is valid when its footer parses, holds this run's metadata, its own index and the row count
    its index implies; ``verify`` also reads its rows and checks page checksums and digest. Refuses,
    before anything is computed, when a valid part was made by a different run.
    """
    kept: dict[int, int] = {}
    corrupt: list[str] = []
    for path in _parts(directory):
        try:
            if verify:
                part = read_part(path)
                part_meta, info = part.meta, part.info
            else:
                part_meta, info = read_part_header(path)
        except SchemaVersionError as err:  # whole, but another egkd's: never overwritten silently
            raise OtherRunParts(str(err), directory) from None
        except EgkdError:
            corrupt.append(path.name)
            continue
        try:
            check_compatible(part_meta, meta, context=str(path))
        except EgkdError as err:
            raise OtherRunParts(str(err), directory) from None
        index = part_index(path)
        assert index is not None
        expected_rows = min(meta.partition_size, meta.num_examples - index * meta.partition_size)
        if info.index != index or info.rows != expected_rows:
            corrupt.append(path.name)
            continue
        kept[index] = info.truncated
    beyond = [name for name in corrupt if (part_index(Path(name)) or 0) >= meta.num_parts]
    if beyond:
        reason = f"{directory / beyond[0]}: corrupt part beyond this run's {meta.num_parts} parts"
        raise OtherRunParts(reason, directory)
    return kept, corrupt


def kept_run(request: ExplainRequest, task: TaskSpec, dataset: Dataset, directory: Path) -> dict[int, int] | None:
    """Every part of this run (index -> truncated count) when all are in ``directory``, decided without torch;
    None when some part must be computed, or when only the full path can tell (see the module's docstring)."""
    if request.overwrite or request.scheduler is not None:
        return None
    try:
        return _kept_run(request, task, dataset, directory)
    except (EgkdError, OSError):  # the full path meets the same error, and says it
        return None


def _kept_run(request: ExplainRequest, task: TaskSpec, dataset: Dataset, directory: Path) -> dict[int, int] | None:
    from pipeline.models import base_model_of, read_info, tokenizer_files_hash, weights_hash

    found = first_part(directory)
    files = tokenizer_files_hash(request.teacher)  # None for a hub teacher
    if found is None or files is None or read_teacher_files(found[0]) != files:
        return None
    info = read_info(request.teacher)
    if info is not None and info.task != task.name:
        return None
    weights = weights_hash(request.teacher)
    if not head_known_trained(directory, weights, task.name, task.num_labels):
        return None
    teacher = TeacherFacts(
        weights_hash=weights,
        tokenizer_hash=found[1].tokenizer_hash,
        base=base_model_of(request.teacher),
        head_seed=None,
    )
    # The device matters to auto alone: torch is not imported to ask for it otherwise.
    auto = request.params.precision == "auto"
    precision = resolve_precision(request.params.precision, local_device_type() if auto else "cpu")
    meta = run_metadata(request, task, dataset, teacher, precision, cached_kinds(request.method))
    kept, corrupt = existing_parts(directory, meta, request.verify)
    if corrupt or len(kept) != meta.num_parts:
        return None
    for stale in temp_files(directory):  # as the full path does
        stale.unlink(missing_ok=True)
    return kept

"""The explanation cache on disk: write and read parts, read a whole partition, check metadata.

Layout (see ``docs/cache.md``)::

    <cache>/method=<method>/split=<split>/part-00000.parquet

Part ``i`` holds examples ``[i * partition_size, (i + 1) * partition_size)`` of
the dataset, in dataset order. Every part carries the run's
:class:`~pipeline.cache.schema.CacheMetadata` and its own :class:`PartInfo`
in its Parquet schema metadata, and is written atomically (temporary file,
fsync, rename), so an interrupted run leaves only whole parts behind.

Stage two uses :func:`read_cache`, :func:`list_partitions` and
:func:`check_compatible`; ``egkd cache`` uses :func:`cache_info` and
:func:`pipeline.cache.verify.verify_cache`.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.atomic import fsync
from pipeline.cache.format import (
    META_KEY,
    PART_KEY,
    TEACHER_FILES_KEY,
    PartInfo,
    metadata_json,
    parse_metadata,
    parse_part_info,
    part_digest,
    part_info_json,
    rows_to_table,
    schema_for,
    table_to_rows,
)
from pipeline.cache.schema import SCHEMA_VERSION, CachedExample, CacheMetadata
from pipeline.errors import EgkdError

__all__ = [
    "Part",
    "PartInfo",
    "CacheInfo",
    "PartitionInfo",
    "CacheExpectation",
    "part_path",
    "partition_dir",
    "write_part",
    "write_table",
    "sync_folder",
    "read_part",
    "read_part_header",
    "read_teacher_files",
    "read_cache",
    "list_partitions",
    "check_compatible",
    "cache_info",
    "part_index",
    "temp_files",
    "SchemaVersionError",
    "find_caches",
]

PART_RE = re.compile(r"^part-(\d{5})\.parquet$")
_TEMP_RE = re.compile(r"^\.part-\d{5}\.parquet\.[0-9a-f]{32}\.tmp$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class SchemaVersionError(EgkdError):
    """A part written with another cache schema version: whole, but not readable by this egkd."""


@dataclass(frozen=True)
class Part:
    path: Path
    meta: CacheMetadata
    info: PartInfo
    rows: list[CachedExample]


# --- layout ---------------------------------------------------------------------------------------


def partition_dir(root: Path, method: str, split: str) -> Path:
    for name in (method, split):
        if not _SAFE_NAME.match(name):
            raise EgkdError(f"not a valid method or split name for a cache path: {name!r}")
    return Path(root) / f"method={method}" / f"split={split}"


def part_path(root: Path, method: str, split: str, index: int) -> Path:
    return partition_dir(root, method, split) / f"part-{index:05d}.parquet"


def part_index(path: Path) -> int | None:
    match = PART_RE.match(path.name)
    return int(match.group(1)) if match else None


def temp_files(directory: Path) -> list[Path]:
    """Temporary files left in a partition by interrupted writes."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if _TEMP_RE.match(p.name))


# --- parts ----------------------------------------------------------------------------------------


def write_part(path: Path, meta: CacheMetadata, index: int, rows: Sequence[CachedExample], truncated: int) -> PartInfo:
    """Write one part of these rows atomically (:func:`write_table`)."""
    return write_table(path, meta, index, rows_to_table(rows, meta.extras), truncated)


def write_table(
    path: Path,
    meta: CacheMetadata,
    index: int,
    table: pa.Table,
    truncated: int,
    fsync_folder: bool = True,
    teacher_files: str | None = None,
) -> PartInfo:
    """Write one part atomically: a temporary file in the same folder, fsync, then rename over ``path``.

    ``table`` holds the part's rows in :func:`~pipeline.cache.format.schema_for` ``(meta.extras)``. The file is
    on disk before the rename, so a part is whole or absent even after a power loss; ``fsync_folder`` then
    syncs the folder too, which makes the rename durable (a writer of many parts syncs it once, after the
    last: :func:`sync_folder`). ``teacher_files``: the teacher's tokenizer files the metadata's tokenizer hash was
    computed from (:func:`read_teacher_files`).
    """
    if not table.schema.equals(schema_for(meta.extras), check_metadata=False):
        raise ValueError(f"part {index}: columns differ from the cache schema")
    info = PartInfo(index=index, rows=table.num_rows, truncated=truncated, digest=part_digest(meta, index, table))
    footer = {META_KEY: metadata_json(meta), PART_KEY: part_info_json(info)}
    if teacher_files is not None:
        footer[TEACHER_FILES_KEY] = teacher_files.encode("ascii")
    table = table.replace_schema_metadata(footer)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        # A path, not a Python file object: Arrow writes natively, without holding the interpreter lock. Snappy and
        # no dictionaries (the columns are numbers and unique ids): a part decodes in half the time zstd with
        # dictionaries took, at the same size, and stage two reads every part of a cache (benchmarks/fixed_costs.py).
        pq.write_table(
            table,
            str(temp),
            compression="snappy",
            use_dictionary=False,
            write_statistics=False,
            write_page_checksum=True,
        )
        fsync(temp)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    if fsync_folder:
        fsync(path.parent)
    return info


def sync_folder(directory: Path) -> None:
    """Make the renames of the parts written into ``directory`` with ``fsync_folder=False`` durable."""
    fsync(directory)


def _header(schema_metadata: dict[bytes, bytes] | None, path: Path) -> tuple[CacheMetadata, PartInfo]:
    if not schema_metadata or META_KEY not in schema_metadata or PART_KEY not in schema_metadata:
        raise EgkdError(f"{path}: not an egkd cache part (no egkd metadata)")
    version = _schema_version(schema_metadata[META_KEY])
    if version is not None and version != SCHEMA_VERSION:  # checked first: other versions have other fields
        raise SchemaVersionError(
            f"{path}: cache field 'schema_version' differs: cache has {version}, this egkd "
            f"reads {SCHEMA_VERSION}; recompute the cache with this egkd"
        )
    try:
        meta = parse_metadata(schema_metadata[META_KEY])
        info = parse_part_info(schema_metadata[PART_KEY])
    except (ValueError, UnicodeDecodeError) as err:
        raise EgkdError(f"{path}: corrupt part metadata ({err})") from None
    return meta, info


def _schema_version(raw: bytes) -> int | None:
    """The ``schema_version`` of a metadata JSON, read before anything else of it; None if unreadable."""
    try:
        version = json.loads(raw.decode("utf-8")).get("schema_version")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    return version if isinstance(version, int) and not isinstance(version, bool) else None


def read_part_header(path: Path) -> tuple[CacheMetadata, PartInfo]:
    """The metadata of one part, from its footer only (fast; does not check the rows)."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise EgkdError(f"{path}: unreadable part ({str(err).splitlines()[0]})") from None
    return _header(schema.metadata, path)


def read_teacher_files(path: Path) -> str | None:
    """The hash of the teacher's tokenizer files a part records (:func:`pipeline.models.tokenizer_files_hash`); None
    when it records none (a hub teacher, a part written before it was recorded) or cannot be read."""
    try:
        raw = (pq.read_schema(path).metadata or {}).get(TEACHER_FILES_KEY)
        return None if raw is None else raw.decode("ascii")
    except (OSError, pa.ArrowException, UnicodeDecodeError):
        return None


def read_part(path: Path) -> Part:
    """Read and check one part: page checksums, schema, part index, row count and content digest."""
    table, meta, info = _checked_table(path)
    return Part(path, meta, info, _rows(table, meta, path))


def _checked_table(path: Path) -> tuple[pa.Table, CacheMetadata, PartInfo]:
    """One part's table after every check but its rows': page checksums, schema, index, row count and digest."""
    try:
        table = pq.ParquetFile(path, page_checksum_verification=True).read()
    except (OSError, pa.ArrowException) as err:
        raise EgkdError(f"{path}: unreadable part ({str(err).splitlines()[0]})") from None
    meta, info = _header(table.schema.metadata, path)
    try:
        expected = schema_for(meta.extras)
    except ValueError as err:
        raise EgkdError(f"{path}: {err}") from None
    if not table.schema.equals(expected, check_metadata=False):
        raise EgkdError(f"{path}: columns differ from the cache schema")
    expected_index = part_index(path)
    if info.index != expected_index:
        raise EgkdError(f"{path}: holds part {info.index}, not part {expected_index}")
    if info.rows != table.num_rows:
        raise EgkdError(f"{path}: {table.num_rows} rows, its metadata says {info.rows}")
    if part_digest(meta, info.index, table) != info.digest:
        raise EgkdError(f"{path}: content does not match its digest (corrupt part)")
    return table, meta, info


def _rows(table: pa.Table, meta: CacheMetadata, path: Path) -> list[CachedExample]:
    try:
        return table_to_rows(table, meta)
    except ValueError as err:
        raise EgkdError(f"{path}: corrupt rows ({err})") from None


# --- whole partitions -----------------------------------------------------------------------------


def partition_digest(root: Path, method: str, split: str) -> str:
    """The sha256 of a partition's parts' digests, read from their footers: it changes with any part's content or
    run metadata (a reader checks each part against its digest, :func:`read_cache`)."""
    digest = hashlib.sha256(f"{method}/{split}".encode())
    for path in sorted(partition_dir(root, method, split).glob("part-*.parquet")):
        digest.update(read_part_header(path)[1].digest.encode())
    return digest.hexdigest()


def list_partitions(root: Path) -> list[tuple[str, str]]:
    """The ``(method, split)`` partitions of a cache that hold at least one part file."""
    found = []
    for directory in sorted(Path(root).glob("method=*/split=*")):
        if directory.is_dir() and any(part_index(p) is not None for p in directory.iterdir()):
            found.append((directory.parent.name.removeprefix("method="), directory.name.removeprefix("split=")))
    return found


def _finish_hint(method: str, split: str) -> str:
    return (
        f"finish it by rerunning `egkd explain --method {method} --split {split} ...` with the same "
        "options: it computes only the missing parts"
    )


def _repair_hint(method: str, split: str) -> str:
    return (
        f"recompute it by rerunning `egkd explain --method {method} --split {split} ...` with the same options and "
        "--verify (every part read in full, a corrupt one computed again)"
    )


def read_cache(root: Path, method: str, split: str) -> tuple[CacheMetadata, list[CachedExample]]:
    """Every row of one (method, split) partition in dataset order, after checking all its parts.

    The parts are checked one by one (page checksums, schema, index, rows, digest), then made into rows at once,
    with the cycle collector off: a conversion per part and a collector scanning the growing heap were two thirds of
    the time a large partition took to read.
    """
    directory = partition_dir(root, method, split)
    files = (
        sorted(p for p in directory.glob("part-*.parquet") if part_index(p) is not None) if directory.is_dir() else []
    )
    if not files:
        available = ", ".join(f"{m}/{s}" for m, s in list_partitions(root)) or "none"
        raise EgkdError(f"no cache for method={method} split={split} in {root} (available: {available})")
    parts: list[tuple[Path, pa.Table, CacheMetadata, PartInfo]] = []
    for path in files:
        try:
            parts.append((path, *_checked_table(path)))
        except SchemaVersionError:
            raise
        except EgkdError as err:
            raise EgkdError(f"{err}; {_repair_hint(method, split)}") from None
    meta = parts[0][2]
    for path, _, part_meta, _ in parts[1:]:
        check_compatible(part_meta, meta, context=str(path))
    check_compatible(
        meta,
        CacheExpectation(method=method, split=split),
        context=str(files[0]),
        hint=f"the folder {directory.relative_to(root)} holds another partition's parts",
    )
    present = {info.index for *_, info in parts}
    missing = [i for i in range(meta.num_parts) if i not in present]
    if missing:
        names = ", ".join(f"part-{i:05d}" for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise EgkdError(
            f"cache {directory} is incomplete: {len(missing)} of {meta.num_parts} parts missing "
            f"({names}); {_finish_hint(method, split)}"
        )
    if max(present) >= meta.num_parts:
        raise EgkdError(f"{directory}: part {max(present)} is beyond the {meta.num_parts} parts of this run")
    if sum(info.rows for *_, info in parts) != meta.num_examples:
        total = sum(info.rows for *_, info in parts)
        raise EgkdError(f"cache {directory} holds {total} rows, its metadata says {meta.num_examples}")
    ordered = sorted(parts, key=lambda part: part[3].index)
    with _no_cycle_collection():
        try:  # one table of the checked parts in dataset order, made into rows at once: not a part at a time
            rows = table_to_rows(pa.concat_tables([table.replace_schema_metadata() for _, table, *_ in ordered]), meta)
        except ValueError:  # name the part
            try:
                rows = [row for path, table, *_ in ordered for row in _rows(table, meta, path)]
            except EgkdError as err:
                raise EgkdError(f"{err}; {_repair_hint(method, split)}") from None
    return meta, rows


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector off while a partition's rows are made, then as it was.

    A training partition is a million small objects (each row, its extras and their arrays), none in a cycle; made
    with the collector on, it scans the growing heap again and again: 0.7 of the 2 s that 67,349 rows took.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def find_caches(paths: Sequence[Path]) -> list[Path]:
    """Each path is a cache, or a folder whose sub-folders (one level down) are caches."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.is_dir():
            raise EgkdError(f"explanation cache not found: {path}")
        if any(path.glob("method=*")):
            found.append(path)
            continue
        inside = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("method=*")))
        if not inside:
            raise EgkdError(f"no explanation cache in {path} (a cache holds method=<m>/split=<s>/ folders)")
        found.extend(inside)
    return found


def is_cache(path: Path) -> bool:
    """Whether ``path`` is one cache (``method=*`` partitions), not a folder of caches."""
    return any(Path(path).glob("method=*"))


def family_cache(folder: Path, method: str, task: str | None = None, option: str = "--cache") -> Path:
    """The one cache in ``folder`` (a folder of caches) holding ``method``'s train split (of ``task``, if given:
    a folder may keep the caches of another task explained earlier)."""
    holders = [c for c in find_caches([Path(folder)]) if (method, "train") in list_partitions(c)]
    if task is not None:
        holders = [c for c in holders if _first_header(c, method).task == task]
    if len(holders) != 1:
        found = ", ".join(c.name for c in holders) if holders else "none"
        of = "" if task is None else f" of task {task}"
        raise EgkdError(
            f"caches in {folder}: {len(holders)} hold the {method} family's train split{of} ({found}); "
            f"name one with {option}"
        )
    return holders[0]


def _first_header(root: Path, method: str) -> CacheMetadata:
    directory = partition_dir(root, method, "train")
    first = sorted(p for p in directory.glob("part-*.parquet") if part_index(p) is not None)[0]
    return read_part_header(first)[0]


# --- metadata checks ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CacheExpectation:
    """What a consumer requires of a cache; ``None`` fields are not checked."""

    schema_version: int | None = SCHEMA_VERSION
    task: str | None = None
    split: str | None = None
    method: str | None = None
    teacher_weights_hash: str | None = None
    tokenizer_hash: str | None = None
    dataset_fingerprint: str | None = None
    max_length: int | None = None
    num_labels: int | None = None


def check_compatible(
    meta: CacheMetadata,
    expected: CacheMetadata | CacheExpectation,
    fields: Sequence[str] | None = None,
    context: str = "",
    hint: str = "",
) -> None:
    """Refuse a cache whose metadata differs from ``expected``, naming the first differing field.

    With a :class:`CacheMetadata`, every field (or only those named in ``fields``)
    is compared; with a :class:`CacheExpectation`, its non-None fields.
    """
    names = list(fields) if fields is not None else [f.name for f in dataclasses.fields(expected)]
    for name in names:
        want = getattr(expected, name)
        if isinstance(expected, CacheExpectation) and want is None:
            continue
        have = getattr(meta, name)
        if have != want:
            where = f"{context}: " if context else ""
            tail = f"; {hint}" if hint else ""
            raise EgkdError(f"{where}cache field {name!r} differs: cache has {have!r}, expected {want!r}{tail}")


# --- summary --------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PartitionInfo:
    method: str
    split: str
    parts_present: int
    parts_expected: int | None  # None when no part's metadata could be read
    rows: int
    truncated: int
    bytes: int
    unreadable: tuple[str, ...]  # part files whose metadata could not be read
    metadata: CacheMetadata | None

    @property
    def complete(self) -> bool:
        return not self.unreadable and self.parts_present == self.parts_expected


@dataclass(frozen=True)
class CacheInfo:
    path: Path
    partitions: list[PartitionInfo]

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.partitions)

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)


def cache_info(root: Path) -> CacheInfo:
    """Methods, splits, parts, rows and sizes of a cache, from part footers only (fast)."""
    root = Path(root)
    if not root.is_dir():
        raise EgkdError(f"cache not found: {root}")
    partitions = []
    for method, split in list_partitions(root):
        files = sorted(p for p in partition_dir(root, method, split).iterdir() if part_index(p) is not None)
        rows = truncated = 0
        unreadable: list[str] = []
        meta: CacheMetadata | None = None
        for path in files:
            try:
                part_meta, info = read_part_header(path)
            except EgkdError:
                unreadable.append(path.name)
                continue
            meta = meta or part_meta
            rows += info.rows
            truncated += info.truncated
        partitions.append(
            PartitionInfo(
                method=method,
                split=split,
                parts_present=len(files) - len(unreadable),
                parts_expected=meta.num_parts if meta else None,
                rows=rows,
                truncated=truncated,
                bytes=sum(p.stat().st_size for p in files),
                unreadable=tuple(unreadable),
                metadata=meta,
            )
        )
    return CacheInfo(root, partitions)

"""A full check of an explanation cache: every part, every row (``egkd cache verify``).

:func:`verify_cache` reads every part of every partition and reports each
problem with the file it is in: unreadable or corrupt parts (Parquet page
checksums and the sha256 digest of the decoded rows), columns that differ from
the schema, metadata that differs between the parts of one run, missing or
extra parts, wrong row counts, duplicate example ids, token-level arrays whose
lengths disagree, extras that differ from the method's declaration, and values that are not finite.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.cache.extras import problems as extra_problems
from pipeline.cache.schema import CachedExample, CacheMetadata
from pipeline.cache.store import Part, list_partitions, part_index, partition_dir, read_part, temp_files
from pipeline.errors import EgkdError


@dataclass(frozen=True)
class Problem:
    path: Path  # the part file, or the partition folder for problems of the whole partition
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class PartitionReport:
    method: str
    split: str
    parts: int  # readable parts
    rows: int  # rows in readable parts


@dataclass(frozen=True)
class VerifyReport:
    path: Path
    partitions: list[PartitionReport]
    problems: list[Problem]
    notes: list[str]  # harmless findings, e.g. temporary files of an interrupted write

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def bad_parts(self) -> list[Path]:
        return sorted({p.path for p in self.problems if part_index(p.path) is not None})


def verify_cache(root: Path) -> VerifyReport:
    root = Path(root)
    if not root.is_dir():
        raise EgkdError(f"cache not found: {root}")
    partitions: list[PartitionReport] = []
    problems: list[Problem] = []
    notes: list[str] = []
    found = list_partitions(root)
    if not found:
        problems.append(Problem(root, "no cache partitions (method=<m>/split=<s>/part-*.parquet)"))
    for method, split in found:
        directory = partition_dir(root, method, split)
        report, partition_problems = _verify_partition(directory, method, split)
        partitions.append(report)
        problems.extend(partition_problems)
        notes.extend(f"{p}: temporary file of an interrupted write (harmless)" for p in temp_files(directory))
    return VerifyReport(root, partitions, problems, notes)


def _verify_partition(directory: Path, method: str, split: str) -> tuple[PartitionReport, list[Problem]]:
    problems: list[Problem] = []
    parts: list[Part] = []
    for path in sorted(p for p in directory.iterdir() if part_index(p) is not None):
        try:
            parts.append(read_part(path))
        except EgkdError as err:
            problems.append(Problem(path, str(err).removeprefix(f"{path}: ")))
    report = PartitionReport(method, split, len(parts), sum(p.info.rows for p in parts))
    if not parts:
        return report, problems
    reference = parts[0].meta
    if (reference.method, reference.split) != (method, split):
        problems.append(
            Problem(
                parts[0].path,
                f"metadata says method={reference.method} split={reference.split}, the folder {method}/{split}",
            )
        )
    for part in parts[1:]:
        for name, have, want in _differences(part.meta, reference):
            problems.append(
                Problem(part.path, f"metadata field {name!r} is {have!r}, {parts[0].path.name} has {want!r}")
            )
    present = {part.info.index for part in parts}
    broken = {part_index(p.path) for p in problems}
    missing = [i for i in range(reference.num_parts) if i not in present and i not in broken]
    if missing:
        names = ", ".join(f"part-{i:05d}" for i in missing)
        problems.append(Problem(directory, f"incomplete: missing {names} of {reference.num_parts} parts"))
    seen: dict[str, Path] = {}
    for part in parts:
        problems.extend(_check_part(part, reference, seen))
    return report, problems


def _differences(meta: CacheMetadata, reference: CacheMetadata) -> Iterator[tuple[str, object, object]]:
    for name in CacheMetadata.__dataclass_fields__:
        if getattr(meta, name) != getattr(reference, name):
            yield name, getattr(meta, name), getattr(reference, name)


def _check_part(part: Part, meta: CacheMetadata, seen: dict[str, Path]) -> list[Problem]:
    problems = []
    index = part.info.index
    if index >= meta.num_parts:
        return [Problem(part.path, f"part {index} is beyond the {meta.num_parts} parts of this run")]
    expected_rows = min(meta.partition_size, meta.num_examples - index * meta.partition_size)
    if part.info.rows != expected_rows:
        problems.append(Problem(part.path, f"{part.info.rows} rows, expected {expected_rows}"))
    for row in part.rows:
        if row.example_id in seen:
            problems.append(
                Problem(part.path, f"duplicate example id {row.example_id!r} (also in {seen[row.example_id].name})")
            )
        seen.setdefault(row.example_id, part.path)
        problems.extend(Problem(part.path, f"row {row.example_id!r}: {message}") for message in _check_row(row, meta))
    return problems


def _check_row(row: CachedExample, meta: CacheMetadata) -> Iterator[str]:
    tokens = len(row.input_ids)
    if row.split != meta.split:
        yield f"split {row.split!r}, the partition is {meta.split!r}"
    for name in ("token_type_ids", "segments", "special_mask", "attribution", "offsets"):
        if len(getattr(row, name)) != tokens:
            yield f"{name} has {len(getattr(row, name))} entries for {tokens} tokens"
    if len(row.attribution) == len(row.special_mask) == tokens and row.attribution[row.special_mask].any():
        yield "attribution is not zero at special tokens"
    if len(row.teacher_logits) != meta.num_labels:
        yield f"teacher_logits has {len(row.teacher_logits)} entries for {meta.num_labels} labels"
    if row.extras.kinds != meta.extras:
        yield f"extras {list(row.extras.kinds)}, the run's metadata says {list(meta.extras)}"
    yield from extra_problems(row.extras, tokens, meta.num_labels)
    for name in ("attribution", "teacher_logits"):
        if not np.isfinite(getattr(row, name)).all():
            yield f"{name} has values that are not finite"

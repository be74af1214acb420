"""The Parquet cache format: round trips, atomic writes, corruption, metadata checks, info and verify."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from rows import assert_rows_equal, make_meta, make_rows

from pipeline.cache import store as cache_module
from pipeline.cache.schema import CacheMetadata
from pipeline.cache.store import (
    CacheExpectation,
    cache_info,
    check_compatible,
    list_partitions,
    part_path,
    read_cache,
    read_part,
    read_part_header,
    temp_files,
    write_part,
)
from pipeline.cache.verify import verify_cache
from pipeline.errors import EgkdError
from pipeline.methods import Method


def write_partition(
    root: Path, method: str = "perturbation", num_examples: int = 10, size: int = 4, **meta_changes
) -> CacheMetadata:
    meta = make_meta(method, num_examples, size, **meta_changes)
    for index in range(meta.num_parts):
        count = min(size, num_examples - index * size)
        write_part(part_path(root, method, "dev", index), meta, index, make_rows(method, index * size, count), 0)
    return meta


@pytest.mark.parametrize("method", [m.value for m in Method])
def test_round_trip(tmp_path: Path, method: str) -> None:
    meta = make_meta(method)
    rows = make_rows(method, 0, 4)
    info = write_part(part_path(tmp_path, method, "dev", 0), meta, 0, rows, truncated=2)
    part = read_part(part_path(tmp_path, method, "dev", 0))
    assert part.meta == meta and part.info == info and info.rows == 4 and info.truncated == 2
    assert_rows_equal(part.rows, rows)
    assert read_part_header(part.path) == (meta, info)


def test_read_cache_concatenates_parts_in_order(tmp_path: Path) -> None:
    meta = write_partition(tmp_path)
    read_meta, rows = read_cache(tmp_path, "perturbation", "dev")
    assert read_meta == meta
    assert [r.example_id for r in rows] == [f"dev-{i}" for i in range(10)]
    assert list_partitions(tmp_path) == [("perturbation", "dev")]


def test_atomic_write_leaves_no_temp_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_partition(tmp_path)
    directory = part_path(tmp_path, "perturbation", "dev", 0).parent
    assert sorted(p.name for p in directory.iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.pq, "write_table", broken)
    target = part_path(tmp_path, "perturbation", "dev", 7)
    with pytest.raises(OSError):
        write_part(target, make_meta(), 7, make_rows("perturbation", 0, 2), 0)
    assert not target.exists() and temp_files(directory) == []
    assert len(list(directory.iterdir())) == 3


def test_truncated_and_flipped_parts_are_named(tmp_path: Path) -> None:
    write_partition(tmp_path)
    truncated = part_path(tmp_path, "perturbation", "dev", 0)
    truncated.write_bytes(truncated.read_bytes()[:-100])
    flipped = part_path(tmp_path, "perturbation", "dev", 2)
    flip_byte_in_column(flipped, "attribution")
    for path in (truncated, flipped):
        with pytest.raises(EgkdError, match=path.name):
            read_part(path)
    with pytest.raises(EgkdError, match="part-00000.parquet"):
        read_cache(tmp_path, "perturbation", "dev")
    report = verify_cache(tmp_path)
    assert not report.ok and report.bad_parts == [truncated, flipped]


def flip_byte_in_column(path: Path, column: str) -> None:
    """Flip one bit in the middle of a column chunk's data (not in headers or the footer)."""
    metadata = pq.ParquetFile(path).metadata
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    chunk = metadata.row_group(0).column(next(i for i, n in enumerate(names) if n.startswith(column)))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    position = start + chunk.total_compressed_size - 8
    data = bytearray(path.read_bytes())
    data[position] ^= 0x10
    path.write_bytes(bytes(data))


def test_missing_part_says_incomplete_and_how_to_finish(tmp_path: Path) -> None:
    write_partition(tmp_path)
    part_path(tmp_path, "perturbation", "dev", 1).unlink()
    with pytest.raises(EgkdError, match=r"incomplete: 1 of 3 parts missing \(part-00001\).*egkd explain"):
        read_cache(tmp_path, "perturbation", "dev")
    report = verify_cache(tmp_path)
    assert [str(p) for p in report.problems] == [
        f"{part_path(tmp_path, 'perturbation', 'dev', 0).parent}: incomplete: missing part-00001 of 3 parts"
    ]
    with pytest.raises(EgkdError, match="no cache for method=gradient split=dev.*perturbation/dev"):
        read_cache(tmp_path, "gradient", "dev")


def test_teacher_head_seed_is_stored_only_when_set_so_older_parts_keep_their_digests(tmp_path: Path) -> None:
    import json

    from pipeline.cache.format import metadata_json, parse_metadata

    own_head = make_meta(num_examples=4)
    assert "teacher_head_seed" not in json.loads(metadata_json(own_head))  # as written before the field existed
    assert parse_metadata(metadata_json(own_head)) == own_head
    new_head = make_meta(teacher_head_seed=3)
    assert json.loads(metadata_json(new_head))["teacher_head_seed"] == 3
    assert parse_metadata(metadata_json(new_head)) == new_head
    write_part(part_path(tmp_path, "perturbation", "dev", 0), own_head, 0, make_rows("perturbation", 0, 4), 0)
    assert verify_cache(tmp_path).ok
    with pytest.raises(ValueError, match="metadata fields differ"):
        parse_metadata(metadata_json(own_head)[:-1] + b', "surprise": 1}')


def test_check_compatible_names_the_field() -> None:
    meta = make_meta()
    check_compatible(meta, meta)
    check_compatible(meta, CacheExpectation(task="mrpc", method="perturbation"))
    other = dataclasses.replace(meta, tokenizer_hash="x")
    with pytest.raises(EgkdError, match=f"cache field 'tokenizer_hash' differs: cache has '{'k' * 64}', expected 'x'"):
        check_compatible(meta, other)
    check_compatible(meta, other, fields=["task", "method"])
    with pytest.raises(EgkdError, match="cache field 'split' differs"):
        check_compatible(meta, CacheExpectation(split="train"))


def test_cache_info(tmp_path: Path) -> None:
    write_partition(tmp_path)
    write_partition(tmp_path, method="gradient", num_examples=5, size=5)
    part_path(tmp_path, "perturbation", "dev", 2).unlink()
    info = cache_info(tmp_path)
    by_method = {p.method: p for p in info.partitions}
    assert by_method["gradient"].complete and by_method["gradient"].rows == 5
    assert not by_method["perturbation"].complete
    assert (by_method["perturbation"].parts_present, by_method["perturbation"].parts_expected) == (2, 3)
    assert info.rows == 13 and info.bytes > 0
    with pytest.raises(EgkdError, match="cache not found"):
        cache_info(tmp_path / "nope")


def test_verify_finds_row_level_problems(tmp_path: Path) -> None:
    meta = make_meta("feature_selection", num_examples=4, partition_size=2)
    rows = make_rows("feature_selection", 0, 4)
    bad_length = dataclasses.replace(rows[1], attribution=rows[1].attribution[:-1])
    nan = rows[2].teacher_logits.copy()
    nan[0] = np.nan
    write_part(part_path(tmp_path, "feature_selection", "dev", 0), meta, 0, [rows[0], bad_length], 0)
    write_part(
        part_path(tmp_path, "feature_selection", "dev", 1),
        meta,
        1,
        [dataclasses.replace(rows[2], teacher_logits=nan, example_id="dev-0"), rows[3]],
        0,
    )
    problems = [str(p) for p in verify_cache(tmp_path).problems]
    assert any("part-00000.parquet: row 'dev-1': attribution has" in p for p in problems)
    assert any("part-00001.parquet: duplicate example id 'dev-0'" in p for p in problems)
    assert any("part-00001.parquet: row 'dev-0': teacher_logits has values that are not finite" in p for p in problems)


def test_verify_finds_metadata_that_differs_between_parts(tmp_path: Path) -> None:
    write_partition(tmp_path)
    other = make_meta(teacher_weights_hash="other")
    write_part(part_path(tmp_path, "perturbation", "dev", 1), other, 1, make_rows("perturbation", 4, 4), 0)
    problems = [str(p) for p in verify_cache(tmp_path).problems]
    assert problems == [
        f"{part_path(tmp_path, 'perturbation', 'dev', 1)}: metadata field "
        f"'teacher_weights_hash' is 'other', part-00000.parquet has '{'w' * 64}'"
    ]
    with pytest.raises(EgkdError, match="part-00001.parquet: cache field 'teacher_weights_hash' differs"):
        read_cache(tmp_path, "perturbation", "dev")


def test_verify_ok_and_unsafe_names_refused(tmp_path: Path) -> None:
    write_partition(tmp_path)
    report = verify_cache(tmp_path)
    assert report.ok and report.partitions[0].rows == 10 and report.partitions[0].parts == 3
    with pytest.raises(EgkdError, match="not a valid method or split"):
        part_path(tmp_path, "../x", "dev", 0)

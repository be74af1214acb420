"""The explanation cache: the contract between stage one and stage two.

* :mod:`~pipeline.cache.extras`: what a method caches beyond the attribution, declared once as columns;
* :mod:`~pipeline.cache.schema`: the typed row and the run's metadata;
* :mod:`~pipeline.cache.format`: rows and metadata <-> Arrow tables, JSON and digests;
* :mod:`~pipeline.cache.store`: the Parquet layout on disk, atomic parts, reading and checking a partition;
* :mod:`~pipeline.cache.verify`: ``egkd cache verify``, every part and row;
* :mod:`~pipeline.cache.project`: cached rows on a student's tokens, and padded student batches.
"""

from pipeline.cache.extras import Extra, Extras, Selection, Views
from pipeline.cache.schema import SCHEMA_VERSION, CachedExample, CacheMetadata
from pipeline.cache.store import (
    CacheExpectation,
    SchemaVersionError,
    check_compatible,
    list_partitions,
    part_path,
    partition_dir,
    read_cache,
    read_part,
    write_part,
)

__all__ = [
    "SCHEMA_VERSION",
    "CacheExpectation",
    "CacheMetadata",
    "CachedExample",
    "Extra",
    "Extras",
    "SchemaVersionError",
    "Selection",
    "Views",
    "check_compatible",
    "list_partitions",
    "part_path",
    "partition_dir",
    "read_cache",
    "read_part",
    "write_part",
]

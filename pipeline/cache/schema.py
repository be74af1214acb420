"""What one explanation cache holds: typed rows and metadata.

The cache is a Hive-partitioned Parquet dataset,
``<cache>/method=<method>/split=<split>/part-<n>.parquet``, one row per
example (see ``docs/cache.md``). Stage two reads :class:`CachedExample` rows
and checks :class:`CacheMetadata` before it trains; it never loads the teacher.

Every row has the same core fields; what a method caches beyond them is its
:class:`~pipeline.cache.extras.Extras`, named in the metadata's ``extras``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.cache.extras import Extras

# 2: segment ids, extras declared by the method; 3: precision, random draws of (seed, example, position);
# 4 (both unreleased, one version): the part digest covers each column's Arrow values
# (pipeline.cache.format.part_digest), not decoded rows; every family caches label-preserving, contrastive and
# random views, the gradient family its magnitude map
SCHEMA_VERSION = 4


@dataclass(frozen=True, kw_only=True)
class CachedExample:
    example_id: str
    split: str
    label: float | int | None
    text_a: str
    text_b: str | None
    input_ids: np.ndarray  # (T,) int32, the teacher tokenizer's ids
    token_type_ids: np.ndarray  # (T,) int8, what the teacher was given
    segments: np.ndarray  # (T,) int8: 0 text_a, 1 text_b, -1 special tokens (whatever the token type ids say)
    special_mask: np.ndarray  # (T,) bool
    offsets: np.ndarray  # (T, 2) int32, character spans within each token's own segment
    attribution: np.ndarray  # (T,) float32, zero at special tokens
    teacher_logits: np.ndarray  # (C,) float32
    extras: Extras = field(default_factory=Extras)  # the method's own: views, a selection...


@dataclass(frozen=True, kw_only=True)
class CacheMetadata:
    """Recorded in every part's Parquet schema metadata; identical across the parts of one run."""

    schema_version: int
    egkd_version: str
    task: str
    split: str
    method: str
    method_params: str  # JSON of the method's parameters
    precision: str  # "fp32" or "bf16": the teacher's forwards (resolved, never "auto")
    extras: tuple[str, ...]  # the kinds of extras every row carries (pipeline.cache.extras.KINDS)
    teacher: str  # the teacher reference as given
    teacher_base: str  # the pretrained model the teacher was fine-tuned from
    teacher_weights_hash: str
    tokenizer_hash: str
    dataset_fingerprint: str
    dataset_source: str
    limit: int | None
    max_length: int
    num_labels: int
    label_names: tuple[str, ...] | None
    partition_size: int
    num_parts: int
    num_examples: int
    # None: the teacher's own trained classification head; a seed: its checkpoint had none, and the head was
    # newly initialised from this seed (egkd explain --allow-new-head). Absent in caches written before it.
    teacher_head_seed: int | None = None
    # The libraries the teacher's forwards ran with (pipeline.versions: "torch==2.13.0+cpu", ...); a run resumes only
    # with the same ones, so one cache never mixes their numerics. Empty in caches written before it was recorded.
    libraries: tuple[str, ...] = ()
    # Own data (pipeline.sources): its one or two text columns, from which stage two rebuilds the task with label_names
    # (pipeline.sources.task_of); empty for a GLUE task, which is looked up by name.
    text_columns: tuple[str, ...] = ()

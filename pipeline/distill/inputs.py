"""Everything stage two reads before it trains, through one loader: :func:`load_inputs` (:func:`loaded_inputs`
keeps what it read out of Python's cycle collector while a run trains on it).

The training rows of the cache's partition (their gold labels kept for the first ``gold_labels``), the transfer
split's rows (``distill.transfer``), another family's views in place of the rows' own (``distill.view_method``,
``--view-cache``), the dev rows, and where the student's weights come from (the fine-tuned teacher's, checked
against the cache's weight hash; its base model's; or another model). Every check that can refuse the run is made
here, before a model is built.
"""

from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.cache.schema import CachedExample, CacheMetadata
from pipeline.cache.store import CacheExpectation, check_compatible, list_partitions, partition_digest, read_cache
from pipeline.config import DistillParams
from pipeline.data import TRANSFER
from pipeline.distill.view_term import ViewTerm, view_source, views_from
from pipeline.errors import EgkdError
from pipeline.methods import Method

TEACHER = "teacher"  # distill.student: the first `layers` layers of the fine-tuned teacher that made the cache
BASE = "base"  # distill.student: those of the teacher's base model (as null; needs nothing but the cache)

# Fields in which the dev partition must agree with the train partition.
_SAME_RUN = ("task", "teacher_weights_hash", "tokenizer_hash", "num_labels", "label_names", "max_length")
# And the transfer partition, whose maps and views the student learns as it learns the train partition's.
_SAME_EXPLANATIONS = (*_SAME_RUN, "method", "method_params", "extras")


@dataclass(frozen=True, kw_only=True)
class DistillInputs:
    """What a student is trained from, read and checked before training."""

    meta: CacheMetadata  # the training partition's
    train_rows: list[CachedExample]  # labels kept for the first gold_labels, the transfer rows after them
    transfer_rows: int  # how many of train_rows come from the transfer split
    dev_rows: list[CachedExample]  # empty when the cache has no dev partition
    view_meta: CacheMetadata  # the cache whose views train_rows carry (meta, or another family's)
    view_cache: Path
    views_from: str | None  # another family's views: whose, and from which cache
    student: str  # the model reference the student's weights come from
    layers: int | None  # the layers it keeps (None: all of another model)
    digest: str  # of the partitions the rows were read from (their parts' digests): what the run learns from


def load_inputs(
    cache: Path, params: DistillParams, view_cache: Path | None = None, method: Method | None = None
) -> DistillInputs:
    """Read and check every input of a run on ``cache`` with ``params`` (``method``: the objective's family)."""
    meta, train_rows, dev_rows = load_rows(cache, _partition_method(cache, method))
    train_rows = with_gold_labels(train_rows, params.gold_labels)
    transfer_rows = load_transfer_rows(cache, meta) if params.transfer else []
    train_rows += transfer_rows
    view_meta, views_cache, views_note = meta, cache, None
    source = view_source(cache, view_cache, params.view_method, Method(meta.method))
    if source is not None:
        if ViewTerm.of(params, 0) is None:
            raise EgkdError("another family's views are asked for, but the view term is off (distill.views is 0)")
        splits = ["train", TRANSFER] if transfer_rows else ["train"]
        train_rows, view_meta = views_from(train_rows, meta, source, params.view_method, splits)
        views_cache, views_note = source, f"the {view_meta.method} family's, from {source}"
    student, layers = student_source(meta, params)
    read = [(cache, meta.method, split) for split in (["train", TRANSFER] if transfer_rows else ["train"])]
    if source is not None:
        read += [(source, view_meta.method, split) for split in splits]
    return DistillInputs(
        digest=hashlib.sha256(" ".join(partition_digest(*partition) for partition in read).encode()).hexdigest(),
        meta=meta,
        train_rows=train_rows,
        transfer_rows=len(transfer_rows),
        dev_rows=dev_rows,
        view_meta=view_meta,
        view_cache=views_cache,
        views_from=views_note,
        student=student,
        layers=layers,
    )


@contextmanager
def loaded_inputs(
    cache: Path, params: DistillParams, view_cache: Path | None = None, method: Method | None = None
) -> Iterator[DistillInputs]:
    """:func:`load_inputs`, and its rows kept out of Python's cycle collector while the block trains on them.

    The rows of a training partition are a million small objects (each row, its extras, their arrays), none in a
    cycle, that live as long as the run. Made with the collector on, it scans the growing heap again and again (0.7
    of the 2 s that SST-2's 67,349 rows took), and each later collection of the run scans them once more. So they are
    made with it off and frozen (``gc.freeze``) before it is on again; the block's end unfreezes them.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        inputs = load_inputs(cache, params, view_cache, method)
        gc.freeze()
    finally:
        if enabled:
            gc.enable()
    try:
        yield inputs
    finally:
        gc.unfreeze()


def student_source(meta: CacheMetadata, params: DistillParams) -> tuple[str, int | None]:
    """The reference the student starts from and the layers it keeps (None: all)."""
    if params.student == TEACHER:
        return cache_teacher(meta), params.layers
    if params.student in (None, BASE):
        return meta.teacher_base, params.layers
    return params.student, None


def _partition_method(cache: Path, method: Method | None) -> str:
    """The cache partition to train on; for ``none``, the first method with a train partition."""
    if method is not None:
        return method.value
    present = [m for m, split in list_partitions(cache) if split == "train"]
    if not present:
        raise EgkdError(f"no train partition in cache {cache} (run `egkd explain --split train` first)")
    return sorted(present)[0]


def load_rows(cache: Path, method: str) -> tuple[CacheMetadata, list[CachedExample], list[CachedExample]]:
    """Train rows (checked) and dev rows of one method's partitions; dev is empty when absent."""
    if not Path(cache).is_dir():
        raise EgkdError(f"cache not found: {cache}")
    meta, train_rows = read_cache(cache, method, "train")
    check_compatible(meta, CacheExpectation(method=method, split="train"), context=str(cache))
    dev_rows: list[CachedExample] = []
    if (method, "dev") in list_partitions(cache):
        dev_meta, dev_rows = read_cache(cache, method, "dev")
        check_compatible(dev_meta, meta, fields=_SAME_RUN, context=f"{cache} (dev vs train partition)")
    return meta, train_rows, dev_rows


def with_gold_labels(examples: Sequence[CachedExample], gold_labels: int | None) -> list[CachedExample]:
    """``examples`` with the labels of all but the first ``gold_labels`` removed (None: all kept).

    The unlabelled ones are a transfer set: the student learns them from the teacher's logits alone.
    """
    if gold_labels is None:
        return list(examples)
    if gold_labels > len(examples):
        raise EgkdError(
            f"distill.gold_labels is {gold_labels:,} but the cache has {len(examples):,} training sentences"
        )
    return [e if i < gold_labels else replace(e, label=None) for i, e in enumerate(examples)]


def load_transfer_rows(cache: Path, meta: CacheMetadata) -> list[CachedExample]:
    """The rows of the cache's transfer split (``egkd explain --text``) for ``meta``'s method, without labels."""
    if (meta.method, TRANSFER) not in list_partitions(cache):
        raise EgkdError(
            f"distill.transfer is set but cache {cache} has no transfer split for method {meta.method}; "
            f"make one with `egkd explain --method {meta.method} --text FILE --out {cache}`"
        )
    transfer_meta, rows = read_cache(cache, meta.method, TRANSFER)
    check_compatible(transfer_meta, meta, fields=_SAME_EXPLANATIONS, context=f"{cache} (transfer vs train partition)")
    return [replace(r, label=None) for r in rows]


def cache_teacher(meta: CacheMetadata) -> str:
    """The reference of the teacher that made the cache, once its weights are checked to be that teacher's."""
    from pipeline.models import weights_hash

    hint = "; pass --student base for the teacher's base model's layers, or --student with another model"
    try:
        found = weights_hash(meta.teacher)
    except (EgkdError, OSError) as err:
        raise EgkdError(f"student teacher: cannot read the cache's teacher {meta.teacher} ({err}){hint}") from None
    if found != meta.teacher_weights_hash:
        raise EgkdError(
            f"student teacher: the weights at {meta.teacher} are not those of the teacher that made the cache{hint}"
        )
    return meta.teacher

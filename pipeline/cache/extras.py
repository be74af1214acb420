"""What a method caches beyond the attribution: typed extras declared once as columns.

An :class:`Extra` is a frozen dataclass whose fields are arrays declared with
:func:`column`: the axes of each array (:class:`Axis`) and its dtype. From that
declaration alone the cache derives the Parquet columns (``<kind>_<field>``),
row conversion, verification, re-projection onto a student's tokens and the
padded student batch, so a method that caches a new kind of extra writes only
the dataclass.

The same classes carry every form of the data: batched tensors out of an
explainer (a leading batch axis), one cached row's numpy arrays, and a padded
student batch's tensors. Only :func:`stack`, which makes those tensors, imports
torch: reading a cache (``egkd cache info``, a rerun of stage one with nothing to
compute) does not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from operator import attrgetter
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    import torch


class Axis(Enum):
    TOKEN = "token"  # the example's tokens: cut to its length, re-projected onto a student's tokens
    CLASS = "class"  # the task's labels
    VIEW = "view"  # one entry per cached input view


def column(*axes: Axis, dtype: type) -> Any:
    """Declare an :class:`Extra` field: an array with these axes (a token axis comes last) and dtype."""
    if Axis.TOKEN in axes and axes[-1] is not Axis.TOKEN:
        raise TypeError("a token axis must be the last axis")  # a declaration bug, not user input
    return field(metadata={"axes": axes, "dtype": np.dtype(dtype)})


@dataclass(frozen=True)
class ColumnSpec:
    """One array field of an extra, as the cache stores it."""

    kind: str
    field: str
    axes: tuple[Axis, ...]
    dtype: np.dtype

    @property
    def name(self) -> str:
        return f"{self.kind}_{self.field}"

    @property
    def arrow_type(self) -> pa.DataType:
        arrow: pa.DataType = pa.from_numpy_dtype(self.dtype)
        for _ in self.axes:
            arrow = pa.list_(arrow)
        return arrow


KINDS: dict[str, type[Extra]] = {}  # every extra by its kind, registered when its class is defined


@dataclass(frozen=True)
class Extra:
    """Base of a method's cached extras."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" not in cls.__dict__:  # a base that several kinds share (e.g. GuidedViews): not a kind itself
            return
        if cls.kind in KINDS:
            raise TypeError(f"two extras of kind {cls.kind!r}")
        KINDS[cls.kind] = cls

    @classmethod
    def columns(cls) -> tuple[ColumnSpec, ...]:
        return tuple(
            ColumnSpec(cls.kind, f.name, f.metadata["axes"], f.metadata["dtype"]) for f in dataclasses.fields(cls)
        )

    def arrays(self) -> Iterator[tuple[ColumnSpec, Any]]:
        for spec in self.columns():
            yield spec, getattr(self, spec.field)

    def map(self, fn: Callable[[ColumnSpec, Any], Any]) -> Extra:
        """The same extra with every array replaced by ``fn(spec, array)``."""
        return type(self)(**{spec.field: fn(spec, value) for spec, value in self.arrays()})


@dataclass(frozen=True)
class Views(Extra):
    """The teacher's outputs on perturbed copies of the input, which stage two trains on."""

    kind: ClassVar[str] = "view"
    masks: Any = column(Axis.VIEW, Axis.TOKEN, dtype=np.bool_)  # tokens replaced by [MASK] in each view
    logits: Any = column(Axis.VIEW, Axis.CLASS, dtype=np.float32)  # teacher logits on each view


@dataclass(frozen=True)
class Selection(Extra):
    """An instance-wise token selection and the teacher's output on the selected tokens alone."""

    kind: ClassVar[str] = "selection"
    mask: Any = column(Axis.TOKEN, dtype=np.bool_)  # the selected tokens
    logits: Any = column(Axis.CLASS, dtype=np.float32)  # teacher logits when only they are kept


@dataclass(frozen=True)
class GuidedViews(Extra):
    """Views of the input built from the family's own map (or at random), and the teacher's logits on each.

    Every family caches the three kinds below (:mod:`pipeline.explain.view_masks`), with the same number of views
    and of replaced tokens in each, so the kinds are compared on equal terms; stage two trains KD on them
    (``distill.views``).
    """

    masks: Any = column(Axis.VIEW, Axis.TOKEN, dtype=np.bool_)  # tokens replaced by [MASK] in each view
    logits: Any = column(Axis.VIEW, Axis.CLASS, dtype=np.float32)  # teacher logits on each view


@dataclass(frozen=True)
class PreservingViews(GuidedViews):
    """Label-preserving views: only tokens of low importance (the lower half by |score|) are replaced."""

    kind: ClassVar[str] = "preserving"


@dataclass(frozen=True)
class ContrastiveViews(GuidedViews):
    """Contrastive views: tokens of high importance for the explained class (its top 2k) are replaced."""

    kind: ClassVar[str] = "contrastive"


@dataclass(frozen=True)
class RandomViews(GuidedViews):
    """The baseline: as many tokens, chosen uniformly among the real ones."""

    kind: ClassVar[str] = "random"


VIEW_KINDS: tuple[type[GuidedViews], ...] = (PreservingViews, ContrastiveViews, RandomViews)


@dataclass(frozen=True)
class Magnitude(Extra):
    """An unsigned per-token map: the L2 norm over the hidden dimension of gradient x input (AD-KD's map).

    The signed attribution sums the same products over the hidden dimension, so it cannot be recovered
    from it; the gradient family caches both.
    """

    kind: ClassVar[str] = "magnitude"
    scores: Any = column(Axis.TOKEN, dtype=np.float32)


E = TypeVar("E", bound=Extra)


@dataclass(frozen=True)
class Extras:
    """The extras one example (or batch) carries, at most one of each kind."""

    items: tuple[Extra, ...] = ()

    def get(self, kind: type[E]) -> E | None:
        for item in self.items:
            if isinstance(item, kind):
                return item
        return None

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(item.kind for item in self.items)

    def map(self, fn: Callable[[ColumnSpec, Any], Any]) -> Extras:
        return Extras(tuple(item.map(fn) for item in self.items))


def extra_types(kinds: Sequence[str]) -> tuple[type[Extra], ...]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown extra kind {unknown[0]!r}; this egkd knows {sorted(KINDS)}")
    return tuple(KINDS[k] for k in kinds)


# --- the generic operations -----------------------------------------------------------------------


def to_host(extras: Extras) -> Extras:
    """Batched tensors -> numpy arrays of each column's dtype."""
    return extras.map(
        lambda spec, t: (
            t.detach().float().cpu().numpy().astype(spec.dtype)
            if t.is_floating_point()
            else t.detach().cpu().numpy().astype(spec.dtype)
        )
    )


def with_view_shapes(
    spec: ColumnSpec, arrays: list[np.ndarray], tokens: Sequence[int], classes: int
) -> list[np.ndarray]:
    """One decoded column's per-row arrays, with the declared shape restored where a row has no views.

    An empty list of lists decodes as ``(0, 0)``: it says nothing of the inner axes. They are ``(0, tokens)``
    and ``(0, classes)``, so re-projection and batching see the row's real axes. ``tokens``: each row's.
    """
    if Axis.VIEW not in spec.axes or all(map(attrgetter("size"), arrays)):
        return arrays
    sizes = {Axis.TOKEN: 0, Axis.CLASS: classes, Axis.VIEW: 0}
    out = []
    for array, length in zip(arrays, tokens, strict=True):
        if not array.size:
            sizes[Axis.TOKEN] = length
            array = array.reshape([sizes[axis] for axis in spec.axes])
        out.append(array)
    return out


def project(extras: Extras, overlap: np.ndarray) -> Extras:
    """Re-project token axes onto another tokenizer's tokens; ``overlap`` is ``(T_target, T_source)`` bool.

    A target token is True in a mask where any overlapping source token is, and gets
    the sum of the overlapping source tokens' scores.
    """

    def one(spec: ColumnSpec, array: np.ndarray) -> np.ndarray:
        if Axis.TOKEN not in spec.axes:
            return array
        if spec.dtype == np.bool_:
            return (array.astype(np.int64) @ overlap.T.astype(np.int64)) > 0
        return (array.astype(np.float64) @ overlap.T.astype(np.float64)).astype(spec.dtype)

    return extras.map(one)


def stack(rows: Sequence[Extras], length: int) -> Extras:
    """Host rows -> padded ``(B, ...)`` tensors; token axes padded to ``length`` (False / 0)."""
    import torch

    if not rows:
        return Extras()
    kinds = rows[0].kinds
    if any(r.kinds != kinds for r in rows):
        raise ValueError(f"rows with different extras in one batch: {kinds} and others")
    out = []
    for position, first in enumerate(rows[0].items):
        values = {}
        for spec, _ in first.arrays():
            arrays = [getattr(r.items[position], spec.field) for r in rows]
            sizes = [[a.shape[i] for a in arrays] for i in range(len(spec.axes))]
            shape = [length if axis is Axis.TOKEN else max(s) for axis, s in zip(spec.axes, sizes, strict=True)]
            if Axis.VIEW in spec.axes and len(set(sizes[spec.axes.index(Axis.VIEW)])) > 1:
                raise ValueError(f"{spec.name}: examples with different numbers of views in one batch")
            padded = np.zeros((len(arrays), *shape), dtype=spec.dtype)
            token = Axis.TOKEN in spec.axes
            if all(len(set(s)) == 1 for s in sizes[: len(sizes) - token]):
                # Only the token axis (the last) differs between rows: one scatter of the concatenated rows.
                places = np.arange(shape[-1]) < np.asarray(sizes[-1])[:, None] if token else None
                if places is None:
                    padded[...] = np.stack(arrays)
                else:
                    places = places.reshape(len(arrays), *[1] * (len(shape) - 1), shape[-1])
                    padded[np.broadcast_to(places, padded.shape)] = np.concatenate([a.ravel() for a in arrays])
            else:
                for b, array in enumerate(arrays):
                    padded[(b, *(slice(0, n) for n in array.shape))] = array  # type: ignore[index]
            values[spec.field] = torch.from_numpy(padded)
        out.append(type(first)(**values))
    return Extras(tuple(out))


def to_device(extras: Extras, device: torch.device | str, non_blocking: bool = False) -> Extras:
    return extras.map(lambda _, t: t.to(device, non_blocking=non_blocking))


def problems(extras: Extras, tokens: int, classes: int) -> Iterator[str]:
    """What is wrong with one cached row's extras: shapes against its axes, non-finite values."""
    for item in extras.items:
        views: set[int] = set()
        for spec, array in item.arrays():
            if array.ndim != len(spec.axes):
                yield f"{spec.name} has {array.ndim} axes, expected {len(spec.axes)}"
                continue
            for axis, size in zip(spec.axes, array.shape, strict=True):
                want = {Axis.TOKEN: tokens, Axis.CLASS: classes}.get(axis)
                if want is not None and size != want:
                    yield f"{spec.name} has {size} {axis.value} entries, expected {want}"
                if axis is Axis.VIEW:
                    views.add(size)
            if np.issubdtype(spec.dtype, np.floating) and not np.isfinite(array).all():
                yield f"{spec.name} has values that are not finite"
        if len(views) > 1:
            yield f"{item.kind} arrays disagree on the number of views: {sorted(views)}"

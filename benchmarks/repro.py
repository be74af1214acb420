"""Run the DVC pipeline's stages without DVC, in dependency order, timing each one.

``python -m benchmarks.repro [--dry] [--stage PREFIX ...] [--timings FILE.json] [--keep-going] [--jobs N]``, in the
repository root, renders dvc.yaml with params.yaml as DVC 3 does (stage names, ``${...}``, ``matrix``, a
mapping unpacked into ``--key value`` options, the ``[parsing]`` options of .dvc/config) and runs each
stage as ``dvc repro --force`` would: its outputs removed first (not ``persist: true`` ones), each command
with ``bash --noprofile --norc -c`` in the repository root with ``DVC_ROOT`` and ``DVC_STAGE`` set (and this
interpreter's bin folder first on PATH, for ``egkd``); frozen stages are not run. Nothing is cached, locked or
checked for changes.
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import combinations, product
from pathlib import Path
from typing import Any

import yaml

STAGE_KEYS = {"cmd", "matrix", "deps", "params", "outs", "metrics", "plots", "frozen", "meta", "desc", "always_changed"}
MATCH = re.compile(r"(?<!\\)\$\{(?P<inner>.*?)\}")
EXPRESSION = re.compile(r"[^.\[\]]+(?:\.[^.\[\]]+|\[[^.\[\]]+\])*")
YAML12 = {
    "bool": (r"true|True|TRUE|false|False|FALSE", "tTfF"),  # ruamel.yaml's YAML 1.2 scalars, which DVC reads
    "float": (
        (
            r"[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
            r"|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
        ),
        "-+0123456789.",
    ),
    "int": (r"[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+", "-+0123456789"),
}


class ReproError(Exception):
    """A problem reported as one line, exit status 2."""


@dataclass(frozen=True)
class Stage:
    """One rendered stage: its DVC name, its group (the name before ``@``), its commands, deps and outs."""

    name: str
    group: str
    commands: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    persist: tuple[str, ...] = ()
    frozen: bool = False


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader reading scalars as ruamel.yaml does (YAML 1.2: ``yes`` a string, ``1e-4`` a float)."""

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        """``010`` is ten and ``0o10`` eight, as in YAML 1.2."""
        text = self.construct_scalar(node).replace("_", "")
        sign, digits = (-1, text[1:]) if text.startswith("-") else (1, text.lstrip("+"))
        base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2], 10)
        return sign * int(digits[2:] if base != 10 else digits, base)


Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[1] not in YAML12]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
for _kind, (_pattern, _firsts) in YAML12.items():
    Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_kind}", re.compile(f"^(?:{_pattern})$"), list(_firsts))
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", Yaml12Loader.construct_yaml_int)


def parse_yaml(text: str) -> Any:
    """YAML as DVC parses it: ruamel.yaml's safe loader (YAML 1.2), or without ruamel, PyYAML reading 1.2 scalars."""
    try:
        from ruamel.yaml import YAML
    except ImportError:
        return yaml.load(text, Loader=Yaml12Loader)  # noqa: S506  (a SafeLoader subclass)
    return YAML(typ="safe").load(text)


def load_yaml(path: Path) -> Any:
    """A YAML file's data; a missing file or a parse error is a one-line error."""
    if not path.is_file():
        raise ReproError(f"{path.name} not found in {path.parent}")
    try:
        return parse_yaml(path.read_text(encoding="utf-8")) or {}
    except Exception as exc:  # noqa: BLE001 (either parser's error, as one line)
        raise ReproError(f"{path.name}: invalid YAML: {' '.join(str(exc).split())}") from None


def parsing_config(root: Path) -> dict[str, str]:
    """The ``[parsing]`` options (``bool``, ``list``) of DVC's system, global, repository and local config."""
    config = configparser.ConfigParser(interpolation=None, strict=False)
    user = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    try:
        config.read(
            [
                Path("/etc/xdg/dvc/config"),
                user / "dvc" / "config",
                root / ".dvc" / "config",
                root / ".dvc" / "config.local",
            ],
            encoding="utf-8",
        )
    except configparser.Error as exc:
        raise ReproError(f".dvc/config: {' '.join(str(exc).split())}") from None
    parsing = config["parsing"] if config.has_section("parsing") else {}
    return {key: value.strip("'\"").lower() for key, value in parsing.items()}


def merge(into: dict, update: dict) -> None:
    """Merge ``update`` into ``into`` recursively; redefining a value is an error, as in DVC."""
    for key, value in update.items():
        if isinstance(into.get(key), dict) and isinstance(value, dict):
            merge(into[key], value)
        elif key in into:
            raise ReproError(f"dvc.yaml: vars: cannot redefine '{key}' (already in params.yaml or vars)")
        else:
            into[key] = value


def lookup(context: dict, expression: str, where: str) -> Any:
    """The value of ``a.b[0].c`` in the context."""
    if not EXPRESSION.fullmatch(expression):
        raise ReproError(f"{where}: invalid interpolation '${{{expression}}}'")
    value: Any = context
    for part in expression.replace("[", ".").replace("]", "").split("."):
        try:
            value = value[int(part)] if isinstance(value, list) else value[part.strip()]
        except (KeyError, IndexError, ValueError, TypeError):
            raise ReproError(f"{where}: '${{{expression}}}' is not in params.yaml or vars") from None
    return value


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``{"a.b": value}``; empty mappings vanish."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def unpack(mapping: dict, config: dict[str, str], where: str) -> str:
    """A mapping in a command as DVC writes it: ``--key value`` per flattened key, strings shell-quoted, True a
    bare ``--key``, False nothing (``--no-key`` with ``bool: boolean_optional``), None ``None``, a list
    ``--key a b`` (``--key a --key b`` with ``list: append``; its items are ``str()``, so True is ``True``)."""
    words = []
    for key, value in flatten(mapping).items():
        if isinstance(value, bool):
            words += [f"--{key}"] if value else [f"--no-{key}"] * (config.get("bool") == "boolean_optional")
        elif isinstance(value, list):
            if any(isinstance(item, (list, dict)) for item in value):
                raise ReproError(f"{where}: cannot interpolate a nested list in '{key}'")
            items = [shlex.quote(item) if isinstance(item, str) else str(item) for item in value]
            append = config.get("list") == "append"
            words += [f"--{key} {item}" for item in items] if append else [f"--{key} {' '.join(items)}"] * bool(items)
        else:
            words.append(f"--{key} {shlex.quote(value) if isinstance(value, str) else value}")
    return " ".join(words)


def to_str(value: Any, config: dict[str, str], where: str) -> str:
    """A value inside a string: booleans as ``true``/``false``, a mapping unpacked, anything else ``str()``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return unpack(value, config, where) if isinstance(value, dict) else str(value)


def exact(text: Any) -> bool:
    """Whether ``text`` is one ``${...}`` and nothing else (DVC then keeps the value, not its string)."""
    matches = list(MATCH.finditer(text)) if isinstance(text, str) else []
    return len(matches) == 1 and matches[0][0] == text


def interpolate(text: str, context: dict, config: dict[str, str], key: str | None, where: str) -> Any:
    """Resolve ``${...}`` in a string; a string that is exactly one ``${...}`` keeps the value's type."""
    matches = list(MATCH.finditer(text))
    values = [lookup(context, match["inner"], where) for match in matches]
    for match, value in zip(matches, values, strict=False):
        if isinstance(value, (list, dict)) and key is not None and not (isinstance(value, dict) and key == "cmd"):
            raise ReproError(f"{where}: cannot interpolate a {type(value).__name__} ('{match[0]}') here")
    if exact(text):
        return values[0]
    pieces, last = [], 0
    for match, value in zip(matches, values, strict=False):
        pieces += [text[last : match.start()], to_str(value, config, where)]
        last = match.end()
    return ("".join(pieces) + text[last:]).replace("\\${", "${")


def resolve(data: Any, context: dict, config: dict[str, str], key: str | None, where: str) -> Any:
    """Interpolate every string in ``data``, mapping keys included."""
    if isinstance(data, str):
        return interpolate(data, context, config, key, where)
    if isinstance(data, dict):
        return {
            resolve(k, context, config, key, where): resolve(v, context, config, key, where) for k, v in data.items()
        }
    return [resolve(v, context, config, key, where) for v in data] if isinstance(data, list) else data


def matrix_axes(group: str, matrix: Any, context: dict) -> dict[str, list[tuple[str, Any]]]:
    """Each matrix name's values, with the label DVC puts in stage names: ``<name><index>`` for a mapping or a
    list, else ``str()`` for a value that came from a ``${...}`` (``True``), ``to_str`` for a literal (``true``)."""
    if not isinstance(matrix, dict):
        raise ReproError(f"dvc.yaml: stage '{group}': matrix must be a mapping")
    axes = {}
    for name, raw in matrix.items():
        values = resolve(raw, context, {}, None, f"dvc.yaml: stage '{group}': matrix")
        if not isinstance(values, list):
            raise ReproError(f"dvc.yaml: stage '{group}': matrix.{name} must be a list")
        raws = raw if isinstance(raw, list) else [raw] * len(values)
        axes[name] = [
            (f"{name}{i}" if isinstance(v, (list, dict)) else str(v) if exact(r) else to_str(v, {}, group), v)
            for i, (r, v) in enumerate(zip(raws, values, strict=False))
        ]
    return axes


def expand(group: str, definition: dict, context: dict) -> dict[str, dict]:
    """Stage name -> context: the group itself, or ``group@<label>-<label>`` per ``matrix`` combination."""
    if "matrix" not in definition:
        return {group: context}
    axes, named = matrix_axes(group, definition["matrix"], context), {}
    for combination in product(*axes.values()):
        key = "-".join(label for label, _ in combination)
        named[f"{group}@{key}"] = {
            **context,
            "item": dict(zip(axes, (v for _, v in combination), strict=False)),
            "key": key,
        }
    return named


def paths(entries: Any, name: str, section: str) -> list[tuple[str, dict]]:
    """``[path, {path: options}, ...]`` as normalised (path, options) pairs; a params key means params.yaml."""
    if not isinstance(entries, list):
        raise ReproError(f"dvc.yaml: stage '{name}': {section} must be a list")
    pairs = []
    for entry in entries:
        if isinstance(entry, dict) and (len(entry) == 1 or section == "params"):
            pairs += [(os.path.normpath(str(p)), opts if isinstance(opts, dict) else {}) for p, opts in entry.items()]
        elif isinstance(entry, (str, int, float)) and not isinstance(entry, bool):
            pairs.append(("params.yaml" if section == "params" else os.path.normpath(str(entry)), {}))
        else:
            raise ReproError(f"dvc.yaml: stage '{name}': {section} has an invalid entry {entry!r}")
    return pairs


def render_stage(name: str, group: str, definition: dict, context: dict, config: dict[str, str]) -> Stage:
    """One stage with every ``${...}`` resolved; a multi-line string ``cmd`` is one command per line, as in DVC."""
    fields = {
        key: resolve(value, context, config, key, f"dvc.yaml: stage '{name}': {key}")
        for key, value in definition.items()
        if key != "matrix"
    }
    commands = fields["cmd"].splitlines() if isinstance(fields["cmd"], str) else fields["cmd"]
    if not fields["cmd"] or not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise ReproError(f"dvc.yaml: stage '{name}': cmd must be a string or a list of strings")
    deps = [p for section in ("deps", "params") for p, _ in paths(fields.get(section, []), name, section)]
    outs = [pair for section in ("outs", "metrics", "plots") for pair in paths(fields.get(section, []), name, section)]
    if outside := [p for p, _ in outs if p == ".." or p.startswith("../") or os.path.isabs(p)]:
        raise ReproError(f"dvc.yaml: stage '{name}': output '{outside[0]}' is outside the repository")
    return Stage(
        name,
        group,
        tuple(commands),
        tuple(dict.fromkeys(deps)),
        tuple(p for p, _ in outs),
        tuple(p for p, opts in outs if opts.get("persist")),
        bool(fields.get("frozen", False)),
    )


def render(root: Path) -> list[Stage]:
    """Every stage of ``root/dvc.yaml`` in dvc.yaml order, rendered with params.yaml and the top-level ``vars``."""
    dvc_yaml, params = load_yaml(root / "dvc.yaml"), load_yaml(root / "params.yaml")
    if not isinstance(dvc_yaml, dict) or not isinstance(dvc_yaml.get("stages"), dict) or not isinstance(params, dict):
        raise ReproError("dvc.yaml must have a 'stages' mapping and params.yaml must be a mapping")
    variables = dvc_yaml.get("vars", [])
    if not isinstance(variables, list) or not all(isinstance(mapping, dict) for mapping in variables):
        raise ReproError("dvc.yaml: vars must be a list of mappings (files in vars are not supported)")
    context: dict = {}
    for mapping in [params, *variables]:
        merge(context, mapping)
    config, stages = parsing_config(root), {}
    for group, definition in dvc_yaml["stages"].items():
        if unknown := sorted(set(definition) - STAGE_KEYS if isinstance(definition, dict) else []):
            raise ReproError(f"dvc.yaml: stage '{group}': unsupported key '{unknown[0]}'")
        if not isinstance(definition, dict) or "cmd" not in definition:
            raise ReproError(f"dvc.yaml: stage '{group}' must be a mapping with a 'cmd'")
        for name, stage_context in expand(str(group), definition, context).items():
            stages[name] = render_stage(name, str(group), definition, stage_context, config)
    return list(stages.values())


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it."""
    return path == folder or folder == "." or path.startswith(folder.rstrip("/") + "/")


def upstream(stages: list[Stage]) -> dict[str, set[str]]:
    """For each stage, the stages with an out that is one of its deps, lies inside one, or holds one."""
    return {
        stage.name: {
            other.name
            for other in stages
            if other is not stage
            and any(inside(dep, out) or inside(out, dep) for dep in stage.deps for out in other.outs)
        }
        for stage in stages
    }


def order(stages: list[Stage]) -> list[Stage]:
    """Each stage after those it depends on; of the stages ready to run, the first in dvc.yaml comes first."""
    outs = [(out, stage.name) for stage in stages for out in stage.outs]
    for (out, name), (other, other_name) in combinations(outs, 2):
        if inside(out, other) or inside(other, out):
            raise ReproError(f"dvc.yaml: output '{out}' of stage '{name}' overlaps '{other}' of stage '{other_name}'")
    needs, ordered = upstream(stages), []
    while len(ordered) < len(stages):
        done = {stage.name for stage in ordered}
        ready = [stage for stage in stages if stage.name not in done and needs[stage.name] <= done]
        if not ready:
            raise ReproError(f"dvc.yaml: the deps and outs of stages {sorted(set(needs) - done)} form a cycle")
        ordered.append(ready[0])
    return ordered


def run_stage(stage: Stage, root: Path, environ: dict[str, str] | None = None) -> int:
    """Remove the stage's outs (not persisted ones), then run its commands in order; the first failing status."""
    for out in (root / out for out in stage.outs if out not in stage.persist):
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        elif out.exists() or out.is_symlink():
            out.unlink()
    environ = os.environ if environ is None else environ
    path = os.pathsep.join([str(Path(sys.executable).parent), environ.get("PATH", "")])
    env = {**environ, "PATH": path, "DVC_ROOT": str(root), "DVC_STAGE": stage.name}
    for command in stage.commands:
        print(f"> {command}", flush=True)
        done = subprocess.run(["bash", "--noprofile", "--norc", "-c", command], cwd=root, env=env, check=False)
        if done.returncode:
            return done.returncode
    return 0


def run(
    stages: list[Stage], selected: set[str], root: Path, keep_going: bool, jobs: int = 1
) -> tuple[dict[str, float], list[str]]:
    """Run the selected stages, up to ``jobs`` at once, each after the stages it depends on; those downstream of a
    failure are skipped. Returns the seconds per stage that ran and the failed stages, both in dvc.yaml order.

    With one job the stages run one by one in :func:`order`'s order, as ``dvc repro`` runs them.
    """
    needs, seconds, failed, broken = upstream(stages), {}, [], set()
    pending = [stage for stage in stages if stage.name in selected]
    waiting: set[str] = {stage.name for stage in pending}  # selected stages not finished: their dependants wait
    env = os.environ.copy()
    if jobs > 1 and "OMP_NUM_THREADS" not in env:  # the cores shared out between the stages that run at once
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    running: dict[Future[int], tuple[Stage, float]] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            stop = failed and not keep_going
            for stage in [] if stop else list(pending):
                if len(running) >= jobs:
                    break
                if needs[stage.name] & broken:
                    pending.remove(stage)
                    waiting.discard(stage.name)
                    broken.add(stage.name)
                    print(f"Skipping stage '{stage.name}': it depends on a failed stage", flush=True)
                elif stage.frozen:
                    pending.remove(stage)
                    waiting.discard(stage.name)
                    print(f"Stage '{stage.name}' is frozen: not run")
                elif not needs[stage.name] & waiting:
                    pending.remove(stage)
                    print(f"Running stage '{stage.name}':", flush=True)
                    running[pool.submit(run_stage, stage, root, env)] = (stage, time.perf_counter())
            if stop:
                pending.clear()
            if not running:
                continue
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in finished:
                stage, start = running.pop(future)
                seconds[stage.name] = time.perf_counter() - start
                waiting.discard(stage.name)
                status = future.result()
                ended = "failed" if status else "done"
                print(f"Stage '{stage.name}' {ended} in {seconds[stage.name]:.1f} s", flush=True)
                if status:
                    print(f"error: stage '{stage.name}' failed with exit code {status}", file=sys.stderr, flush=True)
                    failed.append(stage.name)
                    broken.add(stage.name)
    rank = {stage.name: i for i, stage in enumerate(stages)}
    return dict(sorted(seconds.items(), key=lambda item: rank[item[0]])), sorted(failed, key=rank.__getitem__)


def timings(stages: list[Stage], seconds: dict[str, float], failed: list[str], start: datetime, wall: float) -> dict:
    """Seconds per stage and per group, their total, the wall time (less than the total when stages ran at once),
    start and end; prints them per group as a Markdown table."""
    groups = {
        s.group: round(sum(seconds.get(t.name, 0.0) for t in stages if t.group == s.group), 3)
        for s in stages
        if s.name in seconds
    }
    total = round(sum(seconds.values()), 3)
    print("\n| stage group | stages | seconds | share |\n|---|---:|---:|---:|")
    for group, spent in groups.items():
        count = sum(stage.group == group and stage.name in seconds for stage in stages)
        print(f"| {group} | {count} | {spent:.1f} | {spent / total if total else 0:.0%} |")
    print(f"| total | {len(seconds)} | {total:.1f} | 100% |")
    print(f"wall time: {wall:.1f} s")
    end = datetime.now(timezone.utc)
    return {
        "start": start.isoformat(timespec="seconds"),
        "end": end.isoformat(timespec="seconds"),
        "stages": {name: round(s, 3) for name, s in seconds.items()},
        "groups": groups,
        "total": total,
        "wall": round(wall, 3),
        "failed": failed,
    }


def main(argv: list[str] | None = None, root: Path | None = None) -> int:
    """The command line (``root``: the repository, by default the working directory); returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.repro", description=__doc__.split("\n")[0])
    parser.add_argument("--dry", action="store_true", help="print the ordered commands, run nothing")
    parser.add_argument(
        "--stage",
        action="extend",
        nargs="+",
        default=[],
        metavar="PREFIX",
        help="run only the stages whose names start with PREFIX (not their upstream)",
    )
    parser.add_argument("--timings", type=Path, metavar="FILE.json", help="write the seconds of each stage here")
    parser.add_argument("--keep-going", action="store_true", help="after a failure, run what does not depend on it")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run up to N independent stages at once (each gets the cores / N threads unless OMP_NUM_THREADS is set)",
    )
    args = parser.parse_args(argv)
    root = (root or Path.cwd()).resolve()
    if args.jobs < 1:
        print(f"error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    try:
        stages = order(render(root))
    except ReproError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    selected = {s.name for s in stages if not args.stage or any(s.name.startswith(p) for p in args.stage)}
    if not selected:
        print(f"error: no stage name starts with {' or '.join(map(repr, args.stage))}", file=sys.stderr)
        return 2
    if args.dry:
        for stage in (stage for stage in stages if stage.name in selected):
            print(f"Running stage '{stage.name}':\n" + "".join(f"> {command}\n" for command in stage.commands))
        return 0
    start, began = datetime.now(timezone.utc), time.perf_counter()
    seconds, failed = run(stages, selected, root, args.keep_going, args.jobs)
    report = timings(stages, seconds, failed, start, time.perf_counter() - began)
    if args.timings:
        args.timings.parent.mkdir(parents=True, exist_ok=True)
        args.timings.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if failed:
        print(f"error: {len(failed)} stage(s) failed: {', '.join(failed)}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The repository's layout rules, read from the source with ``ast`` (nothing is imported).

* benchmarks/ (the suite) and research/ (the studies) use the library through its public names only: no
  ``from pipeline... import _name``, no private module (``pipeline.x._y``), no ``module._name`` on a pipeline
  module, and no ``obj._name`` where ``_name`` is a private function, class or attribute that pipeline defines
  (such as ``trainer._step``) and the script does not;
* the benchmark modules import each other without a cycle, and never a study;
* the library (pipeline/, stages/) imports neither benchmarks nor research.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _modules(folder: str) -> list[Path]:
    return sorted((REPO / folder).rglob("*.py"))


def _imports(tree: ast.AST) -> Iterator[tuple[int, str, str | None]]:
    """``(line, module, name)`` of every import anywhere in the file (``name`` None for ``import module``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                yield node.lineno, node.module, alias.name


def private_definitions(folder: str = "pipeline") -> set[str]:
    """The private names ``folder`` defines: functions, methods, classes and attributes it assigns."""
    return {name for path in _modules(folder) for name in _defined(ast.parse(path.read_text(encoding="utf-8")))}


def _defined(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and _private(node.name):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            names.add(node.attr)
    return names


def private_uses(path: Path, library: set[str] = frozenset()) -> list[str]:
    """Where ``path`` reaches for a private name of pipeline: imported, in a module path, or as an attribute."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    modules: set[str] = set()  # local names bound to pipeline modules
    for line, module, name in _imports(tree):
        if module.split(".")[0] != "pipeline":
            continue
        parts = module.split(".") + ([name] if name else [])
        if any(_private(part) for part in parts):
            found.append(f"{path.relative_to(REPO)}:{line}: {module}{'' if name is None else f' import {name}'}")
        if name is None:
            modules.add(module.split(".")[0])
        elif name[:1].islower():  # `from pipeline.explain import run`: maybe a module
            modules.add(name)
    own = _defined(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if (isinstance(root, ast.Name) and root.id in modules) or (node.attr in library - own):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(node)}")
    return found


def import_graph(folder: str) -> dict[str, set[str]]:
    """``folder``'s modules and the modules of ``folder`` that each imports (at any scope)."""
    package = folder.replace("/", ".")
    names = {p.stem for p in _modules(folder) if p.stem != "__init__"}
    graph: dict[str, set[str]] = {name: set() for name in names}
    for path in _modules(folder):
        if path.stem == "__init__":
            continue
        for _, module, name in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if module == package and name in names:
                graph[path.stem].add(name)
            elif module.startswith(package + "."):
                graph[path.stem].add(module.split(".")[1])
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that is on one (depth-first search), as ``[a, b, ..., a]``."""
    found, done = [], set()

    def visit(node: str, path: list[str]) -> None:
        if node in path:
            found.append(path[path.index(node) :] + [node])
            return
        if node in done:
            return
        for target in sorted(graph.get(node, ())):
            visit(target, [*path, node])
        done.add(node)

    for node in sorted(graph):
        visit(node, [])
    return found


@pytest.mark.parametrize("folder", ["benchmarks", "research"])
def test_scripts_use_only_public_names_of_the_library(folder):
    library = private_definitions()
    assert {"_run", "_Workers", "_InFlight"} <= library  # what the benchmarks once reached for, still private
    found = [use for path in _modules(folder) for use in private_uses(path, library)]
    assert not found, "private names of pipeline used (make them public, or stop needing them):\n" + "\n".join(found)


def test_benchmark_modules_import_each_other_without_a_cycle():
    graph = import_graph("benchmarks")
    assert {"bench", "report", "stage_one", "stage_two"} <= set(graph)
    assert not cycles(graph), cycles(graph)


def test_benchmarks_are_the_suite_alone_and_the_library_imports_neither():
    offending = [
        f"{path.relative_to(REPO)}:{line}: {module}"
        for folder, banned in (
            ("benchmarks", {"research"}),
            ("pipeline", {"benchmarks", "research"}),
            ("stages", {"benchmarks", "research"}),
        )  # fmt: skip
        for path in _modules(folder)
        for line, module, _ in _imports(ast.parse(path.read_text(encoding="utf-8")))
        if module.split(".")[0] in banned
    ]
    assert not offending, offending


def test_the_checks_catch_what_they_forbid(tmp_path, monkeypatch):
    """Each rule on a hand-made file: a private import, a private module, a private attribute, and a cycle."""
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    script = tmp_path / "bad.py"
    script.write_text(
        "from pipeline.explain.run import ExplainRequest, _run\n"
        "import pipeline.explain._ops\n"
        "from pipeline import training\n"
        "def f(t):\n"
        "    from pipeline.explain import part\n"
        "    return training.Trainer._step, part._HostCopy, t._private, t.trainer._step, t._mine, ExplainRequest\n"
        "class Mine:\n"
        "    def _mine(self): ...\n",
        encoding="utf-8",
    )
    assert [use.split(": ", 1)[1] for use in private_uses(script, {"_step", "_mine"})] == [
        "pipeline.explain.run import _run",
        "pipeline.explain._ops",
        "training.Trainer._step",
        "part._HostCopy",
        "t.trainer._step",  # `_step` is the library's, `_mine` the script's own, `_private` unknown to both
    ]
    assert cycles({"report": {"stage_two"}, "stage_two": {"report", "measure"}, "measure": set()}) == [
        ["report", "stage_two", "report"]
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []

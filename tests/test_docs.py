"""The documentation says what the code is: its paths exist, its names resolve, its commands and figures agree."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from pipeline.config import Params, load_params

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "research").glob("*.md"))]
LINKED = [*DOCS, REPO / "benchmarks" / "README.md"]
PACKAGES = ("cache", "explain", "evaluate", "distill", "report")
CORE = ("data", "encoding", "models", "training", "config", "methods", "tasks", "losses", "finetune")
EXAMPLES = {"pipeline/explain/x.py"}  # the new family of docs/method.md's checklist


def code_spans(path: Path) -> list[str]:
    return re.findall(r"`([^`\n]+)`", path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_repository_path_a_page_names_exists(doc):
    named = {
        match.rstrip("/.,:")
        for span in code_spans(doc)
        for match in re.findall(r"\b(?:pipeline|stages|tests|benchmarks|docs|research)/[\w./-]*", span)
    }
    missing = sorted(p for p in named - EXAMPLES if "<" not in p and "*" not in p and not (REPO / p).exists())
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def _resolves(dotted: str) -> bool:
    """``cache.project.to_student_examples``, ``part.compute_part`` (within a package) or ``pipeline.x.y``
    names a module, class or function of egkd."""
    for prefix in ("pipeline.", *(f"pipeline.{p}." for p in PACKAGES)):
        parts = (prefix + dotted.removeprefix("pipeline.")).split(".")
        for cut in range(len(parts), 1, -1):
            try:
                target: object = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            try:
                for attribute in parts[cut:]:
                    target = getattr(target, attribute)
            except AttributeError:
                break
            return True
    return False


def _is_params_key(dotted: str) -> bool:
    section: object = Params()
    for name in dotted.split("."):
        if not dataclasses.is_dataclass(section) or name not in {f.name for f in dataclasses.fields(section)}:
            return False
        section = getattr(section, name)
    return True


def test_every_dotted_name_architecture_md_gives_is_code_or_a_params_key():
    """The module map and the flow of one row name real modules, classes and functions."""
    spans = code_spans(REPO / "docs" / "architecture.md")
    files = (".py", ".md", ".yaml", ".tsv", ".json")
    names = [s for s in spans if re.fullmatch(r"[a-z_]+(?:\.[A-Za-z_]\w*)+", s) and not s.endswith(files)]
    assert len(names) > 25
    unknown = [name for name in names if not _resolves(name) and not _is_params_key(name)]
    assert not unknown, unknown


def test_architecture_md_lists_every_module_once_with_one_line():
    """Issue 37: "Every module" names each module of pipeline/ and stages/ (package __init__ files aside), one list
    line each, and no module that is gone."""
    text = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("\n## Every module\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^- `((?:pipeline|stages)/[\w/]+\.py)`: \S", section, flags=re.M)
    modules = sorted(
        str(path.relative_to(REPO))
        for folder in ("pipeline", "stages")
        for path in (REPO / folder).rglob("*.py")
        if path.name != "__init__.py"
    )
    assert len(listed) == len(set(listed)), sorted({m for m in listed if listed.count(m) > 1})
    assert not sorted(set(modules) - set(listed)), (
        f"missing from docs/architecture.md: {sorted(set(modules) - set(listed))}"
    )
    assert not sorted(set(listed) - set(modules)), f"listed but gone: {sorted(set(listed) - set(modules))}"


def test_readme_keeps_one_command_each_for_set_up_the_experiment_and_the_tests():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (.+?)\n(.*?)(?=^## |\Z)", readme, flags=re.S | re.M))

    def blocks(section: str) -> list[str]:
        return [b.strip() for b in re.findall(r"```bash\n(.*?)```", sections[section], flags=re.S)]

    assert blocks("Set up") == ["./setup.sh"]
    assert blocks("Run") == ["source .venv/bin/activate && dvc repro"]
    assert blocks("Test") == [".venv/bin/python -m pytest"]
    assert sum(len(blocks(name)) for name in sections) == 4  # and the own-data example


def test_the_readmes_own_data_example_runs_egkd_on_the_shared_files():
    """Issue 36: "Your own data" shows a CSV run from end to end: the data added under DVC from files that exist,
    then the pipeline on a profile that names it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Your own data", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert [c.split()[:3] for c in commands] == [["egkd", "data", "add"], ["egkd", "profile", "trec"]]
    source, out = commands[0].split()[3], re.findall(r"--out (\S+)", commands[0])[0]
    assert (REPO / source / "train.csv").exists() and (REPO / f"{out}.dvc").exists()
    assert load_params(REPO / "profiles" / "trec.yaml").data.task == Path(out).name
    assert "## Layout" in readme and all(f"`pipeline/{p}/`" in readme for p in PACKAGES)


@pytest.mark.parametrize(("name", "most"), [("README.md", 100), ("docs/pipeline.md", 400)])
def test_the_readme_and_the_pipeline_reference_stay_short(name, most):
    """Issue 37: a README a newcomer reads in one go, a reference without the studies (they are in research/)."""
    lines = len((REPO / name).read_text(encoding="utf-8").splitlines())
    assert lines <= most, f"{name} has {lines} lines; the studies belong in research/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("doc", LINKED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_of_a_page_resolves_to_a_file_and_its_anchor(doc):
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.exists() or (anchor and (not path.is_file() or anchor not in _anchors(path))):
            broken.append(target)
    assert not broken, f"{doc.name} links to what does not exist: {broken}"


def test_research_readme_indexes_every_study():
    index = (REPO / "research" / "README.md").read_text(encoding="utf-8")
    studies = {p.name for p in (REPO / "research").glob("*.md")} - {"README.md"}
    assert studies and not {s for s in studies if f"]({s})" not in index}


def test_readme_gives_one_command_for_each_profile():
    """Every profile overlay in profiles/ has its one command in the README, and the README names no other."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`egkd profile (\w+) && ", readme))
    overlays = {p.stem for p in (REPO / "profiles").glob("*.yaml")}
    if not overlays:
        pytest.skip("no profiles/ overlays in this checkout")
    assert named == overlays | {"default"}


def test_readme_and_pipeline_doc_state_the_same_running_time():
    """Bug 10: the default `dvc repro` is stated in docs/pipeline.md as a measured time on a named, idle machine,
    and the rounded figure of the README and of the profiles table agrees with it."""
    readme, pipeline = ((REPO / name).read_text(encoding="utf-8") for name in ("README.md", "docs/pipeline.md"))
    measured = re.findall(r"clean clone[^.]*? took ([\d,]+) s", pipeline)
    assert measured and "2-core" in pipeline and "idle" in pipeline
    seconds = int(measured[0].replace(",", ""))
    stated = re.findall(r"2-core CPU[^.|]*?in about (\d+) minutes", readme)
    stated += re.findall(r"^\| default \|.*?about (\d+) minutes", readme + "\n" + pipeline, flags=re.M)
    assert stated and all(abs(int(m) - seconds / 60) < 1 for m in stated), stated


def _p(value: float) -> str:
    return "<1e-4" if value < 1e-4 else f"{value:.2g}"


def _interval(d: dict | None, scale: float, digits: int) -> str:
    if d is None:
        return "-"
    return (
        f"{d['mean'] * scale:+.{digits}f} [{d['ci95_low'] * scale:+.{digits}f}, {d['ci95_high'] * scale:+.{digits}f}]"
    )


def _expected(column: str, student: dict, teacher: float) -> str | None:
    """A cell of a results table as `summary.json` gives it; None for a column it does not hold."""
    accuracy, agreement = student["accuracy"], student.get("agreement_vs_kd")
    mcnemar = student.get("mcnemar_vs_kd")
    cells = {
        "seeds": str(student["runs"]),
        "dev accuracy": f"{accuracy['mean']:.4f} ± {accuracy['std']:.4f}",
        "% of teacher": f"{accuracy['mean'] / teacher:.1%}",
        "vs kd, points [95% CI]": _interval(student.get("accuracy_vs_kd"), 100, 2),
        "McNemar p (pooled)": "-" if mcnemar is None else _p(mcnemar["p_value"]),
        "own-family Spearman": "-" if agreement is None else f"{student['spearman'][agreement['method']]['mean']:.3f}",
        "vs kd's [95% CI]": _interval(agreement, 1, 3),
    }
    return cells.get(column)


def _tables(text: str) -> list[list[list[str]]]:
    tables, rows = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif rows:
            tables.append(rows)
            rows = []
    return tables


def _check_table(rows: list[list[str]], summary: dict, where: str) -> int:
    header, body = rows[0], rows[2:]
    teacher = summary["teacher"]["accuracy"]
    names = {row[0].strip("*"): row for row in body}
    assert set(names) == set(summary["students"]), where
    checked = 0
    for name, row in names.items():
        for column, cell in zip(header, row, strict=True):
            want = _expected(column, summary["students"][name], teacher)
            if want is not None:
                assert cell == want, f"{where}, {name}, {column}: {cell} != {want}"
                checked += 1
    return checked


def test_readme_headline_table_is_metrics_summary():
    """The README's one table gives the default profile's committed figures, variant by variant."""
    import json

    summary = json.loads((REPO / "metrics" / "summary.json").read_text(encoding="utf-8"))
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tables = [t for t in _tables(readme) if "dev accuracy" in t[0]]
    assert len(tables) == 1
    assert _check_table(tables[0], summary, "README.md") >= 3 * len(summary["students"])


@pytest.mark.parametrize(
    ("section", "source"),
    [
        ("Default profile", "metrics/summary.json"),
        ("Medium profile", "metrics/medium/summary.json"),
        ("GPU profile", "metrics/gpu/summary.json"),
    ],
)
def test_each_results_table_is_its_profiles_summary(section, source):
    """docs/results.md gives each profile's committed figures (mean ± std, share of the teacher, the difference to
    vanilla KD with its interval in points, McNemar's p, own-family agreement), variant by variant."""
    import json

    text = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    part = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    assert f"`{source}`" in part and re.search(r"[Cc]ommit [0-9a-f]{7}", part)
    summary = json.loads((REPO / source).read_text(encoding="utf-8"))
    tables = [t for t in _tables(part) if "dev accuracy" in t[0]]
    assert len(tables) == 1
    assert _check_table(tables[0], summary, f"results.md, {section}") >= 3 * len(summary["students"])

"""The documentation says what the code is: its paths exist, its names resolve, its commands and figures agree."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from pipeline.config import Params

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
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
        for match in re.findall(r"\b(?:pipeline|stages|tests|benchmarks|docs)/[\w./-]*", span)
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


def test_readme_keeps_one_command_each_for_set_up_the_experiment_and_the_tests():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert blocks[0].strip() == "./setup.sh"
    assert blocks[1].strip() == "source .venv/bin/activate && dvc repro"
    assert ".venv/bin/python -m pytest" in [b.strip() for b in blocks]
    assert "## Layout" in readme and all(f"`pipeline/{p}/`" in readme for p in PACKAGES)


def test_readme_and_pipeline_doc_state_the_same_measured_time_and_machine():
    """Bug 10: the default `dvc repro` is stated as the same measured time on a named machine in both places, and
    the rounded figure they give agrees with it. The first figure is the headline; later ones are other runs (a
    slower hour of the machine), which the docs may add."""
    texts = [(REPO / name).read_text(encoding="utf-8") for name in ("README.md", "docs/pipeline.md")]
    measured = [re.findall(r"clean clone[^.]*? took ([\d,]+) s", text)[:1] for text in texts]
    assert measured[0] and measured[0] == measured[1]
    seconds = int(measured[0][0].replace(",", ""))
    stated = (r"in about (\d+) minutes \(a clean clone", r"The default profile: a 2-core CPU in about (\d+) minutes")
    rounded = [set(re.findall(pattern, text)) for pattern, text in zip(stated, texts, strict=True)]
    assert rounded[0] and rounded[0] == rounded[1] and len(rounded[0]) == 1
    assert abs(int(next(iter(rounded[0]))) - seconds / 60) < 1
    assert all("2-core" in text and "idle" in text for text in texts)


def test_the_gpu_table_of_pipeline_md_is_metrics_gpu_summary():
    """docs/pipeline.md's GPU profile table gives the committed summary's figures (mean ± std, the difference to
    vanilla KD with its interval, in points), variant by variant."""
    import json

    summary = json.loads((REPO / "metrics" / "gpu" / "summary.json").read_text(encoding="utf-8"))
    teacher = summary["teacher"]["accuracy"]
    text = (REPO / "docs" / "pipeline.md").read_text(encoding="utf-8")
    table = text.split("Students, dev accuracy over 3 seeds:", 1)[1].split("\n\n", 2)[1]
    rows = {cells[0]: cells[1:] for line in table.splitlines()[2:] for cells in [line.strip("| ").split(" | ")]}
    assert set(rows) == set(summary["students"])
    for name, student in summary["students"].items():
        accuracy, kept, versus = (cell.strip() for cell in rows[name])
        assert accuracy == f"{student['accuracy']['mean']:.4f} ± {student['accuracy']['std']:.4f}", name
        assert kept == f"{student['accuracy']['mean'] / teacher:.1%}", name
        d = student.get("accuracy_vs_kd")
        want = "-" if d is None else f"{d['mean'] * 100:+.2f} [{d['ci95_low'] * 100:+.2f}, {d['ci95_high'] * 100:+.2f}]"
        assert versus == want, name

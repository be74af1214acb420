"""``egkd explain`` end to end through its command line, timed from outside and as it reports itself.

Each run is a fresh process (``python -m stages.cli explain ...``) in a folder
whose params.yaml holds only ``explain.views.count: 0`` (the code's defaults
otherwise), writing a fresh cache; a ``rerun`` runs the same command again on that
cache, which has nothing to compute. The views are off because the in-process rate
these runs are compared with is the explainer's alone: views cost 12 more teacher
forwards per sentence, which the comparison would charge to the command line.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NO_VIEWS = "explain:\n  views:\n    count: 0\n"  # the runs' params.yaml: the explainer's work alone
_COMPUTED = re.compile(r"(\d+) of (\d+) rows in ([\d.]+) s \(([\d.]+|inf) ex/s\)")


@dataclass(frozen=True)
class EndToEnd:
    method: str  # gradient, perturbation or feature_selection (each family's default variant)
    limit: int  # the first N training sentences
    workers: int  # 0: in process; 1: one dask worker process
    rerun: bool = False  # run the same command again afterwards (nothing to compute)


def command(python: str, teacher: str, data: str, run: EndToEnd, out: Path) -> list[str]:
    return [
        python,
        "-m",
        "stages.cli",
        "explain",
        "--teacher",
        teacher,
        "--data",
        data,
        "--task",
        "sst2",
        "--split",
        "train",
        "--limit",
        str(run.limit),
        "--method",
        run.method,
        "--workers",
        str(run.workers),
        "--out",
        str(out),
    ]


def _one(cmd: list[str], cwd: Path, timeout: float) -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)  # carried wheels too
    env = {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s", "wall_s": round(time.perf_counter() - started, 1)}
    wall = time.perf_counter() - started
    out: dict = {"wall_s": round(wall, 2), "exit_code": done.returncode}
    found = _COMPUTED.search(done.stdout)
    if found:
        out.update(rows=int(found.group(1)), seconds=float(found.group(3)), ex_per_s=float(found.group(4)))
        out["ex_per_s_wall"] = out["rows"] / wall
    elif "nothing to compute" in done.stdout:
        out["nothing_to_compute"] = True
    if done.returncode != 0:
        out["error"] = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
    return out


def run_end_to_end(
    python: str, teacher: str, data: str, runs: Sequence[EndToEnd], scratch: Path, deadline: float
) -> list[dict]:
    """Every run in order, each given the time left before ``deadline`` (``time.perf_counter`` clock)."""
    results = []
    folder = Path(scratch)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(NO_VIEWS, encoding="utf-8")
    data = str(Path(data).resolve())  # the runs start in the scratch folder: a relative path would not resolve
    for index, run in enumerate(runs):
        left = deadline - time.perf_counter()
        base = {"method": run.method, "limit": run.limit, "workers": run.workers}
        if left < 10:
            results.append({**base, "error": "skipped: time limit"})
            continue
        out = folder / f"cache-{index}"
        cmd = command(python, teacher, data, run, out)
        measured = _one(cmd, folder, left)
        results.append({**base, **measured, "command": " ".join(cmd[1:])})
        print(f"end to end {run.method} --workers {run.workers} x{run.limit}: {measured}", flush=True)
        if run.rerun and "error" not in measured:
            again = _one(cmd, folder, max(10.0, deadline - time.perf_counter()))
            results.append({**base, "rerun": True, **again})
            print(f"  rerun: {again}", flush=True)
    return results

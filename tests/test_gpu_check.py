"""The GPU check's plumbing, which a GPU machine runs in one go (benchmarks/gpu_check_stage_two.md).

* ``benchmarks.stage_times`` reads each stage's seconds off a stamped ``dvc repro`` log, a finished and a cut-short
  one (exact values);
* ``benchmarks/dvc-repro-wheels.txt`` pins the locked versions, so the wheels it fetches are the dvc CI tests;
* the script itself runs a tiny profile end to end on the CPU in a copy of the working tree that is not a git
  repository, with the data and the model from outside it, as the GPU machine gets them; run again with
  ``CHECK_RESUME=1`` it finds nothing left to do.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_model_dir
from test_dvc_pipeline import REPO, TEXT_DIR, sh, tiny_params, tiny_sets

from benchmarks.stage_times import stage_times

LOG = """\
    0.4s torch 2.11.0 cuda True
    9.5s Running stage 'finetune':
    9.5s > egkd finetune --params params.yaml --data data/sets/sst2 --out models/teacher
   55.0s teacher saved to models/teacher
   56.2s Running stage 'explain@gradient':
   80.0s Stage 'explain@perturbation' didn't change, skipping
   90.7s Running stage 'distill@kd-0':
  101.1s Running stage 'distill@kd-1':
  120.6s Running stage 'report':
  130.0s Updating lock file 'dvc.lock'
  131.3s repro exited with 0
"""


def test_stage_times_of_a_finished_run():
    times = stage_times(LOG.splitlines())
    assert times.stages == {
        "finetune": 46.7,
        "explain@gradient": 34.5,
        "distill@kd-0": 10.4,
        "distill@kd-1": 19.5,
        "report": 10.7,
    }
    assert times.groups == {"finetune": 46.7, "explain": 34.5, "distill": 29.9, "report": 10.7}
    assert (times.first_start, times.end, times.exit_code, times.total, times.cut_short) == (9.5, 131.3, 0, 121.8, None)


def test_stage_times_of_a_run_cut_short():
    """The stage running when the log stops counts the seconds it had; the total is unknown."""
    times = stage_times(LOG.splitlines()[:8])
    assert times.stages["distill@kd-1"] == 0.0 and times.cut_short == "distill@kd-1"
    times = stage_times([*LOG.splitlines()[:8], "  150.0s epoch 1"])
    assert times.stages["distill@kd-1"] == 48.9 and times.groups["distill"] == 59.3
    assert (times.end, times.exit_code, times.total) == (None, None, None)


def _locked() -> dict[str, str]:
    text = (REPO / "requirements" / "lock.txt").read_text(encoding="utf-8")
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def test_the_dvc_wheels_are_the_locked_versions():
    lines = (REPO / "benchmarks" / "dvc-repro-wheels.txt").read_text(encoding="utf-8").splitlines()
    pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    locked = _locked()
    assert "dvc" in pins and "pygit2" in pins and "celery" not in pins
    assert {name: version for name, version in pins.items() if locked.get(name) != version} == {}


def _working_tree_copy(to: Path) -> None:
    """The working tree's files as a GPU machine gets them: tracked and untracked-not-ignored, no .git."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)


@pytest.mark.slow
def test_the_check_script_runs_a_tiny_profile_on_the_cpu(glue_dir, tmp_path):
    data = tmp_path / "data"
    sets = tiny_sets(tmp_path / "given", glue_dir, TEXT_DIR)
    shutil.copytree(sets["sst2"], data / "glue")
    shutil.copytree(sets["mpqa"], data / "text-classification" / "mpqa")
    model = make_tiny_model_dir(tmp_path / "base")
    params = tiny_params(model)
    params["finetune"]["model"] = "builtin:minilm-l6"  # the script names the model it is given in its place
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    copy, out = tmp_path / "copy", tmp_path / "out"
    _working_tree_copy(copy)

    env = {"CHECK_BENCHMARK": "0", "CHECK_PROFILE": str(tmp_path / "tiny.yaml")}
    printed = sh("env", *(f"{k}={v}" for k, v in env.items()), "bash", "benchmarks/gpu_check_stage_two.sh", model,
                 out, data, cwd=copy)  # fmt: skip
    assert "repro exited with 0" in printed, printed[-3000:]

    assert sorted(p.name for p in out.iterdir()) == [
        "gpu-profile-results.tar.gz",
        "gpu-profile-timings.json",
        "gpu-profile.log",
        "gpu.txt",
    ]
    machine = (out / "gpu.txt").read_text(encoding="utf-8")
    assert "| process start on cpu, fastest of the others: imports |" in machine, machine
    times = json.loads((out / "gpu-profile-timings.json").read_text(encoding="utf-8"))
    students = [f"distill@{name}-0" for name in params["experiment"]["variants"]]
    assert {"finetune", "evaluate_teacher", "report", *students} <= set(times["stages"])
    assert times["exit_code"] == 0 and times["cut_short"] is None
    assert abs(sum(times["stages"].values()) - times["total"]) < 0.1 * len(times["stages"])
    with tarfile.open(out / "gpu-profile-results.tar.gz") as archive:
        names = set(archive.getnames())
    assert {"metrics/summary.json", "reports/report.html", "dvc.lock", "models/students/kd-s0/metrics.json"} <= names
    assert f"model: {model}" in (copy / "params.yaml").read_text(encoding="utf-8")

    # the same call again on the same machine, keeping what the first finished: nothing is left to run
    env["CHECK_RESUME"] = "1"
    printed = sh("env", *(f"{k}={v}" for k, v in env.items()), "bash", "benchmarks/gpu_check_stage_two.sh", model,
                 out, data, cwd=copy)  # fmt: skip
    again = json.loads((out / "gpu-profile-timings.json").read_text(encoding="utf-8"))
    assert again["stages"] == {} and again["exit_code"] == 0, printed[-3000:]

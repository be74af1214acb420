"""benchmarks.repro renders dvc.yaml exactly as DVC does, orders the stages by their deps, and runs them.

The rendering is compared with what ``dvc repro --dry --force`` itself prints (``Running stage 'x':`` and
``> cmd`` lines) for the repository's own dvc.yaml + params.yaml and for a tiny pipeline full of edge cases,
each in a temporary git + DVC repository (the real one may be locked by a running ``dvc repro``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from benchmarks.repro import Yaml12Loader, main, order, render, unpack, upstream

REPO = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "opts": {
        "method": "none",
        "alpha": 0.0,
        "lr": 1.0e-4,
        "flag": True,
        "off": False,
        "nothing": None,
        "words": "two words",
        "quote": "it's",
        "empty": "",
        "list": ["a b", True, None, 1.5, 2],
        "none": [],
        "nested": {"depth": 3, "deeper": {"x": "y"}, "hollow": {}},
    },
    "flags": [True, False],
    "rates": [0.5, 1.0e-3],
    "names": ["alpha", "b c"],
    "seeds": [0, 1],
    "top": 7,
    "variants": [{"name": "v0", "options": {"k": 1}}, {"name": "v1", "options": {"k": 2, "b": False}}],
}
TINY_DVC_YAML = r"""
vars:
  - extra: {val: 3}
    folder: out
stages:
  types:
    cmd: echo ${top} ${opts.flag} ${opts.nothing} ${opts.lr} ${names[1]} \${literal} ${extra.val}
    deps: [ "${folder}/unpack.txt" ]
  unpack:
    cmd: echo ${opts} end
    outs: [ "${folder}/unpack.txt" ]
  lines:
    cmd: |
      echo one ${top}
      echo two
  grid:
    matrix: {flag: "${flags}", rate: "${rates}", name: "${names}"}
    cmd: echo ${item.flag} ${item.rate} ${item.name} ${key}
  literal:
    matrix:
      flag: [true, false, "${opts.flag}", "x${opts.flag}", null]
      num: [1.5, "${top}"]
    cmd: ["echo ${item.flag} ${item.num}", "echo ${key}"]
  mapped:
    matrix: {variant: "${variants}", seed: "${seeds}"}
    cmd: echo ${item.variant.name} ${item.variant.options} ${item.seed} ${key}
    metrics:
      - ${folder}/m-${item.variant.name}-${item.seed}.json:
          cache: false
"""


def make_repo(path: Path, dvc_yaml: str, params: str, config: str = "") -> Path:
    """A folder with dvc.yaml, params.yaml and, if given, .dvc/config text."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "dvc.yaml").write_text(dvc_yaml, encoding="utf-8")
    (path / "params.yaml").write_text(params, encoding="utf-8")
    if config:
        (path / ".dvc").mkdir(exist_ok=True)
        (path / ".dvc" / "config").write_text(config, encoding="utf-8")
    return path


def dvc_dry_run(path: Path) -> list[tuple[str, list[str]]]:
    """Make ``path`` a git + DVC repository (keeping its .dvc/config) and parse ``dvc repro --dry --force``."""
    pytest.importorskip("dvc")
    config = (path / ".dvc" / "config").read_text(encoding="utf-8") if (path / ".dvc" / "config").exists() else ""
    shutil.rmtree(path / ".dvc", ignore_errors=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for args in (["git", "init", "-q"], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(args, cwd=path, env=env, check=True, capture_output=True, timeout=60)
    (path / ".dvc" / "config").write_text(config, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "repro", "--dry", "--force"],
        cwd=path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    stages: list[tuple[str, list[str]]] = []
    for line in done.stdout.splitlines():
        if match := re.fullmatch(r"Running stage '(.+)':", line):
            stages.append((match[1], []))
        elif line.startswith("> "):
            stages[-1][1].append(line[2:])
    return stages


def rendered(path: Path) -> list[tuple[str, list[str]]]:
    return [(stage.name, list(stage.commands)) for stage in order(render(path))]


def test_the_repository_pipeline_renders_as_dvc_renders_it(tmp_path):
    """Same stage names, same commands, same order as dvc repro --dry on the real dvc.yaml + params.yaml."""
    repo = make_repo(
        tmp_path / "repo",
        (REPO / "dvc.yaml").read_text(encoding="utf-8"),
        (REPO / "params.yaml").read_text(encoding="utf-8"),
        (REPO / ".dvc" / "config").read_text(encoding="utf-8"),
    )
    ours = rendered(repo)
    names = [name for name, _ in ours]
    assert len(names) == 1 + 3 + 12 + 12 + 1  # 4 variants x 3 seeds
    assert names[:5] == [
        "finetune",
        "explain@gradient",
        "explain@perturbation",
        "explain@feature_selection",
        "distill@variant0-0",
    ]
    assert dict(ours)["distill@variant0-1"] == [
        (
            "egkd distill --params params.yaml --cache data/cache/sst2-gradient.parquet --view-cache data/cache"
            " --out models/students/kd-s1 --seed 1 --method none --views 0"
        )
    ]
    assert ours == dvc_dry_run(repo)  # last: without dvc, the test is skipped here


@pytest.mark.parametrize("config", ["", "[parsing]\n    bool = boolean_optional\n    list = append\n"])
def test_edge_cases_render_as_dvc_renders_them(tmp_path, config):
    """Unpacked mappings (both parsing options), matrix names of interpolated and literal values, escapes."""
    repo = make_repo(tmp_path / "tiny", TINY_DVC_YAML, yaml.safe_dump(TINY_PARAMS, sort_keys=False), config)
    ours = rendered(repo)
    assert ours[0] == (
        "unpack",
        [
            "echo --method none --alpha 0.0 --lr 0.0001 --flag" + " --no-off" * bool(config) + " --nothing None"
            " --words 'two words' --quote 'it'\"'\"'s' --empty '' --list "
            + ("'a b' --list True --list None --list 1.5 --list 2" if config else "'a b' True None 1.5 2")
            + " --nested.depth 3 --nested.deeper.x y end"
        ],
    )
    assert dict(ours)["types"] == ["echo 7 true None 0.0001 b c ${literal} 3"]
    assert dict(ours)["grid@True-0.001-b c"] == ["echo true 0.001 b c True-0.001-b c"]
    assert [name for name, _ in ours if name.startswith("literal@") and name.endswith("-7")] == [
        "literal@true-7",
        "literal@false-7",
        "literal@True-7",
        "literal@xtrue-7",
        "literal@None-7",
    ]
    assert dict(ours)["mapped@variant1-0"] == ["echo v1 --k 2" + " --no-b" * bool(config) + " 0 variant1-0"]
    assert ours == dvc_dry_run(repo)


def test_a_mapping_is_unpacked_as_dvc_unpacks_it():
    options = {"method": "none", "alpha": 0.0, "flag": True, "off": False, "nothing": None, "words": "a b"}
    expected = "--method none --alpha 0.0 --flag --nothing None --words 'a b'"
    assert unpack(options, {}, "here") == expected
    assert unpack(options, {"bool": "boolean_optional"}, "here") == expected.replace("--flag", "--flag --no-off")
    interpolate = pytest.importorskip("dvc.parsing.interpolate")
    assert interpolate.to_str(options) == expected


def test_no_stage_precedes_one_it_depends_on():
    stages = order(render(REPO))
    position = {stage.name: i for i, stage in enumerate(stages)}
    needs = upstream(stages)
    assert all(position[before] < position[stage.name] for stage in stages for before in needs[stage.name])
    assert needs["report"] == {s.name for s in stages if s.group in ("finetune", "explain", "distill", "evaluate")}
    assert needs["evaluate@variant3-2"] == {
        "distill@variant3-2",
        "explain@gradient",
        "explain@perturbation",
        "explain@feature_selection",
    }


RUN_YAML = """
stages:
  b:
    cmd: cat a/x1.txt a/x2.txt > b.txt && echo "$DVC_STAGE"
    deps: [a]
    outs: [b.txt]
  a:
    matrix: {i: [1, 2]}
    cmd: ["mkdir -p a", "echo ${item.i} > a/x${item.i}.txt"]
    outs: ["a/x${item.i}.txt"]
  fails:
    cmd: exit ${code}
    outs: [f.txt]
  after:
    cmd: touch after.txt
    deps: [f.txt]
  free:
    cmd: touch free.txt
"""


def test_runs_in_dependency_order_and_writes_timings(tmp_path, capfd):
    """Upstream first (b needs the folder a@1 and a@2 write into), stale outputs removed, DVC_STAGE set;
    --keep-going skips only what depends on the failure."""
    repo = make_repo(tmp_path, RUN_YAML, "code: 3\n")
    (tmp_path / "b.txt").write_text("stale", encoding="utf-8")
    assert main(["--keep-going", "--timings", str(tmp_path / "t.json")], root=repo) == 2
    out, err = capfd.readouterr()
    assert re.findall(r"Running stage '(.+)':", out) == ["a@1", "a@2", "b", "fails", "free"]
    assert "Skipping stage 'after'" in out and "b\n" in out and "| a | 2 |" in out
    assert err.splitlines() == ["error: stage 'fails' failed with exit code 3", "error: 1 stage(s) failed: fails"]
    assert (tmp_path / "b.txt").read_text(encoding="utf-8") == "1\n2\n"
    assert (tmp_path / "free.txt").exists() and not (tmp_path / "after.txt").exists()
    timings = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert list(timings["stages"]) == ["a@1", "a@2", "b", "fails", "free"]
    assert timings["groups"]["a"] == pytest.approx(timings["stages"]["a@1"] + timings["stages"]["a@2"], abs=2e-3)
    assert timings["total"] == pytest.approx(sum(timings["stages"].values()), abs=5e-3)
    assert timings["failed"] == ["fails"] and timings["start"] <= timings["end"]
    assert timings["total"] <= timings["wall"] + 5e-3  # one job: the stages' seconds add up to at most the wall time
    assert re.findall(r"Stage '(.+)' (done|failed) in [0-9.]+ s", out) == [
        ("a@1", "done"),
        ("a@2", "done"),
        ("b", "done"),
        ("fails", "failed"),
        ("free", "done"),
    ]


def test_stops_at_the_first_failure_and_runs_only_the_selected_prefixes(tmp_path, capfd):
    repo = make_repo(tmp_path, RUN_YAML, "code: 3\n")
    assert main([], root=repo) == 2
    assert re.findall(r"Running stage '(.+)':", capfd.readouterr().out) == ["a@1", "a@2", "b", "fails"]
    assert main(["--stage", "free", "a@2"], root=repo) == 0
    assert re.findall(r"Running stage '(.+)':", capfd.readouterr().out) == ["a@2", "free"]
    assert main(["--dry", "--stage", "b"], root=repo) == 0
    assert capfd.readouterr().out == "Running stage 'b':\n> cat a/x1.txt a/x2.txt > b.txt && echo \"$DVC_STAGE\"\n\n"


@pytest.mark.parametrize(
    ("dvc_yaml", "params", "message"),
    [
        (
            "stages:\n  x:\n    cmd: echo ${data.nope}\n",
            "data: {task: sst2}\n",
            "error: dvc.yaml: stage 'x': cmd: '${data.nope}' is not in params.yaml or vars",
        ),
        (
            "stages:\n  x:\n    matrix: {v: '${vs}'}\n    cmd: echo ${item.w}\n",
            "vs: [1]\n",
            "error: dvc.yaml: stage 'x@1': cmd: '${item.w}' is not in params.yaml or vars",
        ),
        ("stages:\n  x:\n    deps: [a]\n", "a: 1\n", "error: dvc.yaml: stage 'x' must be a mapping with a 'cmd'"),
        (
            "stages:\n  x:\n    cmd: echo\n    outs: {a: 1}\n",
            "a: 1\n",
            "error: dvc.yaml: stage 'x': outs must be a list",
        ),
        (
            "stages:\n  x:\n    cmd: echo ${l}\n",
            "l: [1]\n",
            "error: dvc.yaml: stage 'x': cmd: cannot interpolate a list ('${l}') here",
        ),
        (None, "a: 1\n", None),
    ],
)
def test_errors_are_one_line_with_exit_status_2(tmp_path, capsys, dvc_yaml, params, message):
    make_repo(tmp_path, dvc_yaml or "", params)
    if dvc_yaml is None:
        (tmp_path / "dvc.yaml").unlink()
        message = f"error: dvc.yaml not found in {tmp_path.resolve()}"
    assert main(["--dry"], root=tmp_path) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", message + "\n")


def test_without_ruamel_yaml_scalars_are_read_as_dvc_reads_them():
    """The PyYAML fallback reads YAML 1.2 booleans and floats as ruamel.yaml (DVC's parser) does."""
    ruamel = pytest.importorskip("ruamel.yaml")
    text = (
        "a: yes\nb: on\nc: 1e-4\nd: 1.0e-4\ne: True\nf: .5\ng: -1.5e+3\nh: .inf\ni: ~\nj: off\nk: 12\nl: 1E3\n"
        "m: 010\nn: 0o10\no: -0x1F\np: 1_000\nq: -.5e3\nr: 2024-01-02\ns: +7\n"
    )
    ours = yaml.load(text, Loader=Yaml12Loader)  # noqa: S506  (a SafeLoader subclass)
    assert ours == ruamel.YAML(typ="safe").load(text)
    assert ours["a"] == "yes" and ours["c"] == 1e-4 and ours["m"] == 10 and yaml.safe_load("a: yes") == {"a": True}


PARALLEL_YAML = """
stages:
  slow:
    cmd: sleep 1 && echo slow > slow.txt
    outs: [slow.txt]
  quick:
    matrix: {i: [1, 2, 3]}
    cmd: test ! -e slow.txt && sleep 0.2 && echo ${item.i} > q${item.i}.txt
    outs: ["q${item.i}.txt"]
  join:
    cmd: cat slow.txt q1.txt q2.txt q3.txt > join.txt && echo "$OMP_NUM_THREADS" > threads.txt
    deps: [slow.txt, q1.txt, q2.txt, q3.txt]
    outs: [join.txt, threads.txt]
"""


def test_jobs_run_independent_stages_at_once_and_dependants_after(tmp_path, capfd, monkeypatch):
    """With --jobs 2 the quick stages run while the slow one does (they would fail after it), and the stage
    that needs all four waits for them; its threads are the cores shared out between the jobs."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    repo = make_repo(tmp_path, PARALLEL_YAML, "a: 1\n")
    assert main(["--jobs", "2", "--timings", str(tmp_path / "t.json")], root=repo) == 0
    assert re.findall(r"Running stage '(.+)':", capfd.readouterr().out) == [
        "slow",
        "quick@1",
        "quick@2",
        "quick@3",
        "join",
    ]
    assert (tmp_path / "join.txt").read_text(encoding="utf-8") == "slow\n1\n2\n3\n"
    assert (tmp_path / "threads.txt").read_text(encoding="utf-8") == "4\n"
    timings = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert timings["wall"] < timings["total"] - 0.3  # the quick stages (0.6 s in all) ran during the slow one
    assert list(timings["stages"]) == [
        "slow",
        "quick@1",
        "quick@2",
        "quick@3",
        "join",
    ]
    assert main(["--jobs", "1"], root=repo) == 2  # one by one, the quick stages run after slow.txt exists
    assert main(["--jobs", "0"], root=repo) == 2
    assert capfd.readouterr().err.endswith("error: --jobs must be at least 1, got 0\n")

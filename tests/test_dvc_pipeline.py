"""The DVC pipeline end to end with tiny models, queued experiments, and sharing a cache through a DVC remote.

The pipeline tests build a temporary git + DVC repository, add a tiny SST-2 (the real files' first rows) and MPQA
with ``egkd data add`` under ``data/sets/`` as the README's set-up does, and call ``dvc`` and ``egkd`` from this
interpreter's bin folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import make_tiny_model_dir

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TEXT_DIR = REPO.parent / "shared" / "data" / "text-classification"


def sh(*args: str | Path, cwd: Path) -> str:
    """Run a command with this venv's bin first on PATH; fail with its output."""
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(map(str, args))} failed ({done.returncode}):\n{output[-6000:]}"
    return output


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def tiny_glue(root: Path, glue_dir: Path, train: int = 40, dev: int = 16) -> Path:
    """The first rows of the real SST-2 files in the GLUE layout under ``root/shared/data/glue``."""
    folder = root / "shared" / "data" / "glue" / "SST-2"
    folder.mkdir(parents=True)
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        lines = (glue_dir / "SST-2" / name).read_text(encoding="utf-8").splitlines()[: rows + 1]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder.parent


def init_repo(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    sh("git", "init", "-q", "-b", "main", cwd=path)
    sh(BIN / "dvc", "init", "-q", cwd=path)
    sh(BIN / "dvc", "config", "core.analytics", "false", cwd=path)


def tiny_sets(root: Path, glue_dir: Path, text_classification: Path) -> dict[str, Path]:
    """The data sets the tiny experiment adds: a tiny SST-2 and MPQA's first 15 positive and 15 negative phrases."""
    mpqa = root / "shared" / "mpqa"
    mpqa.mkdir(parents=True)
    header, *rows = (text_classification / "mpqa" / "test.csv").read_text(encoding="utf-8").splitlines()
    kept = [r for r in rows if r.endswith(",1")][:15] + [r for r in rows if r.endswith(",0")][:15]
    (mpqa / "test.csv").write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    return {"sst2": tiny_glue(root, glue_dir), "mpqa": mpqa}


def tiny_experiment(repo: Path, sets: dict[str, Path], base: Path) -> dict:
    """A git + DVC repository of the project's pipeline files, its data added, the tiny params committed."""
    init_repo(repo)
    for name in ("dvc.yaml", ".dvcignore", ".dvc/config", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    for template in (REPO / ".dvc" / "plots").glob("*.json"):
        (repo / ".dvc" / "plots").mkdir(exist_ok=True)
        shutil.copy(template, repo / ".dvc" / "plots" / template.name)
    params = tiny_params(base)
    write_params(repo, params)  # dvc add reads dvc.yaml, whose paths need the params
    sh(BIN / "egkd", "data", "add", sets["sst2"], "--task", "sst2", "--out", "data/sets/sst2", cwd=repo)
    sh(BIN / "egkd", "data", "add", sets["mpqa"], "--out", "data/sets/mpqa", cwd=repo)
    sh("git", "add", "-A", cwd=repo)
    sh("git", "commit", "-q", "-m", "tiny experiment", cwd=repo)
    return params


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


HEADLINES = ("headline", "sets/dev", "sets/heldout", "sets/mpqa")
GUIDED = "gradient-occl-contrastive"  # the gradient objective with the occlusion maps' views: two caches per student


def tiny_params(base_model: Path) -> dict:
    """The repository's params.yaml shrunk to tiny sizes: every key stays, so dvc.yaml resolves."""
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["data"].update(train_limit=40, dev_limit=16, max_length=32)
    params["finetune"]["model"] = str(base_model)
    params["finetune"]["train"].update(epochs=1, batch_size=8, lr=1e-3)
    params["explain"].update(batch_size=16, partition_size=16)
    params["explain"]["feature_selection"]["samples"] = 8
    params["explain"]["views"].update(count=2)
    params["distill"].update(layers=1, checkpoint_every=100)
    params["distill"]["train"].update(epochs=1, batch_size=8, min_steps=0)
    params["evaluate"].update(batch_size=16)
    variants = params["experiment"]["variants"]
    params["experiment"].update(
        seeds=[0],
        train_examples=24,
        agreement_examples=8,
        report_examples=2,
        variants={name: variants[name] for name in ("kd", "kd-random", GUIDED)},
    )
    params["experiment"]["eval_sets"]["heldout"].update(skip=30, limit=10)
    return params


def test_dvc_yaml_resolves_with_the_repository_params():
    """Every stage calls egkd with params.yaml; paths only in dvc.yaml; one stage per variant and seed."""
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    from pipeline.config import load_params

    params = load_params(REPO / "params.yaml")
    # the pipeline's stages (data/sets/*.dvc are stages too, without a name)
    stages = {s.name: s for s in Repo(str(REPO)).index.stages if isinstance(s, PipelineStage)}
    runs = len(params.experiment.variants) * len(params.experiment.seeds)
    assert len([n for n in stages if n.startswith("distill@")]) == runs
    assert len([n for n in stages if n.startswith("evaluate@")]) == runs
    assert {"finetune", "report", "explain@gradient", "explain@perturbation", "explain@feature_selection"} <= set(
        stages
    )
    for stage in stages.values():
        commands = stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]
        assert all(c.startswith("egkd ") and "--params params.yaml" in c for c in commands), stage.name
        assert stage.params, f"{stage.name} lists no params"
    for stage in stages.values():  # a stage that reads the data reruns when the data settings change
        commands = " ".join(stage.cmd if isinstance(stage.cmd, list) else [stage.cmd])
        if "--data " in commands:
            keys = {key for dependency in stage.params for key in dependency.params}
            # the digest reads the folders' bytes, not their examples: no data setting changes it
            assert keys & {"data", "data.source"} or commands.startswith("egkd data digest "), stage.name
            assert "--data data/sets/" in commands, stage.name  # inside the workspace: queued experiments see it
    for name in (v.name for v in params.experiment.variants):  # a student depends on its own variant only
        keys = {key for dependency in stages[f"distill@{name}-0"].params for key in dependency.params}
        assert {"distill", f"experiment.variants.{name}"} <= keys and "experiment.variants" not in keys
    text = (REPO / "dvc.yaml").read_text()
    assert "shared/data" not in text and ".." not in text.split("stages:")[1]  # nothing outside the workspace
    for path in [*REPO.glob("pipeline/**/*.py"), *REPO.glob("stages/*.py"), *REPO.glob("params*.yaml")]:
        assert "shared/data" not in path.read_text(encoding="utf-8"), path


def test_the_data_sets_are_tracked_by_dvc():
    """The committed data/sets/<name>.dvc files are what `egkd data add` writes for the shared data (./setup.sh
    adds them on a fresh clone): the default profile's task and evaluation sets are among them."""
    from pipeline.config import load_params

    params = load_params(REPO / "params.yaml")
    tracked = {p.stem for p in (REPO / "data" / "sets").glob("*.dvc")}
    wanted = {params.data.task} | {s.data for s in params.experiment.eval_sets.values() if s.data is not None}
    assert wanted <= tracked
    for name in tracked:
        entry = yaml.safe_load((REPO / "data" / "sets" / f"{name}.dvc").read_text())
        assert entry["outs"][0]["path"] == name and entry["outs"][0]["md5"].endswith(".dir")


@pytest.mark.parametrize("profile", ["full", "gpu", "medium"])
def test_each_profile_is_the_defaults_with_its_keys(profile, tmp_path, monkeypatch):
    """`egkd profile NAME` writes the profile's whole params.yaml, which loads to the packaged defaults with the
    profile's keys; `egkd profile` writes the defaults back."""
    from pipeline.config import Params, load_params
    from pipeline.profiles import profile_params

    params = profile_params(str(REPO / "profiles" / f"{profile}.yaml"))
    if profile != "medium":
        assert params.data.train_limit is None and params.distill.layers == {"full": 6}.get(profile, 3)
    monkeypatch.chdir(tmp_path)
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    output = sh(BIN / "egkd", "profile", profile, cwd=tmp_path)
    assert output.startswith(f"params.yaml: profile {profile}, ") and load_params(tmp_path / "params.yaml") == params
    sh(BIN / "egkd", "profile", cwd=tmp_path)
    assert (tmp_path / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    assert load_params(tmp_path / "params.yaml") == Params()


def _view_variants(params) -> dict[str, tuple]:
    """Each variant's (method, views per step, view kind, the views' family when another's) as the distill section
    and its options make it."""
    out = {}
    for v in params.experiment.variants:
        d = v.options.apply(params.distill)
        method = d.method_name
        kind = d.view_kind if d.views else None
        out[v.name] = (method, d.views, kind, d.view_method.value if d.views and d.view_method else None)
    return out


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/medium.yaml"])
def test_the_view_variants_and_their_fair_baseline(profile):
    """finetune and kd see no views; kd-random trains on random views, as many as the guided variants; a
    `<method>-views` variant is its family's objective with guided views; a
    `kd-<kind>` variant is KD on guided views of that kind; `<method>-<family>-<kind>` (or `kd-<family>-<kind>`) an
    objective with another family's views of that kind, the family as grad, occl or fs."""
    from pipeline.config import load_params

    params = load_params(REPO / profile)
    variants = _view_variants(params)
    no_views = (0, None, None)
    assert variants.get("finetune", ("none", *no_views))[1:] == no_views and variants["kd"] == ("none", *no_views)
    method, count, kind, borrowed = variants["kd-random"]
    assert method == "none" and count > 0 and kind == "random" and borrowed is None
    guided = {name: v for name, v in variants.items() if v[2] in {"preserving", "contrastive"}}
    assert guided and all(v[1] == count for v in guided.values())
    assert {name for name in variants if name.endswith("-views")} <= set(guided)
    short = {"gradient": "grad", "perturbation": "occl", "feature_selection": "fs"}
    for name, (method, _, kind, borrowed) in guided.items():
        if borrowed is not None and borrowed != method:
            assert name == f"{'kd' if method == 'none' else method}-{short[borrowed]}-{kind}"
        else:
            assert name == (f"kd-{kind}" if method == "none" else f"{method}-views")


def test_the_medium_profile_is_the_evaluation_set_study(glue_dir):
    """Five seeds of 3-layer students cut from a stronger teacher, on 2,000 sentences; KD, KD on random views and
    KD on views each family's map chooses, preserving and contrastive, and a guided objective; every student scored
    on dev, on SST-2 training sentences no stage reads, and on MPQA."""
    from pipeline.config import load_params
    from pipeline.methods import Method

    params = load_params(REPO / "profiles" / "medium.yaml")
    assert params.experiment.train_examples == 2000 and params.experiment.seeds == (0, 1, 2, 3, 4)
    assert params.data.train_limit is not None and params.data.train_limit > 4000  # a stronger teacher
    assert params.distill.student == "teacher" and params.distill.layers == 3
    assert [m.value for m in params.experiment.methods] == ["gradient", "perturbation", "feature_selection"]
    variants = _view_variants(params)
    assert {"kd", "kd-random", "kd-preserving", "kd-contrastive", "gradient-occl-contrastive"} <= set(variants)
    kd_views = [v for v in params.experiment.variants if variants[v.name][0] == "none" and variants[v.name][2]]
    assert {v.family(params.distill) for v in kd_views} == {None, *Method}  # random, and each family's map choosing
    sets = params.experiment.eval_sets
    assert list(sets) == ["dev", "heldout", "mpqa"] and sets["mpqa"].data == "mpqa"
    heldout = sets["heldout"]
    assert heldout.split == "train" and heldout.skip >= params.data.train_limit and heldout.data is None


def test_the_fraction_study_is_the_medium_profile_with_wider_views():
    """research/profiles/medium-fraction.yaml: the medium profile's teacher, students and sets (so DVC's run cache
    gives it the medium teacher), views masking 40% of the tokens, KD and the view variants of the occlusion cache."""
    from pipeline.config import load_params
    from pipeline.profiles import profile_params

    medium = load_params(REPO / "profiles" / "medium.yaml")
    study = profile_params(str(REPO / "research" / "profiles" / "medium-fraction.yaml"))
    assert (study.data, study.finetune, study.distill) == (medium.data, medium.finetune, medium.distill)
    assert study.explain.views.fraction == 0.4 and medium.explain.views.fraction == 0.2
    same = ("seeds", "train_examples", "agreement_examples", "eval_sets")
    assert all(getattr(study.experiment, key) == getattr(medium.experiment, key) for key in same)
    names = ["kd", "kd-random", "kd-preserving", "kd-contrastive"]
    assert [v.name for v in study.experiment.variants] == names
    assert all(study.experiment.variant(n).options == medium.experiment.variant(n).options for n in names)
    assert {v.cache.value for v in study.experiment.variants} == {"perturbation"}


def test_gpu_profile_is_the_whole_of_sst2_offline(glue_dir):
    """profiles/gpu.yaml: every SST-2 training sentence through stage one and the students, the whole dev set,
    the packaged MiniLM-L6 (no hub), 5 variants x 3 seeds of 3-layer students on the GPU."""
    from pipeline.config import load_params

    params = load_params(REPO / "profiles" / "gpu.yaml")
    train_rows = len((glue_dir / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()) - 1
    dev_rows = len((glue_dir / "SST-2" / "dev.tsv").read_text(encoding="utf-8").splitlines()) - 1
    assert (train_rows, dev_rows) == (67_349, 872)
    assert params.data.train_limit is None and params.data.dev_limit is None
    assert params.experiment.train_examples == train_rows and params.experiment.agreement_examples == dev_rows
    assert params.finetune.model.startswith("builtin:") and params.data.source == "local"
    assert [m.value for m in params.experiment.methods] == ["gradient", "perturbation", "feature_selection"]
    assert len(params.experiment.variants) == 5 and params.experiment.seeds == (0, 1, 2)
    assert params.distill.layers == 3 and params.compute.device == "auto" and params.explain.workers == 0


@pytest.mark.slow
def test_pipeline_runs_skips_and_reruns_only_what_changed(glue_dir, tmp_path):
    sets = tiny_sets(tmp_path, glue_dir, TEXT_DIR)
    repo = tmp_path / "repo"
    params = tiny_experiment(repo, sets, make_tiny_model_dir(tmp_path / "base"))

    first = ran_stages(sh(BIN / "dvc", "repro", cwd=repo))
    methods = ["gradient", "perturbation", "feature_selection"]
    students = {f"distill@{name}-0" for name in ("kd", "kd-random", GUIDED)}
    evaluations = {f"evaluate@{name}-0" for name in ("kd", "kd-random", GUIDED)}
    assert first == {
        "finetune",
        "eval_data",
        "evaluate_teacher",
        "report",
        *students,
        *evaluations,
        *(f"explain@{m}" for m in methods),
    }

    summary = json.loads((repo / "metrics" / "summary.json").read_text())
    assert set(summary["students"]) == {"kd", "kd-random", GUIDED}
    # every student is compared with the teacher on all three kinds of explanation
    assert set(summary["students"]["kd"]["spearman"]) == set(methods)
    assert set(summary["students"][GUIDED]["top_k_overlap"]) == set(methods)
    page = (repo / "reports" / "report.html").read_text()
    assert page.count("<polyline") == 3 and 'class="tok"' in page
    assert summary["students"][GUIDED]["accuracy_vs_kd"]["seeds"] == 1  # one seed: no interval yet
    assert set(summary["students"][GUIDED]["mcnemar_vs_kd"]) == {"b", "c", "p_value", "per_seed"}
    # the view variants trained on their cached views (dvc.yaml passed --view_kind and friends through)
    for name, kind in (("kd-random", "random"), (GUIDED, "contrastive")):
        card = (repo / "models" / "students" / f"{name}-s0" / "README.md").read_text()
        assert f"KD on 1 cached {kind} view(s) per example per step" in card, name
        log = (repo / "models" / "students" / f"{name}-s0" / "train_log.jsonl").read_text().splitlines()
        assert all(json.loads(line)["views"] is not None for line in log)
    # and the guided one's views are the occlusion maps', found by dvc.yaml's --view-cache in data/cache
    guided = json.loads((repo / "models" / "students" / f"{GUIDED}-s0" / "metrics.json").read_text())
    assert guided["views_from"] == "the perturbation family's, from data/cache/sst2-perturbation.parquet"
    kd_log = (repo / "models" / "students" / "kd-s0" / "train_log.jsonl").read_text().splitlines()
    assert all(json.loads(line)["views"] is None for line in kd_log)
    # the DVC metrics are the headline figures only, one file (one row of `dvc metrics show`) per variant, for dev
    # and for each evaluation set
    metrics = json.loads(sh(BIN / "dvc", "metrics", "show", "--json", cwd=repo))
    files = metrics[""]["data"]
    names = ("kd", "kd-random", GUIDED, "teacher")
    assert set(files) == {f"metrics/{folder}/{name}.json" for folder in HEADLINES for name in names}
    assert set(files[f"metrics/headline/{GUIDED}.json"]["data"]) == {"accuracy", "accuracy_std", "agreement", "vs_kd"}
    assert set(files[f"metrics/sets/mpqa/{GUIDED}.json"]["data"]) == {
        "accuracy",
        "accuracy_std",
        "retention",
        "vs_kd",
        "vs_random",
    }
    # every student and the teacher scored on each evaluation set
    for name in ("dev", "heldout", "mpqa"):
        assert set(summary["students"]["kd"]["sets"][name]["accuracy"]) == {"mean", "std"}
        assert set(summary["students"][GUIDED]["sets"][name]["accuracy_vs_random"]) >= {"mean", "seeds"}
    assert json.loads((repo / "metrics" / "teacher.json").read_text())["sets"].keys() == {"dev", "heldout", "mpqa"}
    for folder in ("metrics/headline", "metrics/sets"):
        table = sh(BIN / "dvc", "metrics", "show", folder, cwd=repo)
        assert max(len(line) for line in table.splitlines()) <= 120, table
    sh(BIN / "dvc", "plots", "show", "-q", cwd=repo)
    plots_page = (repo / "dvc_plots" / "index.html").read_text()
    assert "loss_smoothed" in plots_page and "variant" in plots_page

    again = sh(BIN / "dvc", "repro", cwd=repo)
    assert ran_stages(again) == set(), again
    # a killed stage loses no finished work: the outputs persist, so stage one computes only the parts it lacks, and a
    # student continues from its checkpoint (here its last one) to the same weights
    student = repo / "models" / "students" / "kd-s0"
    weights = (student / "model.safetensors").read_bytes()
    (student / "model.safetensors").unlink()
    resumed = sh(BIN / "dvc", "repro", cwd=repo)
    assert "distill@kd-0" in ran_stages(resumed) and "resumed from the checkpoint at step" in resumed, resumed
    assert (student / "model.safetensors").read_bytes() == weights
    parts = sorted((repo / "data/cache/sst2-gradient.parquet/method=gradient/split=train").glob("part-*.parquet"))
    parts[-1].unlink()
    resumed = sh(BIN / "dvc", "repro", cwd=repo)
    assert f"computed 1 part(s), skipped {len(parts) - 1} already in the cache" in resumed, resumed
    # a data set added for something else: only the digest of the evaluations' folders runs, and finds them unchanged
    sh(BIN / "egkd", "data", "add", sets["mpqa"], "--out", "data/sets/other", cwd=repo)
    assert stale(repo) == {"eval_data"}
    added = sh(BIN / "dvc", "repro", cwd=repo)
    assert ran_stages(added) == {"eval_data"}, added

    # a variant appended, and the others reordered: only its stages and the report are out of date
    variants = params["experiment"]["variants"]
    variants = {"kd-low-alpha": {**variants["kd"], "options": {**variants["kd"]["options"], "alpha": 0.2}}} | dict(
        reversed(list(variants.items()))
    )
    write_params(repo, {**params, "experiment": {**params["experiment"], "variants": variants}})
    assert stale(repo) == {"distill@kd-low-alpha-0", "evaluate@kd-low-alpha-0", "report"}
    # a changed default reruns every student that takes it, and their evaluations
    params["distill"]["train"]["lr"] = 5e-4
    write_params(repo, params)
    rerun = sh(BIN / "dvc", "repro", cwd=repo)
    assert ran_stages(rerun) == {*students, *evaluations, "report"}
    assert rerun.count("note: trained from the first step: the checkpoint in ") == len(students)  # not resumed


def stale(repo: Path) -> set[str]:
    """The stages ``dvc status`` lists as changed."""
    status = json.loads(sh(BIN / "dvc", "status", "--json", cwd=repo))
    return {name.split(":")[-1] for name in status}


@pytest.mark.slow
def test_two_queued_experiments_run_side_by_side(glue_dir, tmp_path):
    """`dvc exp run --queue` then `dvc queue start -j 2`, offline: both experiments run in copies of the workspace
    (the data is DVC's, inside it) and `dvc exp show` lists both with their headline metrics."""
    sets = tiny_sets(tmp_path, glue_dir, TEXT_DIR)
    repo = tmp_path / "repo"
    params = tiny_experiment(repo, sets, make_tiny_model_dir(tmp_path / "base"))
    params["experiment"].update(methods=["gradient"], variants={"kd": params["experiment"]["variants"]["kd"]})
    write_params(repo, params)
    sh("git", "commit", "-q", "-am", "one variant", cwd=repo)
    for beta in ("0.2", "0.4"):
        sh(BIN / "dvc", "exp", "run", "--queue", "-S", f"distill.alpha={beta}", cwd=repo)
    sh(BIN / "dvc", "queue", "start", "-j", "2", cwd=repo)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        queue = sh(BIN / "dvc", "queue", "status", cwd=repo)
        if "Running" not in queue and "Queued" not in queue:
            break
        time.sleep(5)
    assert queue.count("Success") == 2, queue + sh(BIN / "dvc", "queue", "logs", queue.split()[5], cwd=repo)
    shown = json.loads(sh(BIN / "dvc", "exp", "show", "--json", cwd=repo))
    experiments = [e for row in shown for e in (row.get("experiments") or [])]
    alphas, accuracies = set(), set()
    for experiment in experiments:
        data = experiment["revs"][0]["data"]
        alphas.add(data["params"]["params.yaml"]["data"]["distill"]["alpha"])
        accuracies.add("accuracy" in data["metrics"]["metrics/headline/kd.json"]["data"])
    assert alphas == {0.2, 0.4} and accuracies == {True}


def test_share_a_cache_through_a_remote_and_train_without_the_teacher(glue_dir, tmp_path):
    glue = tiny_glue(tmp_path, glue_dir)
    base = make_tiny_model_dir(tmp_path / "base")
    teacher, remote = tmp_path / "teacher", tmp_path / "remote"
    sh(
        BIN / "egkd",
        "finetune",
        "--model",
        base,
        "--data",
        glue,
        "--limit",
        "24",
        "--dev-limit",
        "8",
        "--epochs",
        "1",
        "--out",
        teacher,
        cwd=tmp_path,
    )

    first = tmp_path / "first"
    init_repo(first)
    cache = "data/cache/sst2-gradient.parquet"
    for split, limit in (("train", "24"), ("dev", "8")):
        sh(
            BIN / "egkd",
            "explain",
            "--method",
            "gradient",
            "--teacher",
            teacher,
            "--data",
            glue,
            "--split",
            split,
            "--limit",
            limit,
            "--out",
            cache,
            cwd=first,
        )
    sh(BIN / "dvc", "add", "-q", cache, cwd=first)
    sh(BIN / "dvc", "remote", "add", "-d", "store", remote, cwd=first)
    sh("git", "add", "-A", cwd=first)
    sh("git", "commit", "-q", "-m", "share the gradient cache", cwd=first)
    sh(BIN / "dvc", "push", "-q", cwd=first)

    second = tmp_path / "second"
    sh("git", "clone", "-q", first, second, cwd=tmp_path)
    shutil.rmtree(teacher)  # stage two never needs it
    assert not (second / cache).exists()
    sh(BIN / "dvc", "pull", "-q", cwd=second)
    assert "OK: 2 partition(s)" in sh(BIN / "egkd", "cache", "verify", cache, cwd=second)
    sh(
        BIN / "egkd",
        "distill",
        "--cache",
        cache,
        "--method",
        "gradient",
        "--student",
        "base",  # the teacher's base model's layers: the teacher itself is not on this machine
        "--layers",
        "1",
        "--epochs",
        "1",
        "--min-steps",
        "0",
        "--out",
        "models/student",
        cwd=second,
    )
    metrics = json.loads((second / "models" / "student" / "metrics.json").read_text())
    assert metrics["method"] == "gradient" and metrics["train_examples"] == 24
    assert metrics["dev"]["count"] == 8

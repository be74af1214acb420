"""`egkd report`: aggregation over seeds, the summary and plot files, heatmaps and the HTML page."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
from pathlib import Path

import pytest
from conftest import make_tiny_model_dir
from distill_cache import build_cache
from typer.testing import CliRunner

from pipeline import versions
from pipeline.config import load_params
from pipeline.errors import EgkdError
from pipeline.methods import Method
from pipeline.report.build import ReportRequest, build_report, format_table
from pipeline.report.data import Stat, read_losses, split_name
from pipeline.report.heatmaps import TokenScore
from pipeline.report.html import highlighted
from pipeline.report.plots import smoothed
from pipeline.report.svg import nice_ticks
from stages.cli import app

runner = CliRunner()

# (variant, seed) -> (dev accuracy, spearman by method)
RESULTS = {
    ("kd", 0): (0.80, {"gradient": 0.10, "perturbation": 0.30}),
    ("kd", 1): (0.84, {"gradient": 0.20, "perturbation": 0.50}),
    ("gradient", 0): (0.82, {"gradient": 0.60}),
    ("gradient", 1): (0.86, {"gradient": 0.70}),
    ("gradient", 2): (0.84, {"gradient": 0.80}),
}


def write_evaluation(path: Path, model: Path, accuracy: float, method: str | None, spearman: float | None) -> None:
    report = {
        "model": str(model),
        "task": "sst2",
        "split": "dev",
        "metrics": {"main_name": "accuracy", "main": accuracy, "values": [["accuracy", accuracy]], "count": 872},
        "explanations": [],
    }
    if method is not None:
        report["explanations"].append(
            {
                "cache": f"data/cache/sst2-{method}.parquet",
                "agreement": {
                    "method": method,
                    "examples": 100,
                    "spearman": spearman,
                    "spearman_examples": 100,
                    "top_k_overlap": spearman / 2,
                    "top_k_fraction": 0.2,
                },
                "faithfulness": {
                    "method": method,
                    "fractions": [0.1],
                    "comprehensiveness": 0.3,
                    "sufficiency": 0.1,
                    "random_comprehensiveness": 0.1,
                    "random_sufficiency": 0.2,
                },
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report), encoding="utf-8")


@pytest.fixture()
def experiment(tmp_path) -> Path:
    """Evaluation JSONs laid out as dvc.yaml writes them, and students with training logs."""
    for (variant, seed), (accuracy, agreements) in RESULTS.items():
        model = tmp_path / "students" / f"{variant}-s{seed}"
        model.mkdir(parents=True)
        lines = [
            json.dumps(
                {"step": s, "epoch": 0, "loss": 1.0 / s + seed, "ce": 0.5, "kd": 0.5, "explain": None, "lr": 1e-4}
            )
            for s in range(1, 13)
        ]
        (model / "train_log.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for method, spearman in agreements.items():
            write_evaluation(
                tmp_path / "eval" / f"{variant}-s{seed}" / f"{method}.json", model, accuracy, method, spearman
            )
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "metrics.json").write_text(
        json.dumps({"train_examples": 4000, "dev": {"main_name": "accuracy", "main": 0.9, "values": [], "count": 872}})
    )
    return tmp_path


def test_stat_is_mean_and_sample_std():
    stat = Stat.of([0.80, 0.84, None, float("nan")])
    assert stat.mean == pytest.approx(0.82) and stat.std == pytest.approx(math.sqrt(0.0008)) and stat.n == 2
    assert Stat.of([0.5]) == Stat(0.5, 0.0, 1)
    assert Stat.of([]) is None


@pytest.mark.parametrize(
    "name, expected",
    [
        ("kd-s2", ("kd", 2)),
        ("feature_selection-s10", ("feature_selection", 10)),
        ("kd-t4-s0", ("kd-t4", 0)),
        ("student", ("student", None)),
    ],
)
def test_student_names(name, expected):
    assert split_name(name) == expected


def test_report_aggregates_over_seeds(experiment):
    out = experiment / "out"
    result = build_report(
        ReportRequest(
            evals=(experiment / "eval",),
            out=out / "report.html",
            summary=out / "summary.json",
            loss_csv=out / "loss.csv",
            comparison_csv=out / "comparison.csv",
            teacher=experiment / "teacher",
            variant_order=("kd", "gradient"),
        )
    )
    assert [v.variant for v in result.summary.variants] == ["kd", "gradient"]
    assert result.students == 5 and result.sentences == 0
    summary = json.loads((out / "summary.json").read_text())
    kd, grad = summary["students"]["kd"], summary["students"]["gradient"]
    assert summary["versions"] == versions.current().as_dict()  # the libraries of the run that wrote it
    assert kd["runs"] == 2 and kd["accuracy"]["mean"] == pytest.approx(0.82)
    assert kd["accuracy"]["std"] == pytest.approx(math.sqrt(0.0008), abs=1e-6)
    assert kd["spearman"]["perturbation"]["mean"] == pytest.approx(0.4)
    assert grad["spearman"]["gradient"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.1)}
    assert "perturbation" not in grad["spearman"]
    assert summary["teacher"] == {"accuracy": 0.9}
    with (out / "loss.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 5 * 12 and rows[0]["student"] == "gradient-s0" and rows[0]["variant"] == "gradient"
    with (out / "comparison.csv").open() as handle:
        comparison = list(csv.DictReader(handle))
    assert {(r["variant"], r["measure"]) for r in comparison} >= {("kd", "accuracy"), ("gradient", "spearman gradient")}
    page = (out / "report.html").read_text()
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    assert page.count("<polyline") == 5 and "0.8200" in page and "± 0.0283" in page
    table = format_table(result.summary)
    assert table[2:5] == [
        "| kd | 2 | 0.8200 ± 0.0283 | – | – | gradient | 0.1500 ± 0.0707 | 0.0750 ± 0.0354 | 0.3000 ± 0.0000 "
        "| 0.1000 ± 0.0000 |",
        "| kd | 2 | 0.8200 ± 0.0283 | – | – | perturbation | 0.4000 ± 0.1414 | 0.2000 ± 0.0707 | 0.3000 ± 0.0000 "
        "| 0.1000 ± 0.0000 |",
        "| gradient | 3 | 0.8400 ± 0.0200 | +0.0200 [+0.0200, +0.0200] | – | gradient | 0.7000 ± 0.1000 "
        "(vs kd +0.500 [+0.500, +0.500]) | 0.3500 ± 0.0500 | 0.3000 ± 0.0000 | 0.1000 ± 0.0000 |",
    ]
    # seeds 0 and 1 have both: 0.6 - 0.1 and 0.7 - 0.2
    expected = {"method": "gradient", "mean": 0.5, "ci95_low": 0.5, "ci95_high": 0.5, "seeds": 2}
    assert grad["agreement_vs_kd"] == expected and "agreement_vs_kd" not in kd
    assert '<span class="pm">vs kd +0.500 [+0.500, +0.500]</span>' in page
    assert table[5].startswith("| teacher | 1 | 0.9000 |")
    assert table[6:] == [
        "note: The evaluations record no per-example predictions: no McNemar test (rerun egkd evaluate)."
    ]
    assert page.count('<td rowspan="2">kd</td>') == 1 and '<td class="best">0.7000' in page


def test_a_half_written_last_log_line_is_skipped(experiment):
    """A run killed while writing its log leaves a partial last line: the report reads the lines before it."""
    log = experiment / "students" / "kd-s0" / "train_log.jsonl"
    with log.open("a", encoding="utf-8") as handle:
        handle.write('{"step": 13, "epoch": 0, "lo')
    assert [p.step for p in read_losses(log.parent)] == list(range(1, 13))
    result = runner.invoke(app, ["report", "--evals", str(experiment / "eval"), "--out", str(experiment / "r.html")])
    assert result.exit_code == 0, result.output


LABELS = [1, 0] * 5  # ten dev examples
# (variant, seed) -> which of the ten examples the run gets right
CORRECT = {
    ("kd", 0): [1] * 6 + [0] * 4,
    ("kd", 1): [1] * 7 + [0] * 3,
    ("kd", 2): [1] * 5 + [0] * 5,
    ("gradient", 0): [1] * 8 + [0] * 2,  # right where kd is, and on examples 6, 7: b = 2, c = 0
    ("gradient", 1): [0] + [1] * 8 + [0],  # b = 2 (examples 7, 8), c = 1 (example 0)
    ("gradient", 2): [1] * 7 + [0] * 3,  # b = 2, c = 0
}


def write_paired_evaluation(folder: Path, variant: str, seed: int, correct: list[int]) -> None:
    """An evaluation JSON as egkd evaluate writes it, with its per-example predictions."""
    classes = [label if right else 1 - label for label, right in zip(LABELS, correct, strict=True)]
    accuracy = sum(correct) / len(correct)
    share = max(classes.count(0), classes.count(1)) / len(classes)
    report = {
        "model": str(folder / "students" / f"{variant}-s{seed}"),
        "task": "sst2",
        "split": "dev",
        "metrics": {
            "main_name": "accuracy",
            "main": accuracy,
            "values": [["accuracy", accuracy]],
            "count": len(correct),
            "one_class": {"label": max(set(classes), key=classes.count), "share": share} if share >= 0.95 else None,
        },
        "explanations": [
            {
                "cache": "c",
                "agreement": {
                    "method": "gradient",
                    "spearman": 0.4 + 0.1 * seed + 0.1 * (variant == "gradient"),
                    "top_k_overlap": 0.5,
                },
                "faithfulness": {"comprehensiveness": 0.3, "sufficiency": 0.1},
            }
        ]
        if variant != "kd"
        else [],
        "predictions": {"example_ids": [f"dev-{i}" for i in range(10)], "classes": classes, "labels": LABELS},
        "head_seed": None,
    }
    (folder / "eval").mkdir(parents=True, exist_ok=True)
    (folder / "eval" / f"{variant}-s{seed}.json").write_text(json.dumps(report), encoding="utf-8")


def test_every_variant_is_paired_with_kd_by_seed_exactly(tmp_path):
    """Hand-made evaluations: the paired difference to kd with its t interval, McNemar pooled over the seeds and
    per seed, the one-class flag, the headline files and the summary, against values worked out by hand."""
    for (variant, seed), correct in CORRECT.items():
        write_paired_evaluation(tmp_path, variant, seed, correct)
    write_paired_evaluation(tmp_path, "perturbation", 0, LABELS)  # predicts class 1 for every example
    result = build_report(
        ReportRequest(
            evals=(tmp_path / "eval",),
            out=tmp_path / "report.html",
            summary=tmp_path / "summary.json",
            headline=tmp_path / "headline",
            variant_order=("kd", "gradient", "perturbation"),
            families={"kd": "none", "gradient": "gradient", "perturbation": "perturbation"},
        )
    )
    # accuracy: kd 0.6, 0.7, 0.5; gradient 0.8, 0.8, 0.7: differences 0.2, 0.1, 0.2
    mean, std = 1 / 6, math.sqrt(((0.2 - 1 / 6) ** 2 * 2 + (0.1 - 1 / 6) ** 2) / 2)
    half = 4.302652729749464 * std / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    summary = json.loads((tmp_path / "summary.json").read_text())
    gradient = summary["students"]["gradient"]
    assert gradient["accuracy_vs_kd"] == {
        "mean": round(mean, 6),
        "ci95_low": round(mean - half, 6),
        "ci95_high": round(mean + half, 6),
        "seeds": 3,
    }
    assert (round(mean - half, 4), round(mean + half, 4)) == (0.0232, 0.3101)
    # b = 6, c = 1 pooled: exact two-sided binomial p = 2 * P(X <= 1 | 7, 1/2) = 2 * 8 / 128
    assert gradient["mcnemar_vs_kd"] == {
        "b": 6,
        "c": 1,
        "p_value": 0.125,
        "per_seed": [
            {"seed": 0, "b": 2, "c": 0, "p_value": 0.5},
            {"seed": 1, "b": 2, "c": 1, "p_value": 1.0},
            {"seed": 2, "b": 2, "c": 0, "p_value": 0.5},
        ],
    }
    assert "accuracy_vs_kd" not in summary["students"]["kd"]
    perturbation = summary["students"]["perturbation"]
    assert perturbation["accuracy_vs_kd"] == {"mean": -0.1, "ci95_low": None, "ci95_high": None, "seeds": 1}
    assert perturbation["one_class"] == {"perturbation-s0": 1.0}

    headline = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "headline").glob("*.json")}
    assert headline == {
        "kd": {"accuracy": 0.6, "accuracy_std": 0.1},
        "gradient": {
            "accuracy": 0.7667,
            "accuracy_std": 0.0577,
            "agreement": 0.6,
            "vs_kd": 0.1667,
            "vs_kd_lo": 0.0232,
            "vs_kd_up": 0.3101,
        },
        "perturbation": {"accuracy": 0.5, "accuracy_std": 0.0, "vs_kd": -0.1},  # its agreement: on gradient only
    }

    table = format_table(result.summary)
    assert "| gradient | 3 | 0.7667 ± 0.0577 | +0.1667 [+0.0232, +0.3101] | 0.125 (6/1) | gradient |" in "\n".join(
        table
    )
    flagged = "perturbation-s0 predicts one class for 100.0% of the dev examples (flagged at 95% or more)"
    assert table[-1].startswith(f"note: {flagged}")
    page = (tmp_path / "report.html").read_text()
    assert '+0.1667 <span class="pm">[+0.0232, +0.3101]</span>' in page and "0.125" in page
    assert flagged in page and 'perturbation <span class="pm">(one class!)</span>' in page


def test_the_reference_variant_is_a_parameter(tmp_path):
    for (variant, seed), correct in CORRECT.items():
        write_paired_evaluation(tmp_path, variant, seed, correct)
    result = build_report(
        ReportRequest(
            evals=(tmp_path / "eval",), out=tmp_path / "r.html", summary=tmp_path / "s.json", reference="gradient"
        )
    )
    summary = json.loads((tmp_path / "s.json").read_text())["students"]
    assert summary["kd"]["accuracy_vs_gradient"]["mean"] == round(-1 / 6, 6)
    assert summary["kd"]["mcnemar_vs_gradient"]["b"] == 1 and "accuracy_vs_gradient" not in summary["gradient"]
    missing = build_report(ReportRequest(evals=(tmp_path / "eval",), out=tmp_path / "r.html", reference="none"))
    assert missing.notes[0] == "No run of the reference variant 'none': no paired differences."
    stale = build_report(ReportRequest(evals=(tmp_path / "eval",), out=tmp_path / "r.html", variant_order=("kd",)))
    assert stale.notes[-1] == "Evaluations of variants that experiment.variants does not list: gradient."
    assert not any("does not list" in note for note in result.notes)
    assert all(v.versus is None for v in result.summary.variants if v.variant == "gradient")


def test_listed_only_leaves_out_the_variants_and_seeds_the_experiment_does_not_list(tmp_path):
    for (variant, seed), correct in CORRECT.items():
        write_paired_evaluation(tmp_path, variant, seed, correct)
    request = ReportRequest(
        evals=(tmp_path / "eval",),
        out=tmp_path / "r.html",
        summary=tmp_path / "s.json",
        variant_order=("kd", "gradient"),
        seeds=(0, 1),
        listed_only=True,
    )
    result = build_report(request)
    assert sorted((v.variant, v.main.n) for v in result.summary.variants) == [("gradient", 2), ("kd", 2)]
    left = sorted(f"{v}-s{s}" for v, s in CORRECT if v not in ("kd", "gradient") or s not in (0, 1))
    assert result.notes[-1] == f"Left out, not listed by the experiment's variants and seeds: {', '.join(left)}."
    assert result.students == 4
    with pytest.raises(EgkdError, match=r"none of the \d+ evaluated models is of a variant and seed that the"):
        build_report(dataclasses.replace(request, variant_order=("other",)))
    # another experiment's evaluations in the folder (another task's, as a profile run in the same workspace leaves
    # them) are left out before the tasks are compared
    other = tmp_path / "eval" / "old-s0.json"
    other.write_text(
        json.dumps(
            {
                **json.loads((tmp_path / "eval" / "kd-s0.json").read_text()),
                "task": "trec",
                "model": "models/students/old-s0",
            }
        )
    )
    assert build_report(request).notes[-1].endswith(f"{', '.join(sorted([*left, 'old-s0']))}.")


def test_report_errors_are_one_line(experiment, tmp_path):
    missing = runner.invoke(app, ["report", "--evals", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r.html")])
    assert missing.exit_code == 2 and "evaluation path not found" in missing.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.json").write_text('{"model": "m"}')
    result = runner.invoke(app, ["report", "--evals", str(bad), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 2 and "not an egkd evaluation report" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EgkdError, match="no evaluation JSON files"):
        build_report(ReportRequest(evals=(empty,), out=tmp_path / "r.html"))


def test_highlighted_colours_by_sign_and_magnitude():
    tokens = [TokenScore(0, 0, 3, 2.0), TokenScore(0, 4, 7, -1.0), TokenScore(0, 8, 9, 0.0)]
    html = highlighted("bad <b> !", tokens, 0)
    assert html.startswith('<span class="tok" style="background:rgba(214,39,40,0.850)" title="+2.0000">bad</span> ')
    assert 'rgba(31,119,180,0.425)" title="-1.0000">&lt;b&gt;</span>' in html
    assert 'style="background:transparent" title="+0.0000">!</span>' in html


def test_smoothing_and_ticks():
    from pipeline.report.data import LossPoint

    points = [LossPoint(i + 1, v) for i, v in enumerate([4.0, 2.0, 0.0, 2.0])]
    assert smoothed(points, window=2) == [4.0, 3.0, 1.0, 1.0]
    assert nice_ticks(0.0, 0.93) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(0, 120) == [0, 25, 50, 75, 100, 125]


def test_report_with_heatmaps_from_real_caches(glue_dir, tmp_path):
    """Teacher maps from the cache's dev partition beside each student's own, computed by the explainers."""
    teacher = make_tiny_model_dir(tmp_path / "teacher", seed=1)
    cache = build_cache(tmp_path / "cache.parquet", teacher, teacher, glue_dir, train=8, dev=6)
    evals = tmp_path / "eval"
    for name, seed in (("kd", 0), ("gradient", 0)):
        student = make_tiny_model_dir(tmp_path / "students" / f"{name}-s{seed}", seed=seed + 2)
        write_evaluation(evals / f"{name}-s{seed}.json", student, 0.5, "gradient", 0.1)
    result = build_report(ReportRequest(evals=(evals,), out=tmp_path / "report.html", caches=(cache,), examples=2))
    assert result.sentences == 2
    page = (tmp_path / "report.html").read_text()
    blocks = re.findall(r'<div class="method">([^<]+)</div>', page)
    assert blocks == ["gradient", "perturbation", "feature selection"] * 2
    assert page.count('<td class="who">teacher</td>') == 6 and page.count('<td class="who">kd-s0</td>') == 6
    assert page.count('class="tok"') > 20


def test_repository_params_define_the_experiment():
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    names = [v.name for v in params.experiment.variants]
    # kd-contrastive in fine-tuning's place, the gradient objective with the occlusion maps' views in gradient-views'
    assert names == ["kd", "kd-random", "kd-contrastive", "gradient-occl-contrastive"]
    families = {v.name: v.family(params.distill) for v in params.experiment.variants}
    assert families == {
        "kd": None,
        "kd-random": None,
        "kd-contrastive": Method.PERTURBATION,
        "gradient-occl-contrastive": Method.GRADIENT,
    }
    assert len(params.experiment.seeds) == 3


@pytest.mark.parametrize(
    "variants, message",
    [
        ("{a: {cache: gradient, options: {method: perturbation}}}", "trains from the perturbation cache"),
        ("{a: {cache: gradient}}", "options.method is required"),
        (
            "[{name: a, cache: gradient, options: {method: none}}]",
            "experiment.variants' must be a mapping of names to entries",
        ),
        ("{'a/b': {cache: gradient, options: {method: none}}}", "it names folders"),
        (
            "{a: {cache: gradient, options: {method: none, seed: 1}}}",  # the experiment's seeds set it
            re.escape("unknown params key 'experiment.variants.a.options.seed'"),
        ),
        ("{a: {cache: gradient, options: {method: none, alpha: 2}}}", r"experiment.variants.a.options.alpha"),
    ],
)
def test_bad_variants_name_the_problem(tmp_path, variants, message):
    path = tmp_path / "params.yaml"
    path.write_text(f"experiment:\n  variants: {variants}\n")
    with pytest.raises(EgkdError, match=message):
        load_params(path)


def test_a_guided_variant_is_compared_on_its_own_familys_agreement_over_the_seeds_that_have_it():
    from pipeline.report.compare import SeedRun, compare

    mine = [SeedRun(f"g-s{i}", i, 0.8, None, {"gradient": x}) for i, x in enumerate((0.5, 0.7, 0.6))]
    theirs = [SeedRun(f"kd-s{i}", i, 0.8, None, {"gradient": x}) for i, x in enumerate((0.4, 0.5, 0.5))]
    theirs.append(SeedRun("kd-s3", 3, 0.8, None, {}))
    mine.append(SeedRun("g-s3", 3, 0.8, None, {"gradient": 0.9}))  # the reference has no gradient agreement there
    result = compare(mine, theirs, "kd", "gradient")
    assert result is not None and result.seeds == (0, 1, 2, 3) and result.family == "gradient"
    d = result.agreement
    assert d is not None and d.n == 3  # differences 0.1, 0.2, 0.1: sd 0.057735, t(0.975, 2) = 4.302653
    assert (d.mean, d.low, d.high) == pytest.approx((0.133333, -0.010088, 0.276755), abs=1e-6)
    assert compare(mine, theirs, "kd").agreement is None  # a baseline: no family
    assert compare(mine, theirs, "kd", "perturbation").agreement is None  # no run has it


def test_a_teacher_that_is_not_there_is_named(experiment, tmp_path):
    request = ReportRequest(evals=(experiment / "eval",), out=tmp_path / "r.html", teacher=tmp_path / "nosuch")
    with pytest.raises(EgkdError) as caught:
        build_report(request)
    assert str(caught.value) == f"teacher not found: {tmp_path / 'nosuch'} (the folder egkd finetune saved it to)"
    assert not (tmp_path / "r.html").exists()

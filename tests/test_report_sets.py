"""`egkd report` on evaluation sets: per set and variant the metric, the retention of the teacher's, and the paired
differences to KD and to KD on random views, against values worked out by hand."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.config import DistillParams, Params, VariantOptions, VariantParams
from pipeline.methods import Method
from pipeline.report.build import ReportRequest, build_report, format_table
from pipeline.report.sets import random_views
from pipeline.report.svg import PALETTE
from stages.cli import app

T_2 = 4.302652729749464  # t(0.975) with 2 degrees of freedom
DEV_LABELS = [1, 0] * 5
MPQA_LABELS = [1, 0, 0, 0, 1, 0, 0, 1]
RANDOM = "kd-random"  # KD on random views in the packaged defaults' variants
GUIDED = "gradient-occl-contrastive"
# (variant, seed) -> which dev examples, and which MPQA examples, the run gets right
CORRECT = {
    ("kd", 0): ([1] * 6 + [0] * 4, [1, 1, 1, 1, 0, 0, 0, 0]),
    ("kd", 1): ([1] * 7 + [0] * 3, [1, 1, 1, 1, 1, 0, 0, 0]),
    ("kd", 2): ([1] * 5 + [0] * 5, [0, 1, 1, 1, 1, 0, 0, 0]),
    (RANDOM, 0): ([1] * 7 + [0] * 3, [1, 1, 1, 1, 1, 0, 0, 0]),
    (RANDOM, 1): ([1] * 7 + [0] * 3, [1, 1, 1, 1, 1, 1, 0, 0]),
    (RANDOM, 2): ([1] * 6 + [0] * 4, [1, 1, 1, 1, 1, 0, 0, 0]),
    (GUIDED, 0): ([1] * 8 + [0] * 2, [1, 1, 1, 1, 1, 1, 0, 0]),
    (GUIDED, 1): ([1] * 8 + [0] * 2, [1, 1, 1, 1, 1, 1, 0, 0]),
    (GUIDED, 2): ([1] * 7 + [0] * 3, [1, 1, 1, 1, 1, 1, 1, 0]),
}
TEACHER = ([1] * 9 + [0], [1] * 7 + [0])  # dev 0.9, MPQA 0.875


def _scored(labels: list[int], correct: list[int], ids: list[str]) -> tuple[dict, dict]:
    classes = [label if right else 1 - label for label, right in zip(labels, correct, strict=True)]
    accuracy = sum(correct) / len(correct)
    metrics = {"main_name": "accuracy", "main": accuracy, "values": [["accuracy", accuracy]], "count": len(labels)}
    metrics["one_class"] = {"label": 1, "share": 1.0} if len(set(classes)) == 1 else None
    return metrics, {"example_ids": ids, "classes": classes, "labels": labels}


def write_evaluation(path: Path, model: str, dev: list[int], mpqa: list[int], sets: bool = True) -> None:
    """An evaluation JSON as egkd evaluate --sets-root writes it: dev, and the sets dev and mpqa."""
    metrics, predictions = _scored(DEV_LABELS, dev, [f"dev-{i}" for i in range(10)])
    report = {"model": model, "task": "sst2", "split": "dev", "metrics": metrics, "explanations": []}
    report["predictions"] = predictions
    if sets:
        mpqa_metrics, mpqa_predictions = _scored(MPQA_LABELS, mpqa, [])
        del mpqa_predictions["example_ids"]
        report["sets"] = {
            "dev": {
                "source": "dev.tsv",
                "split": "dev",
                "skip": 0,
                "metrics": metrics,
                "predictions": {"ids_sha256": "d" * 64, "classes": predictions["classes"], "labels": DEV_LABELS},
            },
            "mpqa": {
                "source": "mpqa/test.csv",
                "split": "test",
                "skip": 0,
                "metrics": {**mpqa_metrics, "values": [["accuracy", mpqa_metrics["main"]], ["macro_f1", 0.5]]},
                "predictions": {"ids_sha256": "m" * 64, **mpqa_predictions},
            },
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report), encoding="utf-8")


def experiment(folder: Path, sets: bool = True) -> Path:
    for (variant, seed), (dev, mpqa) in CORRECT.items():
        write_evaluation(folder / "eval" / f"{variant}-s{seed}.json", f"students/{variant}-s{seed}", dev, mpqa, sets)
    write_evaluation(folder / "eval" / "teacher.json", "models/teacher", *TEACHER, sets)  # beside the students'
    return folder


def _request(folder: Path, **changes) -> ReportRequest:
    values = {
        "evals": (folder / "eval",),
        "out": folder / "report.html",
        "summary": folder / "summary.json",
        "headline": folder / "headline",
        "set_metrics": folder / "sets",
        "retention_csv": folder / "retention.csv",
        "variant_order": ("kd", RANDOM, GUIDED),
        "teacher_eval": folder / "eval" / "teacher.json",
        "random": RANDOM,
        **changes,
    }
    return ReportRequest(**values)


def _interval(differences: list[float]) -> dict:
    mean = sum(differences) / len(differences)
    std = math.sqrt(sum((d - mean) ** 2 for d in differences) / (len(differences) - 1))
    half = T_2 * std / math.sqrt(len(differences))
    return {"mean": round(mean, 6), "ci95_low": round(mean - half, 6), "ci95_high": round(mean + half, 6), "seeds": 3}


def test_every_variant_on_every_set_exactly(tmp_path):
    result = build_report(_request(experiment(tmp_path)))
    assert result.students == 9  # the teacher's evaluation among them is not a student
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["random_variant"] == RANDOM
    guided = summary["students"][GUIDED]["sets"]
    assert list(guided) == ["dev", "mpqa"]
    mpqa = guided["mpqa"]
    # MPQA accuracy 0.75, 0.75, 0.875 against kd's 0.5, 0.625, 0.5 and kd-random's 0.625, 0.75, 0.625
    assert mpqa["runs"] == 3
    assert mpqa["accuracy"] == {"mean": round(2.375 / 3, 6), "std": 0.072169}
    assert mpqa["macro_f1"] == {"mean": 0.5, "std": 0.0}
    assert mpqa["accuracy_vs_kd"] == _interval([0.25, 0.125, 0.375])
    assert mpqa["accuracy_vs_random"] == _interval([0.125, 0.0, 0.25])
    assert (mpqa["accuracy_vs_kd"]["ci95_low"], mpqa["accuracy_vs_kd"]["ci95_high"]) == (-0.060517, 0.560517)
    # b: examples only the guided run gets right, c: only kd; exact two-sided binomial p of 0 in 6 is 2 / 64
    assert mpqa["mcnemar_vs_kd"] == {
        "b": 6,
        "c": 0,
        "p_value": 0.03125,
        "per_seed": [
            {"seed": 0, "b": 2, "c": 0, "p_value": 0.5},
            {"seed": 1, "b": 1, "c": 0, "p_value": 1.0},
            {"seed": 2, "b": 3, "c": 0, "p_value": 0.25},
        ],
    }
    assert mpqa["mcnemar_vs_random"]["b"] == 3 and mpqa["mcnemar_vs_random"]["c"] == 0
    # retention: each run's accuracy over the teacher's 0.875 on MPQA: 6/7, 6/7, 1
    assert mpqa["retention"] == {
        "mean": round((12 / 7 + 1) / 3, 6),
        "ci95_low": 0.699874,
        "ci95_high": 1.10965,
        "seeds": 3,
    }
    ratios = [6 / 7, 6 / 7, 1.0]
    assert _interval(ratios) == mpqa["retention"]
    kd, random = summary["students"]["kd"]["sets"]["mpqa"], summary["students"][RANDOM]["sets"]["mpqa"]
    assert "accuracy_vs_kd" not in kd and kd["accuracy_vs_random"] == _interval([-0.125, -0.125, -0.125])
    assert "accuracy_vs_random" not in random and random["accuracy_vs_kd"]["mean"] == 0.125
    # the set dev is the dev evaluation: the same figures as the dev keys, retention of the teacher's 0.9
    dev = guided["dev"]
    assert dev["accuracy"] == summary["students"][GUIDED]["accuracy"]
    assert dev["accuracy_vs_kd"] == summary["students"][GUIDED]["accuracy_vs_kd"]
    assert dev["retention"]["mean"] == round((0.8 + 0.8 + 0.7) / 3 / 0.9, 6)
    assert summary["teacher"] == {
        "sets": {"dev": {"accuracy": 0.9, "count": 10}, "mpqa": {"accuracy": 0.875, "macro_f1": 0.5, "count": 8}}
    }

    headline = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "headline").glob("*.json")}
    assert headline[GUIDED] == {
        "accuracy": 0.7667,
        "accuracy_std": 0.0577,
        "vs_kd": 0.1667,
        "vs_kd_lo": 0.0232,
        "vs_kd_up": 0.3101,
    }
    # each set's DVC metrics: a folder of one file per variant and the teacher's, with the dev headline's names
    sets = {(p.parent.name, p.stem): json.loads(p.read_text()) for p in (tmp_path / "sets").glob("*/*.json")}
    assert sets[("mpqa", GUIDED)] == {
        "accuracy": 0.7917,
        "accuracy_std": 0.0722,
        "retention": 0.9048,
        "vs_kd": 0.25,
        "vs_random": 0.125,
    }
    assert sets[("mpqa", "kd")] == {"accuracy": 0.5417, "accuracy_std": 0.0722, "retention": 0.619, "vs_random": -0.125}
    assert sets[("dev", "teacher")] == {"accuracy": 0.9} and sets[("mpqa", "teacher")] == {"accuracy": 0.875}
    assert sets[("dev", GUIDED)]["accuracy"] == headline[GUIDED]["accuracy"]

    with (tmp_path / "retention.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["set"], r["variant"]) for r in rows] == [(s, v) for s in ("dev", "mpqa") for v in ("kd", RANDOM, GUIDED)]
    assert rows[-1] == {
        "set": "mpqa",
        "variant": GUIDED,
        "retention": "0.904762",
        "ci95_low": "0.699874",
        "ci95_high": "1.10965",
    }

    page = (tmp_path / "report.html").read_text()
    assert "<h2>Held-out and shifted data</h2>" in page and "<script" not in page
    assert page.count("<rect") == 3 + 6  # the dev bars, then one retention bar per set and variant
    retention = re.search(
        r'<rect [^>]*fill="([^"]+)"[^>]*><title>mpqa · ' + GUIDED + r": 0\.9048 ± 0\.2049</title>", page
    )
    assert retention is not None and retention[1] == PALETTE[2]  # the variant's colour
    assert '<td class="best">accuracy 0.7917 <span class="pm">± 0.0722</span></td>' in page
    assert '0.9048 <span class="pm">[0.6999, 1.1097]</span>' in page
    table = format_table(result.summary)
    assert (
        f"| mpqa | {GUIDED} | 3 | accuracy 0.7917 ± 0.0722 | 0.9048 [0.6999, 1.1097] | +0.2500 [-0.0605, +0.5605] "
        "| 0.0312 (6/0) | +0.1250 [-0.1855, +0.4355] | 0.25 (3/0) |" in table
    )
    assert "| mpqa | teacher | 1 | accuracy 0.8750 |" + " |" * 5 in table


def test_the_dev_keys_are_unchanged_by_the_sets(tmp_path):
    with_sets = build_report(_request(experiment(tmp_path / "a")))
    (experiment(tmp_path / "b", sets=False) / "eval" / "teacher.json").unlink()
    without = build_report(_request(tmp_path / "b", teacher_eval=None))
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    plain = json.loads((tmp_path / "b" / "summary.json").read_text())
    for variant in plain["students"]:
        assert {k: v for k, v in summary["students"][variant].items() if k != "sets"} == plain["students"][variant]
    assert not any("sets" in entry for entry in plain["students"].values())
    assert "random_variant" not in plain and "teacher" not in plain
    assert [(v.main, v.versus) for v in with_sets.summary.variants] == [
        (v.main, v.versus) for v in without.summary.variants
    ]
    assert not (tmp_path / "b" / "retention.csv").read_text().strip().count("\n")  # the header alone
    assert "Held-out and shifted data" not in (tmp_path / "b" / "report.html").read_text()


def test_without_the_teachers_evaluation_the_retention_is_left_out(tmp_path):
    experiment(tmp_path)
    (tmp_path / "eval" / "teacher.json").unlink()
    result = build_report(_request(tmp_path, teacher_eval=None))
    summary = json.loads((tmp_path / "summary.json").read_text())
    mpqa = summary["students"][GUIDED]["sets"]["mpqa"]
    assert "retention" not in mpqa and mpqa["accuracy_vs_kd"] == _interval([0.25, 0.125, 0.375])
    assert "teacher" not in summary
    assert (
        "No teacher evaluation (egkd report --teacher-eval): the retention of its metric is left out." in result.notes
    )
    assert (tmp_path / "retention.csv").read_text() == "set,variant,retention,ci95_low,ci95_high\n"
    assert "No teacher evaluation (egkd report --teacher-eval): no retention." in (tmp_path / "report.html").read_text()


def test_without_kd_on_random_views_that_comparison_is_left_out(tmp_path):
    build_report(_request(experiment(tmp_path), random=None))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "random_variant" not in summary
    assert not any(
        "vs_random" in key for entry in summary["students"].values() for s in entry["sets"].values() for key in s
    )


def test_kd_on_random_views_is_found_by_its_options_not_its_name():
    assert random_views(Params().experiment.variants, Params().distill) == RANDOM

    def variant(name: str, **options) -> VariantParams:
        return VariantParams(name, Method.GRADIENT, VariantOptions.parse(options, name))

    section = DistillParams(views=1)
    others = [variant("kd", method="none", views=0), variant("g", method="gradient", view_kind="random")]
    assert random_views(others, section) is None
    assert random_views([*others, variant("augmented", method="none", view_kind="random")], section) == "augmented"
    # the distill section fills what the options leave out: random views there make a plain KD variant one
    assert random_views([variant("plain", method="none")], DistillParams(views=1, view_kind="random")) == "plain"
    assert random_views([variant("plain", method="none", view_kind="random")], DistillParams(views=0)) is None


def test_report_command_takes_the_teachers_evaluation_and_writes_the_retention_csv(tmp_path):
    experiment(tmp_path)
    (tmp_path / "p.yaml").write_text("{}\n", encoding="utf-8")  # the packaged defaults: kd-random is KD on random views
    args = [
        "report",
        "--evals",
        str(tmp_path / "eval"),
        "--out",
        str(tmp_path / "r.html"),
        "--params",
        str(tmp_path / "p.yaml"),
    ]
    options = ["--teacher-eval", str(tmp_path / "eval" / "teacher.json"), "--retention-csv", str(tmp_path / "r.csv")]
    result = CliRunner().invoke(app, [*args, *options, "--summary", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    assert "report of 9 students" in result.stdout
    mpqa = json.loads((tmp_path / "s.json").read_text())["students"][GUIDED]["sets"]["mpqa"]
    assert mpqa["accuracy_vs_random"] == _interval([0.125, 0.0, 0.25]) and mpqa["retention"]["seeds"] == 3
    assert len((tmp_path / "r.csv").read_text().splitlines()) == 1 + 6


@pytest.mark.parametrize(
    "field, message",
    [
        ("ids_sha256", f"^eval set 'mpqa': {GUIDED}-s1 and kd-s1 were evaluated on different examples"),
        ("classes", r"not an egkd evaluation report .*sets.mpqa.predictions: 7 classes, 8 labels"),
    ],
)
def test_runs_scored_on_other_examples_of_a_set_are_refused(tmp_path, field, message):
    experiment(tmp_path)
    path = tmp_path / "eval" / f"{GUIDED}-s1.json"
    report = json.loads(path.read_text())
    predictions = report["sets"]["mpqa"]["predictions"]
    predictions[field] = "x" * 64 if field == "ids_sha256" else predictions[field][:-1]
    path.write_text(json.dumps(report), encoding="utf-8")
    from pipeline.errors import EgkdError

    with pytest.raises(EgkdError, match=message):
        build_report(_request(tmp_path))

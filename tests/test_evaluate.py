"""Task metrics, AOPC with a hand-made model, agreement measures, and `egkd evaluate` end to end."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_tiny_model_dir
from distill_cache import build_cache
from typer.testing import CliRunner

from pipeline.cache.project import to_student_examples
from pipeline.cache.store import read_cache
from pipeline.config import EvaluateParams, ExplainParams, GradientParams
from pipeline.encoding import TokenBatch
from pipeline.errors import EgkdError
from pipeline.evaluate.faithfulness import aopc, average_ranks, rank_agreement, top_k_overlap
from pipeline.evaluate.metrics import OneClass, compute_metrics, one_class, predictions_from_logits
from pipeline.evaluate.run import student_batches
from pipeline.explain.base import make_explainer
from pipeline.explain.record import explain_params_from_cache, method_params_json
from pipeline.methods import Method
from pipeline.models import load_classifier, load_tokenizer
from pipeline.tasks import get_task
from stages.cli import app


def test_task_metrics_exact():
    cola = compute_metrics(get_task("cola"), np.array([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
    assert cola.main_name == "matthews_corrcoef" and cola.main == pytest.approx(2 / math.sqrt(12))
    assert cola.get("accuracy") == 0.75
    mrpc = compute_metrics(get_task("mrpc"), np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    assert mrpc.main == pytest.approx(0.5) and mrpc.count == 4
    stsb = get_task("stsb")
    preds = predictions_from_logits(stsb, np.array([[1.0], [2.0], [3.5]]))
    result = compute_metrics(stsb, preds, np.array([1.0, 2.5, 3.0]))
    assert result.get("spearman") == pytest.approx(1.0)
    assert predictions_from_logits(get_task("sst2"), np.array([[0.1, 0.9], [2.0, 1.0]])).tolist() == [1, 0]


class CountModel(torch.nn.Module):
    """logits = (0, number of token-7 occurrences): p(class 1) is sigmoid(count)."""

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        count = ((input_ids == 7) & (attention_mask > 0)).sum(1).float()
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(count), count], 1))


def test_aopc_exact_with_a_counting_model():
    ids = torch.tensor([[2, 7, 7, 8, 9, 3]])
    batch = TokenBatch(
        example_ids=["e"],
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        token_type_ids=torch.zeros_like(ids),
        special_mask=torch.tensor([[True, False, False, False, False, True]]),
    )
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.1, 0.2, 0.0]])
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    result = aopc(CountModel(), batch, scores, [0.25, 0.5], mask_token_id=4)
    # 4 real tokens: k = 1 then 2; masking the top removes one then two 7s; keeping them keeps one / two
    comp = ((sig(2) - sig(1)) + (sig(2) - sig(0))) / 2
    suff = ((sig(2) - sig(1)) + 0.0) / 2
    assert result.comprehensiveness.item() == pytest.approx(comp, abs=1e-6)
    assert result.sufficiency.item() == pytest.approx(suff, abs=1e-6)
    worst = aopc(CountModel(), batch, -scores, [0.25, 0.5], mask_token_id=4)
    assert worst.comprehensiveness.item() == pytest.approx(0.0) and worst.sufficiency.item() > suff


def test_one_class_flags_predictions_that_fall_95_percent_into_one_class():
    assert one_class(np.array([1] * 19 + [0])) == OneClass(1, 0.95)
    assert one_class(np.array([1] * 18 + [0, 0])) is None  # 90 %
    assert one_class(np.array([2, 2, 2])) == OneClass(2, 1.0) and one_class(np.array([], dtype=int)) is None
    nli = get_task("qnli")
    flagged = compute_metrics(nli, np.ones(40, dtype=int), np.array([0, 1] * 20))
    assert flagged.one_class == OneClass(1, 1.0) and flagged.main == 0.5
    assert flagged.one_class.note(nli.labels, "the student") == (
        "warning: the student predicts class not_entailment for 100.0% of the examples (flagged at 95% or more): "
        "it has learnt next to nothing but the class balance"
    )
    assert compute_metrics(nli, np.array([0, 1] * 20), np.array([0, 1] * 20)).one_class is None
    stsb = get_task("stsb")
    assert compute_metrics(stsb, np.full(5, 2.0), np.arange(5.0)).one_class is None  # regression: no classes


def test_agreement_measures():
    assert rank_agreement(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert rank_agreement(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert rank_agreement(np.array([1.0, 1.0]), np.array([1.0, 2.0])) is None
    # ties share the mean of their ranks: ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4) correlate 4.5 / sqrt(4.5 * 5)
    assert rank_agreement(np.array([0.1, 0.5, 0.5, 0.9]), np.array([1.0, 7.0, 3.0, 8.0])) == pytest.approx(
        3 / np.sqrt(10), abs=1e-15
    )
    np.testing.assert_array_equal(average_ranks(np.array([10.0, 20.0, 20.0, 5.0, 20.0])), [2, 4, 4, 1, 4])
    assert top_k_overlap(np.array([0.9, 0.1, 0.8, 0.3]), np.array([True, True, False, False]), 2) == 0.5


def test_explain_params_from_cache_keep_the_recorded_seed_and_section():
    recorded = ExplainParams(seed=7, gradient=GradientParams("integrated_gradients", ig_steps=5))
    params = explain_params_from_cache(
        ExplainParams(seed=0), Method.GRADIENT, method_params_json(Method.GRADIENT, recorded)
    )
    assert params.seed == 7 and params.method is Method.GRADIENT
    assert params.gradient == GradientParams("integrated_gradients", ig_steps=5)


@pytest.mark.parametrize(
    "record, message",
    [
        ("{not json", "cache field 'method_params' is not readable JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"seed": "0", "variant": "input_x_gradient", "ig_steps": 20}', "seed must be an integer"),
        ('{"seed": 0, "variant": "smoothgrad", "ig_steps": 20}', "method_params.gradient.variant"),
        (
            '{"seed": 0, "variant": "input_x_gradient", "steps": 20}',
            "unknown params key 'method_params.gradient.steps'",
        ),
    ],
)
def test_an_unreadable_method_record_is_an_error_not_a_silent_default(record, message):
    with pytest.raises(EgkdError, match=re.escape(message)):
        explain_params_from_cache(ExplainParams(), Method.GRADIENT, record)


@pytest.fixture(scope="module")
def evaluated_cache(tmp_path_factory, glue_dir) -> Path:
    """A cache of every method made by a tiny teacher, and a "student" that is a copy of that teacher."""
    root = tmp_path_factory.mktemp("evaluate-cache")
    teacher = make_tiny_model_dir(root / "teacher", seed=0)
    build_cache(root / "cache", teacher, teacher, glue_dir, train=8, dev=12)
    shutil.copytree(teacher, root / "student")
    (root / "params.yaml").write_text("data:\n  dev_limit: 20\n", encoding="utf-8")
    return root


def _evaluate(root: Path, glue_dir: Path, out: Path, *options: str):
    return CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(root / "student"),
            "--task",
            "sst2",
            "--data",
            str(glue_dir),
            "--cache",
            str(root / "cache"),
            *options,
            "--out",
            str(out),
            "--params",
            str(root / "params.yaml"),
        ],
    )


# Teacher maps are differences of float32 probabilities (an ulp at 0.5 is 6e-8) or a tiny model's gradients
# (~1e-5); explained again in batches of another shape, they move by up to ~6e-8.
MAP_TOLERANCE = 5e-7


def assert_same_maps(mine: np.ndarray, cached: np.ndarray) -> None:
    """Two (n,) maps agree up to float noise. Not Spearman == 1: noise reorders near-tied scores (issue 13, bug 1)."""
    np.testing.assert_allclose(mine, cached, rtol=0, atol=MAP_TOLERANCE)


def student_maps(root: Path, method: Method, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(the student's map, the cached teacher map) per dev row, the student explained as egkd evaluate does."""
    model = load_classifier(str(root / "student"), 2).eval()
    tokenizer = load_tokenizer(str(root / "student"))
    meta, rows = read_cache(root / "cache", method.value, "dev")
    explainer = make_explainer(
        method, model, explain_params_from_cache(ExplainParams(), method, meta.method_params), tokenizer.mask_token_id
    )
    pairs = []
    batches = EvaluateParams(batch_size=batch_size)  # longest first, as egkd evaluate batches them
    for batch in student_batches(to_student_examples(rows), batches, tokenizer.pad_token_id):
        scores = explainer.explain(batch.tokens).attribution.detach().float()
        real = batch.real_tokens
        pairs += [(scores[b][real[b]].numpy(), batch.attribution[b][real[b]].numpy()) for b in range(batch.tokens.size)]
    return pairs


def _check_self_agreement(root: Path, explanation: dict, method: str) -> None:
    """The student is a copy of the teacher: its maps are the cached ones, in batches of any shape."""
    agreement = explanation["agreement"]
    assert agreement["method"] == method and agreement["examples"] == 12
    for batch_size in (1, 5, 64):
        for mine, cached in student_maps(root, Method(method), batch_size):
            assert_same_maps(mine, cached)
    if method != "feature_selection":  # the figures egkd evaluate reports follow from equal maps
        assert agreement["spearman"] > 0.99
    assert agreement["top_k_overlap"] > 0.9
    assert set(explanation["faithfulness"]) >= {"comprehensiveness", "sufficiency", "random_comprehensiveness"}


def test_noise_that_reorders_near_ties_fails_spearman_but_not_the_map_check(evaluated_cache):
    """Bug 1: noise of the size seen between batch shapes (6e-8) takes Spearman off 1.0 on near-tied
    perturbation maps (the old check failed on a 2-core machine), while the maps still agree."""
    pairs = student_maps(evaluated_cache, Method.PERTURBATION, 64)
    noisy = [(mine + 6e-8 * (-1.0) ** np.arange(len(mine)), cached) for mine, cached in pairs]
    for mine, cached in noisy:
        assert_same_maps(mine.astype(np.float32), cached)
    spearmans = [rank_agreement(mine, cached) for mine, cached in noisy]
    assert min(s for s in spearmans if s is not None) < 1.0 - 1e-6


@pytest.mark.parametrize("method", ["gradient", "perturbation", "feature_selection"])
def test_cli_evaluate_with_cache(evaluated_cache, glue_dir, method):
    out = evaluated_cache / f"{method}.json"
    result = _evaluate(evaluated_cache, glue_dir, out, "--method", method)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["metrics"]["count"] == 20
    predictions = report["predictions"]  # per example, for the report's paired test; one line per list
    assert predictions["example_ids"] == [f"dev-{i}" for i in range(20)] and len(predictions["classes"]) == 20
    labels = [int(line.split("\t")[1]) for line in (glue_dir / "SST-2" / "dev.tsv").read_text().splitlines()[1:21]]
    assert predictions["labels"] == labels
    correct = np.mean(np.array(predictions["classes"]) == np.array(labels))
    assert report["metrics"]["main"] == pytest.approx(correct)
    assert len(out.read_text().splitlines()) < 60
    (explanation,) = report["explanations"]
    _check_self_agreement(evaluated_cache, explanation, method)


def test_cli_evaluate_compares_every_method_of_the_caches(evaluated_cache, glue_dir):
    out = evaluated_cache / "all.json"
    result = _evaluate(evaluated_cache, glue_dir, out)
    assert result.exit_code == 0, result.output
    explanations = json.loads(out.read_text())["explanations"]
    assert [e["agreement"]["method"] for e in explanations] == ["feature_selection", "gradient", "perturbation"]
    for explanation in explanations:
        _check_self_agreement(evaluated_cache, explanation, explanation["agreement"]["method"])
    # one method alone gives the same figures as within the run of all three
    single = evaluated_cache / "gradient-only.json"
    assert _evaluate(evaluated_cache, glue_dir, single, "--method", "gradient").exit_code == 0
    assert json.loads(single.read_text())["explanations"][0] == explanations[1]


def test_the_random_aopc_baseline_is_computed_once_for_caches_of_the_same_rows(evaluated_cache, glue_dir, monkeypatch):
    """Random scores' AOPC does not depend on the method: the three caches hold the same 12 dev rows (one batch),
    so the evaluation runs AOPC four times (each method's scores, one random baseline), not six, and every
    method reports the same baseline, the one a single-method evaluation computes."""
    import pipeline.evaluate.run as run

    calls = []
    real = run.aopc

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "aopc", counted)
    out = evaluated_cache / "counted.json"
    assert _evaluate(evaluated_cache, glue_dir, out).exit_code == 0
    assert len(calls) == 4
    faithfulness = [e["faithfulness"] for e in json.loads(out.read_text())["explanations"]]
    baselines = {(f["random_comprehensiveness"], f["random_sufficiency"]) for f in faithfulness}
    assert len(baselines) == 1
    single = evaluated_cache / "perturbation-only.json"
    assert _evaluate(evaluated_cache, glue_dir, single, "--method", "perturbation").exit_code == 0
    assert json.loads(single.read_text())["explanations"][0]["faithfulness"] == faithfulness[2]


def test_cli_evaluate_method_needs_a_cache(tmp_path, glue_dir, tiny_model_dir):
    (tmp_path / "p.yaml").write_text("data:\n  dev_limit: 4\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tiny_model_dir),
            "--task",
            "sst2",
            "--data",
            str(glue_dir),
            "--method",
            "gradient",
            "--params",
            str(tmp_path / "p.yaml"),
        ],
    )
    assert result.exit_code == 2 and "--method needs --cache" in result.output


def test_cli_evaluate_names_a_method_no_cache_holds(evaluated_cache, glue_dir, tmp_path):
    gradient_only = tmp_path / "cache"
    shutil.copytree(evaluated_cache / "cache" / "method=gradient", gradient_only / "method=gradient")
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(evaluated_cache / "student"),
            "--task",
            "sst2",
            "--data",
            str(glue_dir),
            "--cache",
            str(gradient_only),
            "--method",
            "perturbation",
            "--params",
            str(evaluated_cache / "params.yaml"),
        ],
    )
    assert result.exit_code == 2
    assert "no cache given holds method perturbation for the dev split" in result.output


def test_cli_evaluate_names_a_missing_cache(evaluated_cache, glue_dir, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(evaluated_cache / "student"),
            "--task",
            "sst2",
            "--data",
            str(glue_dir),
            "--cache",
            str(tmp_path / "nowhere"),
            "--params",
            str(evaluated_cache / "params.yaml"),
        ],
    )
    assert result.exit_code == 2
    assert f"explanation cache not found: {tmp_path / 'nowhere'}" in result.output


def test_a_model_without_a_trained_head_is_refused_unless_allowed(tmp_path, glue_dir):
    """Bug 8: evaluating a checkpoint without a classification head is refused, naming the new weights; with
    --allow-new-head its head is drawn from explain.seed, the same in every run, and the report says so."""
    encoder = make_tiny_model_dir(tmp_path / "encoder", head=False)
    (tmp_path / "p.yaml").write_text("data:\n  dev_limit: 16\n", encoding="utf-8")
    args = ["evaluate", "--model", str(encoder), "--data", str(glue_dir), "--params", str(tmp_path / "p.yaml")]
    refused = CliRunner().invoke(app, args)
    assert refused.exit_code == 2 and "model" in refused.output
    assert "classifier.bias, classifier.weight would be newly initialised" in refused.output
    reports = []
    for name in ("first", "second"):
        out = tmp_path / f"{name}.json"
        result = CliRunner().invoke(app, [*args, "--allow-new-head", "--out", str(out)])
        assert result.exit_code == 0, result.output
        reports.append(json.loads(out.read_text()))
    assert reports[0]["head_seed"] == 0 and reports[0] == reports[1]


def test_cli_evaluate_flags_a_model_that_predicts_one_class(tmp_path, glue_dir, tiny_model_dir, monkeypatch):
    from pipeline.evaluate import metrics

    monkeypatch.setattr(metrics, "one_class", lambda preds: metrics.OneClass(0, 0.96))
    (tmp_path / "p.yaml").write_text("data:\n  dev_limit: 8\n", encoding="utf-8")
    out = tmp_path / "e.json"
    args = ["evaluate", "--model", str(tiny_model_dir), "--data", str(glue_dir), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--params", str(tmp_path / "p.yaml")])
    assert result.exit_code == 0, result.output
    assert "warning: the model predicts class 0 for 96.0% of the examples" in result.stderr
    assert json.loads(out.read_text())["metrics"]["one_class"] == {"label": 0, "share": 0.96}


def test_rank_agreement_is_scipys_spearman():
    from scipy import stats

    rng = np.random.default_rng(0)
    for trial in range(200):
        size = int(rng.integers(2, 40))
        first = rng.integers(0, 5, size).astype(float) if trial % 2 else rng.normal(size=size)  # ties in every other
        second = rng.normal(size=size)
        ours = rank_agreement(first, second)
        if ours is not None:
            assert ours == pytest.approx(stats.spearmanr(first, second)[0], abs=1e-12)


def test_a_student_is_compared_only_with_its_own_teacher_s_caches(evaluated_cache, tmp_path):
    """A student records the teacher whose caches it learnt from; a cache of another teacher is refused."""
    from pipeline.evaluate.run import check_teacher

    cache = evaluated_cache / "cache"
    student = tmp_path / "student"
    shutil.copytree(evaluated_cache / "student", student)
    pairs = [(cache, Method.GRADIENT)]
    check_teacher(str(student), pairs, "dev")  # no egkd_model.json: nothing recorded, nothing refused
    theirs = read_cache(cache, "gradient", "dev")[0].teacher_weights_hash
    info = {"role": "student", "task": "sst2", "base_model": "b", "num_layers": 1}
    (student / "egkd_model.json").write_text(json.dumps({**info, "teacher_weights_hash": theirs}), encoding="utf-8")
    check_teacher(str(student), pairs, "dev")
    (student / "egkd_model.json").write_text(json.dumps({**info, "teacher_weights_hash": "f" * 64}), encoding="utf-8")
    with pytest.raises(EgkdError) as caught:
        check_teacher(str(student), pairs, "dev")
    assert str(caught.value) == (
        f"cache {cache} explains another teacher than the one {student} learnt from (teacher weights {theirs[:12]}, "
        "the student's ffffffffffff): compare it with its own teacher's caches"
    )

"""Smoke test of the benchmark (benchmarks/bench.py) on a tiny model: every section runs and reports its
fields. Not a timing test: the numbers are not checked, only that they are there and finite."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from benchmarks import bench
from pipeline.errors import EgkdError

TINY = bench.Sizes(
    {"input_x_gradient": 4, "integrated_gradients": 2, "occlusion": 4, "feature_selection": 4},
    captum_tutorial=2,
    captum_best=2,
    captum_batch=2,
    peak_repeats=1,
    student_batches=1,
    step_warmup=0,
    step_repeats=1,
    online_repeats=1,
    scaling_method="input_x_gradient",
    scaling_examples=4,
    scaling_part=2,
    student_batch=4,
    peak_sizes=(128,),
)


@pytest.fixture(scope="module")
def results(tiny_model_dir, glue_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    found = bench.run(
        quick=True,
        out=out,
        teacher=str(tiny_model_dir),
        data=str(glue_dir),
        threads=1,
        machine="smoke",
        skip={"scaling"},
        sizes=TINY,
    )
    return found, out


def test_writes_json_and_markdown(results):
    found, out = results
    on_disk = json.loads((out / "smoke.json").read_text(encoding="utf-8"))
    assert on_disk["mode"] == "quick" and on_disk["machine"]["load_avg_1_5_15"]
    table = (out / "smoke.md").read_text(encoding="utf-8")
    assert "## Stage one" in table and "## Stage two" in table and "## Targets" in table


def test_stage_one_fields(results):
    found, _ = results
    assert found["matmul_peak"]["flops_per_s"] > 0
    one = found["stage_one"]
    assert set(one) == {"input_x_gradient", "integrated_gradients", "occlusion", "feature_selection"}
    for case, entry in one.items():
        egkd = entry["egkd"]
        for key in (
            "ex_per_s",
            "input_tokens_per_s",
            "model_tokens_per_s",
            "flops_per_s",
            "fraction_of_peak",
            "peak_rss_mib",
        ):
            assert math.isfinite(egkd[key]) and egkd[key] > 0, (case, key)
        if case == "feature_selection":
            assert "captum_tutorial" not in entry
            continue
        for run in ("captum_tutorial", "captum_best"):
            assert entry[run]["ex_per_s"] > 0 and entry[run]["egkd_speedup"] > 0
            # egkd and captum compute the same attributions.
            assert entry[run]["agreement"]["allclose"], (case, run, entry[run]["agreement"])


def test_stage_two_and_targets(results):
    found, _ = results
    two = found["stage_two"]
    assert two["plain"]["step_s"] > 0
    for method in ("gradient", "perturbation", "feature_selection"):
        assert two[method]["cached"]["step_s"] > 0 and two[method]["online"]["teacher_s"] > 0
        assert two[method]["vs_plain"] > 0 and two[method]["vs_online"] > 0
    names = [check["name"] for check in found["targets"]]
    assert any("fraction of matmul peak" in n for n in names) and any("online" in n for n in names)
    assert all(isinstance(check["met"], bool) for check in found["targets"])


def test_flop_model_counts_bert_weights(tiny_model_dir):
    from benchmarks.measure import FlopModel
    from pipeline.models import load_classifier

    model = load_classifier(str(tiny_model_dir), 2)
    flops = FlopModel.of(model)
    # 2 layers of (4 H^2 attention + 2 H F feed-forward) weights, H = 32, F = 37.
    assert flops.per_token == 2 * (4 * 32 * 32 + 2 * 32 * 37)
    assert flops.per_sequence == 32 * 32 + 32 * 2  # pooler + classifier
    assert flops.forward(1, 10) == 2 * flops.per_token * 10 + 4 * 2 * 100 * 32 + 2 * flops.per_sequence


# --- the device suite (--device cuda), run through the same code on the CPU --------------------------------


@pytest.fixture(scope="module")
def device_results(tiny_model_dir, glue_dir, tmp_path_factory):
    from benchmarks.device import sizes_for_smoke
    from benchmarks.end_to_end import EndToEnd

    out = tmp_path_factory.mktemp("device")
    sizes = sizes_for_smoke((EndToEnd("gradient", 12, 0), EndToEnd("perturbation", 12, 1, rerun=True)))
    found = bench.run_on_device(
        "cpu", True, out, str(tiny_model_dir), "unused", str(glue_dir), 1, "device-smoke", set(), sizes
    )
    return found, out


def test_device_suite_runs_every_section_on_the_cpu(device_results):
    found, out = device_results
    assert {name: s["status"] for name, s in found["sections"].items()} == {
        name: "ok" for name in ("peaks", "egkd", "syncs", "captum", "sweep", "end_to_end", "compile")
    }
    assert json.loads((out / "device-smoke.json").read_text(encoding="utf-8"))["suite"] == "device"
    table = (out / "device-smoke.md").read_text(encoding="utf-8")
    for heading in ("Matmul peaks", "egkd at fp32 and bf16", "bf16 against fp32", "Token budget sweep", "end to end"):
        assert heading in table, heading
    assert found["peaks"]["fp32"] > 0 and found["peaks"]["bf16"] > 0 and "tf32" not in found["peaks"]  # CUDA only


def test_device_suite_stage_one_tables(device_results):
    found, _ = device_results
    for case, entry in found["egkd"].items():
        for precision in ("fp32", "bf16"):
            run = entry[precision]
            assert run["precision"] == precision and run["tokens_per_forward"] == 2048, case
            assert math.isfinite(run["ex_per_s"]) and run["fraction_of_peak"] > 0, case
        assert entry["bf16_vs_fp32"]["examples"] > 0, case
    assert set(found["captum"]) == {"input_x_gradient", "integrated_gradients", "occlusion"}
    for case, entry in found["captum"].items():
        assert {"tutorial", "best_fp32", "best_bf16"} <= set(entry)
        # captum and egkd compute the same attributions (IG with the same number of steps).
        assert entry["best_fp32"]["agreement_with_egkd_fp32"]["allclose"], case
    assert all(not s["checked"] for s in found["syncs"].values())  # only a CUDA device reports them
    for entry in found["sweep"]["runs"].values():
        assert entry["fastest"] in {"64", "4096"} and set(entry["by_budget"]) == {"64", "4096"}
    names = [check["name"] for check in found["targets"]]
    assert any("captum best" in n for n in names) and any("fraction of the bf16 peak" in n for n in names)


def test_device_suite_end_to_end_through_the_cli(device_results):
    found, _ = device_results
    runs = found["end_to_end"]["runs"]
    assert [(r["method"], r["workers"], bool(r.get("rerun"))) for r in runs] == [
        ("gradient", 0, False),
        ("perturbation", 1, False),
        ("perturbation", 1, True),
    ]
    assert runs[0]["rows"] == runs[1]["rows"] == 12 and runs[0]["vs_in_process"] > 0
    assert runs[2]["nothing_to_compute"] and runs[2]["exit_code"] == 0
    assert set(found["end_to_end"]["reference"]) == {"gradient", "perturbation"}


def test_stage_two_alone_takes_the_device_path(tiny_model_dir, glue_dir, tmp_path):
    """`python -m benchmarks.stage_two --device ...` (what the GPU check runs), here on the CPU in bf16: blocks of
    steps timed with a device synchronisation, vanilla KD beside the plain step, sentences/s, the fraction of
    the peak, the targets."""
    from benchmarks import stage_two

    tiny = stage_two.StepSizes(batch=4, batches=2, layers=1, warmup=1, repeats=2, online_repeats=1, block=2)
    args = stage_two.parse(
        ["--device", "cpu", "--precision", "bf16", "--teacher", str(tiny_model_dir), "--data", str(glue_dir)]
        + ["--out", str(tmp_path), "--machine", "smoke", "--peak-tflops", "0.5"]
    )
    results = stage_two.run(args, tiny)
    two = results["stage_two"]
    assert results["compute"] == {"device": "cpu", "device_name": "cpu", "precision": "bf16"}
    assert two["device"] == "cpu" and two["precision"] == "bf16" and two["student_layers"] == 1
    assert two["peak"] == {"flops_per_s": 0.5e12, "dtype": "fp32", "source": "given"}
    for entry in [
        two["plain"],
        two["kd"],
        *(two[m][k] for m in ("gradient", "perturbation", "feature_selection") for k in ("cached", "online")),
    ]:
        assert entry["steps"] >= 1 and entry["step_s"] > 0
        assert entry["sentences_per_s"] == pytest.approx(4 / entry["step_s"])
        assert entry["student_flops_per_step"] > 0 and 0 < entry["fraction_of_peak"] < 1
    assert two["plain"]["steps"] == two["gradient"]["cached"]["steps"] == 2 * 2  # 2 timed blocks of 2 steps
    assert two["kd"]["vs_plain"] > 0 and two["gradient"]["vs_plain"] > 0
    names = [check["name"] for check in results["targets"]]
    assert sum("step time / plain step" in n for n in names) == 3
    assert not any("GPU" in n for n in names)  # the sentences/s target is a GPU's
    table = (tmp_path / "smoke-stage-two.md").read_text(encoding="utf-8")
    assert "vanilla KD" in table and "sentences/s" in table and "cpu (cpu), bf16" in table
    assert json.loads((tmp_path / "smoke-stage-two.json").read_text())["stage_two"]["batch_size"] == 4


def test_view_shift_exact_on_a_hand_made_row():
    """[CLS] a b c d e [SEP], |scores| rank b (3.0) first: the top ceil(0.2 * 5) = 1 token. Teacher logits (2, 0)
    at temperature 1: p = (0.8808, 0.1192). Preserving views (logits (2, 0) and (1, 0)) replace d, then e; the
    contrastive ones (0, 1) and (1, 1) replace b, then b and c; the random ones (2, 0) and (2, 0), a twice: one
    distinct view."""
    import numpy as np

    from benchmarks.view_shift import ViewShift, table, view_shift
    from pipeline.cache.extras import ContrastiveViews, Extras, PreservingViews, RandomViews
    from pipeline.cache.schema import CachedExample

    def masks(*tokens: tuple[int, ...]) -> np.ndarray:
        out = np.zeros((len(tokens), 7), dtype=bool)
        for view, positions in enumerate(tokens):
            out[view, list(positions)] = True
        return out

    def logits(*rows: tuple[float, float]) -> np.ndarray:
        return np.array(rows, dtype=np.float32)

    special = np.array([True, False, False, False, False, False, True])
    row = CachedExample(
        "dev-0", "dev", 1, "a b c d e", None, np.arange(7, dtype=np.int32), np.zeros(7, np.int8),
        np.where(special, -1, 0).astype(np.int8), special, np.zeros((7, 2), np.int32),
        np.array([0, 0.5, -3.0, 1.0, 0.1, -0.2, 0], dtype=np.float32), np.array([2.0, 0.0], dtype=np.float32),
        Extras((
            PreservingViews(masks((4,), (5,)), logits((2, 0), (1, 0))),
            ContrastiveViews(masks((2,), (2, 3)), logits((0, 1), (1, 1))),
            RandomViews(masks((1,), (1,)), logits((2, 0), (2, 0))),
        )),
    )  # fmt: skip

    def kl(first: tuple[float, float], second: tuple[float, float]) -> float:
        p, q = np.exp(first) / np.exp(first).sum(), np.exp(second) / np.exp(second).sum()
        return float((p * np.log(p / q)).sum())

    shifts = view_shift([row], temperature=1.0)
    # contrastive (1, 1): a tie, class 0
    expected = [
        ViewShift("preserving", 2, (kl((2, 0), (2, 0)) + kl((2, 0), (1, 0))) / 2, 0.0, 0.0, 2.0),
        ViewShift("contrastive", 2, (kl((2, 0), (0, 1)) + kl((2, 0), (1, 1))) / 2, 0.5, 1.0, 2.0),
        ViewShift("random", 2, 0.0, 0.0, 0.0, 1.0),
    ]
    for got, want in zip(shifts, expected, strict=True):
        assert (got.kind, got.views, got.flips, got.top_masked, got.distinct) == (
            want.kind, want.views, want.flips, want.top_masked, want.distinct
        )  # fmt: skip
        assert got.kl == pytest.approx(want.kl, abs=1e-9)
    assert shifts[0].kl == pytest.approx(0.03357, abs=1e-5)  # KL((0.881, 0.119) || (0.731, 0.269)) / 2
    assert table(shifts).splitlines()[3] == "| contrastive | 2 | 0.5783 | 0.500 | 1.000 | 2.00 |"


def test_end_to_end_runs_explain_without_views(tiny_model_dir, glue_dir, tmp_path):
    """The CLI runs are compared with the explainer's own rate, so they cache no views (12 more forwards each)."""
    import time

    from benchmarks.end_to_end import EndToEnd, run_end_to_end
    from pipeline.cache.store import read_cache

    runs = run_end_to_end(
        sys.executable,
        str(tiny_model_dir),
        str(glue_dir),
        [EndToEnd("gradient", 6, 0)],
        tmp_path,
        time.perf_counter() + 120,
    )
    assert runs[0]["exit_code"] == 0 and runs[0]["rows"] == 6
    meta, rows = read_cache(tmp_path / "cache-0", "gradient", "train")
    assert json.loads(meta.method_params)["views"]["count"] == 0
    assert len(rows) == 6


def test_device_suite_explainers_run_without_views(device_results):
    """The in-process rates are the explainer's alone, as captum's are: gradient x input is one forward (and one
    backward) per batch, with no view forwards (4 of each kind per sentence by default)."""
    found, _ = device_results
    reference = found["end_to_end"]["reference"]["gradient"]
    assert reference["forward_calls"] == reference["batches"]
    ixg = found["egkd"]["input_x_gradient"]["bf16"]
    assert ixg["forward_calls"] == ixg["batches"]


def test_sync_count_leaves_out_the_debug_modes_own_notice():
    """torch's first use of the sync debug mode warns that it is a prototype: that is no synchronisation."""
    from benchmarks.stage_one import sync_warnings

    notice = (
        "Synchronization debug mode is a prototype feature and does not yet detect all synchronizing operations "
        "(Triggered internally at /pytorch/torch/csrc/cuda/Module.cpp:1003.)"
    )
    sync = "called a synchronizing CUDA operation (Triggered internally at /pytorch/c10/cuda/CUDAFunctions.cpp:162.)"
    assert sync_warnings([notice, sync, f"{sync}\nsecond line"]) == [sync, sync]
    assert sync_warnings([notice]) == []


def test_warm_up_runs_the_longest_and_the_shortest_batch():
    from benchmarks.stage_one import warm_up

    assert warm_up(["longest", "middle", "shortest"]) == ["longest", "shortest"]
    assert warm_up(["only"]) == ["only"]


def test_coverage_exact_on_hand_made_examples():
    """Training words {good, film, bad, it's}. Dev: "good film" (0 unseen), "a bad plot" (a, plot: 2 unseen),
    "it's a dull , dull plot" (a, dull, dull, plot: 4; the comma is no word). Occurrences 10, seen 4 (good, film,
    bad, it's); distinct words 7, seen 4; sentences with every word seen 1 of 3. Each dev sentence falls in its own
    bin (0 / 1-2 / 3+ unseen), so a run's accuracy per bin is 0 or 1."""
    from benchmarks.coverage import GroupAccuracy, coverage, group_accuracy, table, words
    from pipeline.data import Example
    from pipeline.report.compare import RunPredictions
    from pipeline.report.data import StudentRun

    def example(i: str, text: str, pair: str | None = None) -> Example:
        return Example(i, "x", text, pair, 1)

    train = [example("train-0", "Good film"), example("train-1", "bad", "It's")]
    dev = [example("dev-0", "good film"), example("dev-1", "a bad plot"), example("dev-2", "it's a dull , dull plot")]
    assert words(train[1]) == ["bad", "it's"]
    summary, unseen = coverage(train, dev)
    assert (summary.train_examples, summary.train_words) == (2, 4)
    assert (summary.tokens, summary.types, summary.sentences) == (4 / 10, 4 / 7, 1 / 3)
    assert unseen == {"dev-0": 0, "dev-1": 2, "dev-2": 4}

    def run(variant: str, seed: int, classes: tuple[int, ...]) -> StudentRun:
        ids = ("dev-0", "dev-1", "dev-2")
        return StudentRun(f"{variant}-s{seed}", variant, seed, Path("m"), "accuracy", 0.0,
                          predictions=RunPredictions(ids, classes, (1, 1, 1)))  # fmt: skip

    runs = [run("kd", 0, (1, 0, 0)), run("kd", 1, (1, 1, 0)), run("views", 0, (0, 1, 1)), run("views", 2, (1, 1, 1))]
    groups = group_accuracy(runs, unseen, reference="kd")
    assert groups == [
        GroupAccuracy("kd", 2, (1.0, 0.5, 0.0), None),
        GroupAccuracy("views", 2, (0.5, 1.0, 1.0), (-100.0, 100.0, 100.0)),  # paired on seed 0 only
    ]
    lines = table(groups, unseen, "kd").splitlines()
    assert lines[0].startswith("| variant | seeds | 0 unseen (1) | 1-2 unseen (1) | 3+ unseen (1) | 0: vs kd")
    assert lines[3] == "| views | 2 | 0.5000 | 1.0000 | 1.0000 | -100.00 | +100.00 | +100.00 |"
    with pytest.raises(EgkdError, match="dev-9 is not in the split"):
        group_accuracy([StudentRun("kd-s0", "kd", 0, Path("m"), "accuracy", 0.0,
                                   predictions=RunPredictions(("dev-9",), (1,), (1,)))], unseen)  # fmt: skip


def test_coverage_cli_on_sst2(tmp_path, capsys, glue_dir):
    """The first 50 SST-2 training sentences against the dev set, with one hand-written evaluation JSON."""
    from benchmarks import coverage
    from pipeline.data import load_dataset
    from pipeline.tasks import get_task

    dev = load_dataset(glue_dir, get_task("sst2"), "dev").examples
    report = {
        "model": str(tmp_path / "kd-s0"),
        "task": "sst2",
        "metrics": {"main_name": "accuracy", "main": 1.0, "count": len(dev)},
        "predictions": {
            "example_ids": [e.example_id for e in dev],
            "classes": [int(e.label) for e in dev],
            "labels": [int(e.label) for e in dev],
        },
    }
    (tmp_path / "kd-s0.json").write_text(json.dumps(report), encoding="utf-8")
    coverage.main(["--data", str(glue_dir), "--train-limit", "50", "--evals", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("sst2 dev: the first 50 training examples hold ")
    assert out[3].startswith("| kd | 1 | 1.0000 | 1.0000 | 1.0000 |")
    with pytest.raises(SystemExit, match="error: .*limit must be a positive number"):
        coverage.main(["--data", str(glue_dir), "--train-limit", "0"])


def test_word_views_neighbours_and_positions():
    """Four candidate words at angles 0, 10, 80 and 90 degrees (lengths differ: only the angle counts): "good"
    is nearest "great", then "bad"; "awful" nearest "bad", then "great". Words outside the pool get no entry.
    Both modes replace the same positions; "a", "film" and "," are not in the table, so never replaced."""
    import torch

    from benchmarks.word_views import candidates, neighbour_table, views_of

    vocab = {"[PAD]": 0, "[MASK]": 1, "a": 2, "##s": 3, ",": 4, "good": 5, "great": 6, "bad": 7, "awful": 8, "it's": 9}
    pool = candidates(vocab)
    assert pool == {"good": 5, "great": 6, "bad": 7, "awful": 8}
    angles = torch.deg2rad(torch.tensor([0.0, 0, 0, 0, 0, 0.0, 10.0, 80.0, 90.0, 0]))
    embeddings = torch.stack([torch.cos(angles), torch.sin(angles)], 1) * torch.arange(1, 11)[:, None]
    table = neighbour_table(["good", "awful", "plot", "good"], pool, embeddings, count=2)
    assert table == {"good": ("great", "bad"), "awful": ("bad", "great")}
    table = {"good": ("great", "fine"), "bad": ("awful",)}
    text = "a good film , not bad"
    masked = views_of(text, table, views=3, fraction=0.2, mode="mask", seed=0, index=4)
    swapped = views_of(text, table, views=3, fraction=0.2, mode="neighbours", seed=0, index=4)
    assert len(masked) == 3 and masked == views_of(text, table, 3, 0.2, "mask", 0, 4)  # seeded
    for mask_view, word_view in zip(masked, swapped, strict=True):
        m, w = mask_view.split(), word_view.split()
        changed = [i for i, word in enumerate(text.split()) if m[i] != word]
        assert len(changed) == 2 and set(changed) == {1, 5}  # ceil(0.2 * 6) = 2 of the 2 replaceable words
        assert all(m[i] == "[MASK]" for i in changed)
        assert w[1] in table["good"] and w[5] == "awful" and w[:1] + w[2:5] == m[:1] + m[2:5]
    assert views_of("a film ,", table, 3, 0.2, "mask", 0, 0) == []


def test_word_views_cli_writes_a_glue_folder(tmp_path, tiny_model_dir, glue_dir):
    from benchmarks import word_views

    out = tmp_path / "aug"
    word_views.main(["--data", str(glue_dir), "--teacher", str(tiny_model_dir), "--limit", "30", "--views", "2",
                     "--mode", "mask", "--out", str(out)])  # fmt: skip
    lines = (out / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    source = (glue_dir / "SST-2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[:31] == source[:31]  # the header and the 30 sentences, unchanged
    views = lines[31:]
    assert views and len(views) % 2 == 0 and all("[MASK]" in line for line in views)
    assert (out / "SST-2" / "dev.tsv").read_bytes() == (glue_dir / "SST-2" / "dev.tsv").read_bytes()
    with pytest.raises(SystemExit, match="error: --limit, --views and --neighbours must be positive"):
        word_views.main(["--data", str(glue_dir), "--teacher", str(tiny_model_dir), "--limit", "0",
                         "--mode", "mask", "--out", str(out)])  # fmt: skip


def test_mix_shift_exact_on_hand_made_logits():
    """Recipients (ln 3, 0) and (0, 0); mixed sentences (0, ln 3) and (0, 0). At temperature 1: p = (0.75, 0.25)
    and (0.5, 0.5); the first mix flips (0.25, 0.75), the second ties and keeps class 0 (argmax takes the first).
    KL((0.75, 0.25) || (0.25, 0.75)) = 0.5 ln 3, KL of equal distributions 0: mean 0.25 ln 3."""
    import numpy as np

    from benchmarks.mix_shift import outputs

    ln3 = math.log(3.0)
    recipient = np.array([[ln3, 0.0], [0.0, 0.0]])
    mixed = np.array([[0.0, ln3], [0.0, 0.0]])
    got = outputs("mix", mixed, np.array([4, 6]), recipient, 1.0)
    assert (got.sentences, got.flips, got.tokens) == (2, 0.5, 5.0)
    assert got.kl == pytest.approx(0.25 * ln3, abs=1e-12)
    assert got.top_probability == pytest.approx((0.75 + 0.5) / 2, abs=1e-12)
    entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) + math.log(2.0)
    assert got.entropy == pytest.approx(entropy / 2, abs=1e-12)
    alone = outputs("train", recipient, np.array([3, 3]), None, 2.0)
    assert (alone.flips, alone.kl) == (None, None)
    assert alone.top_probability == pytest.approx((math.sqrt(3) / (math.sqrt(3) + 1) + 0.5) / 2, abs=1e-12)

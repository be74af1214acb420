"""Smoke test of the benchmark (benchmarks/bench.py) on a tiny model: every section runs and reports its
fields. Not a timing test: the numbers are not checked, only that they are there and finite."""

from __future__ import annotations

import json
import math
import sys

import pytest

from benchmarks import bench

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

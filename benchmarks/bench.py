"""egkd performance benchmark.

    python -m benchmarks.bench [--device cpu|cuda] [--quick] [--out benchmarks/results] [--machine NAME]
                               [--teacher REF] [--tokenizer REF] [--data GLUE]

``--device cpu`` (the default) runs the CPU suite: stage one against the matmul
roofline and captum, stage two against plain fine-tuning and the online loss,
stage-one scaling over dask workers. ``--device cuda`` runs the device suite
(:mod:`benchmarks.device`): matmul peaks at fp32, TF32 and bf16, egkd at fp32 and
bf16, captum on the same GPU, bf16-vs-fp32 accuracy, a token-budget sweep,
``egkd explain`` end to end and torch.compile / CUDA graphs, side by side.

Writes ``<out>/<machine>.json`` and ``<out>/<machine>.md`` (the device suite after
every section, so an interrupted run keeps what it measured). See
benchmarks/README.md for the FLOP model and what every number means.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks import report
from benchmarks.measure import FlopModel, machine_info, matmul_peak
from benchmarks.stage_one import Workload, agreement, cases, run_captum, run_egkd

TASK, SPLIT, MAX_LENGTH = "sst2", "dev", 128
BATCH = None  # egkd explain's default: batches planned by the token budget (explain.tokens_per_forward)
CAPTUM_TOKENS = 2048  # captum's internal batches (IG) on the CPU: as many tokens as egkd's forwards
DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")


@dataclass(frozen=True)
class Sizes:
    egkd: dict[str, int]  # examples per stage-one case
    captum_tutorial: int  # at most this many of egkd's examples for captum one at a time
    captum_best: int  # at most this many of egkd's examples for captum with batching
    captum_batch: int
    peak_repeats: int
    student_batches: int  # distinct batches of 32 the stage-two steps cycle through
    step_warmup: int
    step_repeats: int
    online_repeats: int
    scaling_method: str
    scaling_examples: int
    scaling_part: int
    student_batch: int = 32  # stage-two batch size
    repeats: int = 1  # stage-one runs: the fastest of this many
    peak_sizes: tuple[int, ...] = (1024, 1536, 2048)


QUICK = Sizes(
    {"input_x_gradient": 32, "integrated_gradients": 4, "occlusion": 16, "feature_selection": 16},
    captum_tutorial=2,
    captum_best=4,
    captum_batch=4,
    peak_repeats=3,
    student_batches=1,
    step_warmup=0,
    step_repeats=3,
    online_repeats=1,
    scaling_method="input_x_gradient",
    scaling_examples=32,
    scaling_part=8,
    student_batch=16,
)
FULL = Sizes(
    {"input_x_gradient": 256, "integrated_gradients": 32, "occlusion": 96, "feature_selection": 64},
    captum_tutorial=256,
    captum_best=256,
    captum_batch=16,
    peak_repeats=8,
    student_batches=2,
    step_warmup=2,
    step_repeats=10,
    online_repeats=3,
    scaling_method="occlusion",
    scaling_examples=192,
    scaling_part=16,
    repeats=3,
)


def stage_one(work: Workload, sizes: Sizes) -> tuple[dict, dict]:
    results, explanations = {}, {}
    for case in cases(BATCH):
        examples = work.encoded[: sizes.egkd[case.name]]
        egkd, explained = run_egkd(work, case, examples, sizes.repeats)
        entry = {"egkd": egkd}
        if case.captum is not None:
            for label, best, count in (
                ("captum_tutorial", False, sizes.captum_tutorial),
                ("captum_best", True, sizes.captum_best),
            ):
                subset = examples[:count]  # the same sentences as egkd's run, or its first ones in --quick
                measured, attributions = run_captum(
                    work, case.captum, subset, best, sizes.captum_batch, sizes.repeats, case.ig_steps, CAPTUM_TOKENS
                )
                measured["agreement"] = agreement(explained, attributions, subset)
                measured["egkd_speedup"] = egkd["ex_per_s"] / measured["ex_per_s"]
                entry[label] = measured
        results[case.name] = entry
        explanations[case.name] = explained
        print(
            f"stage one {case.name}: {egkd['ex_per_s']:.2f} ex/s, {egkd['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True
        )
    return results, explanations


def stage_two(
    work: Workload, explanations: dict, sizes: Sizes, student_ref: str, device: str = "cpu", data: str = DEFAULT_DATA
) -> dict:
    """The stage-two section (benchmarks/stage_two.py): on a CPU on the dev sentences stage one explained,
    with its explanations; on a GPU on training sentences of a size that fills it, explained there."""
    from benchmarks.stage_two import StepSizes, device_peak, section, sizes_for, training_sentences
    from pipeline.config import ComputeParams
    from pipeline.device import resolve_compute

    compute = resolve_compute(ComputeParams(device))
    if not compute.cuda:
        steps = StepSizes(
            batch=sizes.student_batch,
            batches=sizes.student_batches,
            layers=2,
            warmup=sizes.step_warmup,
            repeats=sizes.step_repeats,
            online_repeats=sizes.online_repeats,
        )
        peak = {"flops_per_s": work.peak, "dtype": "fp32", "source": "measured (the matmul peak above)"}
        return section(work.model, work.tokenizer, work.encoded, student_ref, steps, compute, peak, explanations)
    steps = sizes_for(compute, quick=sizes.step_repeats < FULL.step_repeats)
    encoded = training_sentences(data, work.tokenizer, steps)
    return section(work.model, work.tokenizer, encoded, student_ref, steps, compute, device_peak(compute))


def scaling(teacher: str, data: str, sizes: Sizes) -> dict:
    from benchmarks.scaling import scale

    case = {c.name: c for c in cases(BATCH)}[sizes.scaling_method]
    params = dataclasses.replace(case.params, partition_size=sizes.scaling_part)
    runs = [
        scale(teacher, data, TASK, SPLIT, sizes.scaling_examples, MAX_LENGTH, case.method, params, workers)
        for workers in (1, 2)
    ]
    ratio = runs[1]["ex_per_s"] / runs[0]["ex_per_s"]
    print(
        f"scaling {case.name}: 1 worker {runs[0]['ex_per_s']:.2f} ex/s, 2 workers {runs[1]['ex_per_s']:.2f} "
        f"ex/s ({ratio:.2f}x)",
        flush=True,
    )
    return {
        "method": case.name,
        "runs": runs,
        "ratio": ratio,
        "ratio_with_startup": runs[1]["ex_per_s_with_startup"] / runs[0]["ex_per_s_with_startup"],
        "timing": "run_explain against a started, teacher-loaded cluster (start-up and load excluded)",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default: cpu)")
    parser.add_argument(
        "--suite",
        choices=["cpu", "device"],
        default=None,
        help="cpu: stage one vs captum, stage two, scaling; device: the GPU tables (default: cpu on the CPU, "
        "device on a GPU; --device cpu --suite device runs the device suite's code on the CPU)",
    )
    parser.add_argument("--quick", action="store_true", help="fewer examples and repeats (under 2 minutes)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--teacher",
        default=None,
        help="teacher model reference or directory (default: builtin:minilm-l6 on the CPU, a random-weight "
        "BERT-base on a GPU)",
    )
    parser.add_argument(
        "--tokenizer", default="builtin:minilm-l6", help="tokenizer of the random BERT-base teacher (BERT uncased)"
    )
    parser.add_argument("--data", default=DEFAULT_DATA, help="GLUE folder holding SST-2/dev.tsv (and train.tsv)")
    parser.add_argument(
        "--threads",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="torch threads for the matmul peak, stage one and stage two",
    )
    parser.add_argument("--machine", default=None, help="results file name (default: the GPU's or the host's name)")
    parser.add_argument(
        "--save-teacher",
        default=None,
        help="device suite without --teacher: save the random BERT-base teacher to this folder (for egkd explain)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=["stage_two", "scaling", "peaks", "egkd", "syncs", "captum", "sweep", "end_to_end", "compile"],
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if (args.suite or ("device" if args.device == "cuda" else "cpu")) == "device":
        return run_on_device(
            args.device,
            args.quick,
            args.out,
            args.teacher,
            args.tokenizer,
            args.data,
            args.threads,
            args.machine,
            set(args.skip),
            save_teacher=args.save_teacher,
        )
    teacher = args.teacher or "builtin:minilm-l6"
    return run(args.quick, args.out, teacher, args.data, args.threads, args.machine, set(args.skip))


def machine_name(device: str) -> str:
    """The results file name: the GPU's name (``nvidia-h200``) on a GPU, else the host name."""
    if device == "cuda":
        return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")
    return os.uname().nodename


def run_on_device(
    device: str,
    quick: bool,
    out: Path,
    teacher: str | None,
    tokenizer: str,
    data: str,
    threads: int,
    machine: str | None = None,
    skip: set[str] = frozenset(),  # type: ignore[assignment]
    sizes=None,
    save_teacher: str | None = None,
) -> dict:
    """The device suite (:mod:`benchmarks.device`), its results rewritten after every section."""
    from benchmarks.device import run_device

    name = machine or machine_name(device)
    out.mkdir(parents=True, exist_ok=True)

    def write(results: dict) -> None:
        results["targets"] = report.device_targets(results)
        (out / f"{name}.json").write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
        (out / f"{name}.md").write_text(report.device_markdown(results), encoding="utf-8")

    results = run_device(device, quick, teacher, tokenizer, data, threads, write, skip, sizes, save_teacher)
    print(f"wrote {out / name}.json and .md in {results['wall_s']} s", flush=True)
    if "stage_two" not in skip and sizes is None:  # stage two on the same device: its own results file
        from benchmarks import stage_two

        args = ["--device", device, "--out", str(out), "--machine", name, "--data", data]
        results["stage_two"] = stage_two.main([*args, "--quick"] if quick else args)
    return results


def run(
    quick: bool,
    out: Path,
    teacher: str,
    data: str,
    threads: int,
    machine: str | None = None,
    skip: set[str] = frozenset(),
    sizes: Sizes | None = None,
    device: str = "cpu",
) -> dict:
    from pipeline.data import load_dataset
    from pipeline.encoding import encode
    from pipeline.models import base_model_of, load_classifier, load_tokenizer
    from pipeline.tasks import get_task

    sizes = sizes or (QUICK if quick else FULL)
    started = time.perf_counter()
    torch.set_num_threads(threads)
    info = machine_info()
    print(f"load average {info['load_avg_1_5_15']}, {threads} torch threads", flush=True)
    peak = matmul_peak(sizes.peak_sizes, repeats=sizes.peak_repeats)
    print(f"matmul peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s", flush=True)
    torch.manual_seed(0)
    model = load_classifier(teacher, 2).eval()
    tokenizer = load_tokenizer(teacher)
    needed = max(
        [
            *sizes.egkd.values(),
            sizes.captum_best,
            sizes.captum_tutorial,
            sizes.student_batch * sizes.student_batches,
            sizes.scaling_examples,
        ]
    )
    dataset = load_dataset(data, get_task(TASK), SPLIT, needed)
    work = Workload(
        model, tokenizer, encode(tokenizer, dataset.examples, MAX_LENGTH), FlopModel.of(model), peak["flops_per_s"]
    )
    results = {
        "machine": info,
        "mode": "quick" if quick else "full",
        "teacher": teacher,
        "data": f"{TASK} {SPLIT} (first examples in dataset order)",
        "matmul_peak": peak,
        "flop_model": work.flops.__dict__,
    }
    results["stage_one"], explanations = stage_one(work, sizes)
    # The peak again after stage one: on a shared machine the larger of the two is the better estimate.
    again = matmul_peak(sizes.peak_sizes, repeats=sizes.peak_repeats)
    peak["after_stage_one"] = again["flops_per_s"]
    peak["before_stage_one"] = peak["flops_per_s"]
    peak["flops_per_s"] = max(peak["flops_per_s"], again["flops_per_s"])
    for entry in results["stage_one"].values():
        for measured in entry.values():
            measured["fraction_of_peak"] = measured["flops_per_s"] / peak["flops_per_s"]
    if "stage_two" not in skip:
        results["stage_two"] = stage_two(work, explanations, sizes, base_model_of(teacher), device, data)
    if "scaling" not in skip:
        results["scaling"] = scaling(teacher, data, sizes)
    results["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    results["targets"] = report.targets(results)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    name = machine or info["hostname"]
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(report.markdown(results), encoding="utf-8")
    print(f"wrote {out / name}.json and .md in {results['wall_s']} s", flush=True)
    return results


if __name__ == "__main__":
    main()

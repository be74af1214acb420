"""The device suite: stage one on one accelerator, every table side by side from one run.

    python -m benchmarks.bench --device cuda [--quick] [--teacher DIR] [--tokenizer REF] [--data GLUE]

Sections, in order of importance (each one guarded: a failure is recorded and the
next section runs; the results files are rewritten after every section; a section
that the time left cannot hold is skipped and says so):

1. ``peaks``: ``torch.mm`` FLOP/s at fp32 (TF32 off), TF32 and bf16;
2. ``egkd``: each explainer at bf16 and at fp32 on SST-2 dev, with the fraction of
   the bf16 peak in model FLOPs; bf16 maps against fp32 maps (mean Spearman,
   top-20% overlap) on the fp32 sentences;
3. ``syncs``: how often one explained batch makes the host wait (torch's CUDA sync
   debug mode; zero is the design);
4. ``captum``: one sentence per call (tutorial style) and with its batching options
   given the same token budget as egkd, at fp32 and under the same bf16 autocast;
5. ``sweep``: egkd at bf16 for several token budgets per forward, and the fastest;
6. ``end_to_end``: ``egkd explain`` through the CLI on SST-2 train sentences, in
   process (``--workers 0``) and on a dask worker (``--workers 1``), a rerun with
   nothing to compute, against the in-process explainer rate on the same sentences;
7. ``compile``: ``explain.compile: inductor`` and ``cudagraphs`` against ``eager``.

The teacher is a random-weight BERT-base-shaped classifier (12 layers, hidden 768,
vocab 30522) built from a config when no ``--teacher`` is given: speed does not
depend on the weights. Integrated Gradients uses 20 steps (the pipeline's default)
for egkd and captum alike. Everything here runs on a CPU too (``device="cpu"``),
which is how the smoke test covers it.
"""

from __future__ import annotations

import dataclasses
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.end_to_end import EndToEnd, run_end_to_end
from benchmarks.measure import FlopModel, device_info, machine_info, matmul_peaks
from benchmarks.stage_one import (
    Case,
    Workload,
    agreement,
    cases,
    count_syncs,
    map_agreement,
    run_captum,
    run_egkd,
    with_runtime,
)
from pipeline.config import TokenBudget

TASK, SPLIT, MAX_LENGTH = "sst2", "dev", 128


@dataclass(frozen=True)
class DeviceSizes:
    bf16_examples: int  # dev sentences per method at bf16 (872: all of SST-2 dev)
    fp32_examples: dict[str, int]  # per method; the bf16-vs-fp32 accuracy is taken on these
    repeats: int  # egkd timed runs, the fastest kept
    captum_tutorial: dict[str, int]  # per captum kind: sentences explained one per call
    captum_best: dict[str, int]  # per captum kind: sentences explained with its batching
    sweep_budgets: tuple[int, ...]
    sweep_examples: int
    compile_modes: tuple[str, ...]
    compile_cases: tuple[str, ...]
    compile_examples: int
    end_to_end: tuple[EndToEnd, ...]
    reference_examples: int  # train sentences for the in-process rate that end to end is compared with
    deadline_s: float  # sections that would start after this are skipped
    peak_sizes: tuple[int, ...] = (4096, 8192)
    peak_repeats: int = 5
    ig_steps: int = 20
    syncs_examples: int = 64


# FLOP sizing (BERT-base ~0.17 GFLOP per token forward; dev sentences ~27 padded tokens; bf16 peak ~780
# TFLOP/s): at 30% of the bf16 peak every bf16 method takes well under a second on all 872 dev sentences,
# the fp32 runs (51 TFLOP/s peak) a second or two each; at today's 2-6% the quick run still ends in time.
QUICK = DeviceSizes(
    bf16_examples=872,
    fp32_examples={"input_x_gradient": 256, "integrated_gradients": 64, "occlusion": 128, "feature_selection": 128},
    repeats=1,
    captum_tutorial={"ixg": 24, "ig": 8, "occlusion": 6},
    captum_best={"ixg": 872, "ig": 96, "occlusion": 192},
    sweep_budgets=(16384, 65536, 131072),
    sweep_examples=384,
    compile_modes=("inductor",),
    compile_cases=("occlusion",),
    compile_examples=256,
    end_to_end=(
        EndToEnd("gradient", 20000, 0),
        EndToEnd("gradient", 20000, 1, rerun=True),
    ),
    reference_examples=4096,
    deadline_s=105.0,
)
FULL = DeviceSizes(
    bf16_examples=872,
    fp32_examples={"input_x_gradient": 872, "integrated_gradients": 128, "occlusion": 256, "feature_selection": 256},
    repeats=2,
    captum_tutorial={"ixg": 64, "ig": 16, "occlusion": 12},
    captum_best={"ixg": 872, "ig": 192, "occlusion": 384},
    sweep_budgets=(8192, 16384, 32768, 65536, 131072),
    sweep_examples=872,
    compile_modes=("inductor", "cudagraphs"),
    compile_cases=("input_x_gradient", "occlusion"),
    compile_examples=512,
    end_to_end=(
        EndToEnd("gradient", 20000, 0),
        EndToEnd("gradient", 20000, 1, rerun=True),
        EndToEnd("perturbation", 8000, 0),
        EndToEnd("perturbation", 8000, 1),
        EndToEnd("feature_selection", 4000, 0),
        EndToEnd("feature_selection", 4000, 1),
    ),
    reference_examples=4096,
    deadline_s=280.0,
)


def on_cpu(sizes: DeviceSizes) -> DeviceSizes:
    """The suite's sizes for a CPU (``--device cpu --suite device``): ~100x fewer FLOP/s than a GPU's bf16."""
    return dataclasses.replace(
        sizes,
        bf16_examples=96,
        fp32_examples={k: min(v, 96 if k != "integrated_gradients" else 32) for k, v in sizes.fp32_examples.items()},
        captum_tutorial={k: min(v, 8) for k, v in sizes.captum_tutorial.items()},
        captum_best={k: min(v, 32) for k, v in sizes.captum_best.items()},
        sweep_budgets=(1024, 2048, 4096),
        sweep_examples=32,
        compile_examples=32,
        end_to_end=tuple(dataclasses.replace(run, limit=min(run.limit, 512)) for run in sizes.end_to_end),
        reference_examples=256,
        peak_sizes=(1024, 2048),
        deadline_s=sizes.deadline_s * 6,
    )


# The least time (s) a section needs to be worth starting.
NEEDS = {"syncs": 3, "captum": 15, "sweep": 10, "end_to_end": 25, "compile": 30}


def random_bert_base(tokenizer) -> torch.nn.Module:
    """A BERT-base-shaped sequence classifier with random weights (seed 0), SDPA attention."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=max(30522, len(tokenizer)), num_labels=2)  # BERT-base: 12 x 768, 3072
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval()


class Suite:
    """Runs the sections against a deadline and writes the results after each one."""

    def __init__(self, results: dict, write: Callable[[dict], None], deadline_s: float) -> None:
        self.results, self.write, self.deadline = results, write, time.perf_counter() + deadline_s
        self.started = time.perf_counter()

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def section(self, name: str, body: Callable[[], object], skip: set[str], needs: float = 0.0) -> None:
        if name in skip:
            self.results["sections"][name] = {"status": "skipped (--skip)"}
        elif self.left() < needs:
            self.results["sections"][name] = {"status": f"skipped: {self.left():.0f} s left of the time limit"}
            print(f"[{name}] skipped: not enough time left", flush=True)
        else:
            start = time.perf_counter()
            try:
                self.results[name] = body()
                status = "ok"
            except Exception as err:  # noqa: BLE001  (one section's failure must not lose the others)
                status = f"failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                self.results.setdefault("errors", {})[name] = traceback.format_exc(limit=8)
                print(f"[{name}] {status}", flush=True)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            self.results["sections"][name] = {"status": status, "seconds": round(time.perf_counter() - start, 1)}
        self.results["wall_s"] = round(time.perf_counter() - self.started, 1)
        self.write(self.results)


def run_device(
    device: str,
    quick: bool,
    teacher: str | None,
    tokenizer_ref: str,
    data: str,
    threads: int,
    write: Callable[[dict], None],
    skip: set[str] = frozenset(),  # type: ignore[assignment]
    sizes: DeviceSizes | None = None,
    save_teacher: str | None = None,
) -> dict:
    from pipeline.data import load_dataset
    from pipeline.encoding import encode
    from pipeline.models import load_classifier, load_tokenizer
    from pipeline.tasks import get_task

    target = torch.device(device)
    if sizes is None:
        sizes = QUICK if quick else FULL
        sizes = on_cpu(sizes) if target.type == "cpu" else sizes
    torch.set_num_threads(threads)
    results: dict = {
        "suite": "device",
        "machine": machine_info(),
        "device": {"type": target.type, **device_info(target)},
        "mode": "quick" if quick else "full",
        "data": f"{TASK} {SPLIT} (first examples in dataset order); end to end: {TASK} train",
        "ig_steps": sizes.ig_steps,
        "sections": {},
    }
    suite = Suite(results, write, sizes.deadline_s)
    print(f"device suite on {results['device']}, load average {results['machine']['load_avg_1_5_15']}", flush=True)

    tokenizer = load_tokenizer(teacher or tokenizer_ref)
    model = (load_classifier(teacher, 2) if teacher else random_bert_base(tokenizer)).to(target).eval()
    if teacher is None and save_teacher is not None:  # a folder egkd explain can load, for runs of the lead's own
        save_model(model, tokenizer, save_teacher)
        teacher = save_teacher
    results["teacher"] = f"random BERT-base (12 layers, hidden 768), tokenizer {tokenizer_ref}"
    if teacher is not None:
        results["teacher"] = teacher if save_teacher is None else f"{results['teacher']}, saved to {teacher}"
    results["random_teacher"] = teacher is None or save_teacher is not None
    flops = FlopModel.of(model)
    results["flop_model"] = flops.__dict__
    largest = max([sizes.bf16_examples, sizes.sweep_examples, *sizes.fp32_examples.values()])
    largest = max([largest, *sizes.captum_best.values(), *sizes.captum_tutorial.values(), sizes.compile_examples])
    dev = encode(tokenizer, load_dataset(data, get_task(TASK), SPLIT, largest).examples, MAX_LENGTH)
    work = Workload(model, tokenizer, dev, flops, peak=1.0)
    explained: dict[str, dict] = {}

    def peaks() -> dict:
        found = matmul_peaks(target, sizes.peak_sizes, sizes.peak_repeats)
        work.peak = found["bf16"]
        print(
            "matmul peaks (TFLOP/s): "
            + ", ".join(f"{k} {found[k] / 1e12:.1f}" for k in ("fp32", "tf32", "bf16") if k in found),
            flush=True,
        )
        return found

    suite.section("peaks", peaks, skip)
    if work.peak == 1.0:  # peaks skipped or failed: fractions are of nothing measured
        work.peak = float("nan")

    def egkd() -> dict:
        out = {}
        for case in cases(None, ig_steps=sizes.ig_steps):
            entry: dict = {}
            for precision, count in (("bf16", sizes.bf16_examples), ("fp32", sizes.fp32_examples[case.name])):
                measured, maps = run_egkd(work, with_runtime(case, precision=precision), dev[:count], sizes.repeats)
                entry[precision] = measured
                explained.setdefault(case.name, {})[precision] = maps
                print(
                    f"egkd {case.name} {precision}: {measured['ex_per_s']:.1f} ex/s, "
                    f"{measured['flops_per_s'] / 1e12:.2f} TFLOP/s, {measured['fraction_of_peak']:.1%} of bf16 peak",
                    flush=True,
                )
            entry["bf16_vs_fp32"] = map_agreement(
                explained[case.name]["fp32"], explained[case.name]["bf16"], dev[: sizes.fp32_examples[case.name]]
            )
            print(f"  bf16 vs fp32 maps: {entry['bf16_vs_fp32']}", flush=True)
            out[case.name] = entry
        return out

    suite.section("egkd", egkd, skip)

    def syncs() -> dict:
        return {
            case.name: count_syncs(work, with_runtime(case, precision="bf16"), dev[: sizes.syncs_examples])
            for case in cases(None, ig_steps=sizes.ig_steps)
        }

    suite.section("syncs", syncs, skip, needs=NEEDS["syncs"])

    def captum() -> dict:
        out = {}
        budget = TokenBudget().on(target.type)
        for case in cases(None, ig_steps=sizes.ig_steps):
            kind = case.captum
            if kind is None:
                continue
            entry: dict = {}
            ours = explained.get(case.name, {}).get("fp32", {})
            runs = (
                ("tutorial", False, "fp32", sizes.captum_tutorial[kind]),
                ("best_fp32", True, "fp32", sizes.captum_best[kind]),
                ("best_bf16", True, "bf16", sizes.captum_best[kind]),
            )
            for label, best, precision, count in runs:
                subset = dev[:count]
                measured, maps = run_captum(
                    work, kind, subset, best, None, 1, ig_steps=sizes.ig_steps, tokens=budget, precision=precision
                )
                common = [e for e in subset if e.example_id in ours]
                if precision == "fp32" and common:
                    measured["agreement_with_egkd_fp32"] = agreement(ours, maps, common)
                entry[label] = measured
                print(f"captum {case.name} {label}: {measured['ex_per_s']:.1f} ex/s", flush=True)
            out[case.name] = entry
        return out

    suite.section("captum", captum, skip, needs=NEEDS["captum"])

    def sweep() -> dict:
        out: dict = {"budgets": list(sizes.sweep_budgets), "examples": sizes.sweep_examples, "runs": {}}
        for case in cases(None, ig_steps=sizes.ig_steps):
            runs = {}
            for budget in sizes.sweep_budgets:
                if suite.left() < 2:
                    runs[str(budget)] = {"error": "skipped: time limit"}
                    continue
                tuned = with_runtime(case, precision="bf16", tokens_per_forward=TokenBudget(cpu=budget, cuda=budget))
                try:
                    runs[str(budget)] = run_egkd(work, tuned, dev[: sizes.sweep_examples])[0]
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    runs[str(budget)] = {"error": "out of memory"}
            timed = {b: r["ex_per_s"] for b, r in runs.items() if "ex_per_s" in r}
            fastest = max(timed, key=lambda b: timed[b]) if timed else None
            out["runs"][case.name] = {"by_budget": runs, "fastest": fastest}
            shown = ", ".join(f"{b}: {v:.0f}" for b, v in timed.items())
            print(f"sweep {case.name} (ex/s by tokens per forward): {shown}; fastest {fastest}", flush=True)
        return out

    suite.section("sweep", sweep, skip, needs=NEEDS["sweep"])

    def end_to_end() -> dict:
        return _end_to_end(work, teacher, tokenizer_ref, data, sizes, suite, target)

    suite.section("end_to_end", end_to_end, skip, needs=NEEDS["end_to_end"])

    def compiled() -> dict:
        out = {}
        for name in sizes.compile_cases:
            case = {c.name: c for c in cases(None, ig_steps=sizes.ig_steps)}[name]
            out[name] = _compare_compile(work, with_runtime(case, precision="bf16"), dev, sizes, suite)
        return out

    suite.section("compile", compiled, skip, needs=NEEDS["compile"])
    results["machine"]["load_avg_at_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    write(results)
    return results


def _compare_compile(work: Workload, case: Case, dev: list, sizes: DeviceSizes, suite: Suite) -> dict:
    """Eager against each ``explain.compile`` mode: first pass (compiling) and then a timed pass."""
    examples = dev[: sizes.compile_examples]
    eager = run_egkd(work, case, examples, count_flops=False)[0]
    out: dict = {"examples": len(examples), "eager_ex_per_s": eager["ex_per_s"]}
    for mode in sizes.compile_modes:
        if suite.left() < 20:
            out[mode] = {"error": "skipped: time limit"}
            continue
        tuned = with_runtime(case, compile=mode)
        started = time.perf_counter()
        try:
            run_egkd(work, tuned, examples, count_flops=False)  # compiles (and records graphs) on the way
            first = time.perf_counter() - started
            measured = run_egkd(work, tuned, examples, count_flops=False)[0]
            out[mode] = {
                "first_pass_s": round(first, 1),
                "ex_per_s": measured["ex_per_s"],
                "vs_eager": measured["ex_per_s"] / eager["ex_per_s"],
            }
        except Exception as err:  # noqa: BLE001  (a mode torch cannot compile here is a result, not a crash)
            out[mode] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}
        print(f"compile {case.name} {mode}: {out[mode]} (eager {eager['ex_per_s']:.1f} ex/s)", flush=True)
    return out


def _end_to_end(
    work: Workload, teacher: str | None, tokenizer_ref: str, data: str, sizes: DeviceSizes, suite: Suite, target
) -> dict:
    """CLI runs on SST-2 train, and the in-process explainer rate on (the first of) the same sentences."""
    from pipeline.data import load_dataset
    from pipeline.encoding import encode
    from pipeline.tasks import get_task

    by_method = {"gradient": "input_x_gradient", "perturbation": "occlusion", "feature_selection": "feature_selection"}
    train = encode(
        work.tokenizer, load_dataset(data, get_task(TASK), "train", sizes.reference_examples).examples, MAX_LENGTH
    )
    reference = {}
    for method in dict.fromkeys(run.method for run in sizes.end_to_end):
        case = {c.name: c for c in cases(None, ig_steps=sizes.ig_steps)}[by_method[method]]
        reference[method] = run_egkd(work, case, train)[0]  # egkd explain's defaults: precision auto, default budget
        print(f"in-process {method} on train sentences: {reference[method]['ex_per_s']:.1f} ex/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="egkd-e2e-") as scratch:
        folder = teacher
        if folder is None:
            folder = str(Path(scratch) / "teacher")
            save_model(work.model, work.tokenizer, folder)
        runs = run_end_to_end(
            sys.executable, folder, data, sizes.end_to_end, Path(scratch) / "caches", deadline=suite.deadline
        )
    for run in runs:
        ref = reference.get(run["method"])
        if ref and run.get("ex_per_s"):
            run["in_process_ex_per_s"] = ref["ex_per_s"]
            run["vs_in_process"] = run["ex_per_s"] / ref["ex_per_s"]
    return {"reference": reference, "runs": runs, "device": target.type}


def save_model(model: torch.nn.Module, tokenizer, folder: str) -> None:
    """A model folder ``egkd explain --teacher`` can load: safetensors weights and the tokenizer."""
    model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]
    tokenizer.save_pretrained(folder)


def sizes_for_smoke(end_to_end: tuple[EndToEnd, ...]) -> DeviceSizes:
    """Tiny sizes for the CPU smoke test: every section but compile, in seconds."""
    return dataclasses.replace(
        QUICK,
        bf16_examples=6,
        fp32_examples={"input_x_gradient": 6, "integrated_gradients": 3, "occlusion": 4, "feature_selection": 4},
        captum_tutorial={"ixg": 2, "ig": 2, "occlusion": 2},
        captum_best={"ixg": 4, "ig": 3, "occlusion": 4},
        sweep_budgets=(64, 4096),
        sweep_examples=4,
        compile_modes=(),
        compile_cases=(),
        end_to_end=end_to_end,
        reference_examples=8,
        deadline_s=600.0,
        peak_sizes=(64,),
        peak_repeats=1,
        ig_steps=4,
        syncs_examples=4,
    )

"""Stage-two step time: a plain step, vanilla KD and each explanation objective side by side, on a CPU or a GPU.

Every timed step is the trainer's own step (:meth:`pipeline.training.Trainer.step`: forward under the run's
autocast, losses, backward, gradient clipping, AdamW, scheduler) on the same fixed batches for every
configuration, each batch copied from pinned host memory to the device as the trainer's loader does. The
configurations:

* ``plain``: fine-tuning on the labels (``method none``, alpha 0): the baseline every ratio divides by;
* ``kd``: vanilla KD (``method none``, alpha 0.5), the issue's throughput target on a GPU;
* ``<method>/cached``: the explanation objective, its teacher fields read from cached rows (built in memory
  from the teacher's explanations: no Parquet);
* ``<method>/online``: the same step after the teacher's explainer has run on the batch (what a pipeline
  without the cache does).

On a GPU the device runs ahead of the host, so steps are timed in blocks of ``block`` steps with one
synchronisation at the end of each; every configuration's blocks are interleaved round-robin, so a change
in load hits all of them alike. Each configuration reports its median step time, student sentences/s and,
from the FLOPs its student forwards count (:class:`benchmarks.measure.FlopCounter`, a training forward
counted 3x: forward, input and weight gradients), the fraction of the device's matmul peak (bf16 on a GPU,
measured here unless ``--peak-tflops`` gives one). The gradient objective's double backward is not in that
count, so its fraction is a lower bound.

Run alone: ``python -m benchmarks.stage_two --device cuda [--quick] [--out DIR]``; ``benchmarks.bench`` runs
it as its stage-two section.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks import report
from benchmarks.measure import FlopCounter, FlopModel, machine_info, matmul_peak, section_memory
from pipeline.cache.extras import Axis
from pipeline.cache.project import StudentBatch, StudentExample, collate_students
from pipeline.config import ComputeParams, DistillParams, ExplainParams, TrainParams
from pipeline.device import Compute, pin, resolve_compute, to_device
from pipeline.distill.objectives import ObjectiveSettings, make_objective
from pipeline.distill.trainer import DistillLoss
from pipeline.encoding import EncodedExample, bucketed_batches, collate
from pipeline.explain.base import Explainer, Explanation
from pipeline.methods import Method
from pipeline.training import Trainer, optimizer_for

DEFAULT_DATA = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "glue")
# The teacher explanation each cached objective trains from (stage one's default variants).
TEACHER_CASE = {
    Method.GRADIENT: "input_x_gradient",
    Method.PERTURBATION: "occlusion",
    Method.FEATURE_SELECTION: "feature_selection",
}


@dataclass(frozen=True)
class StepSizes:
    batch: int  # sentences per step
    batches: int  # distinct batches the steps cycle through
    layers: int  # student layers (the teacher's lower ones)
    warmup: int  # untimed blocks per configuration
    repeats: int  # timed blocks per cached configuration (the median is reported)
    online_repeats: int  # timed blocks per online configuration
    block: int = 1  # steps per timed block of a cached configuration (one device synchronisation per block)
    online_block: int = 1  # steps per timed block of an online one (its teacher already synchronises)


CPU_SIZES = StepSizes(batch=32, batches=2, layers=2, warmup=2, repeats=10, online_repeats=3)
CPU_QUICK = StepSizes(batch=16, batches=1, layers=2, warmup=0, repeats=3, online_repeats=1)
# A GPU: batches as the GPU profile trains (params-gpu.yaml), the 3-layer student, blocks of 8 steps.
CUDA_SIZES = StepSizes(batch=512, batches=8, layers=3, warmup=2, repeats=8, online_repeats=2, block=8)
CUDA_QUICK = StepSizes(batch=512, batches=4, layers=3, warmup=1, repeats=4, online_repeats=1, block=8)


def sizes_for(compute: Compute, quick: bool) -> StepSizes:
    if compute.cuda:
        return CUDA_QUICK if quick else CUDA_SIZES
    return CPU_QUICK if quick else CPU_SIZES


def student_example(encoded: EncodedExample, explanation: Explanation) -> StudentExample:
    """The in-memory equivalent of a cache row read back for a student with the teacher's tokenizer."""
    n = len(encoded.input_ids)

    def host(tensor):
        return tensor.detach().float().cpu().numpy() if tensor.is_floating_point() else tensor.detach().cpu().numpy()

    extras = explanation.extras.map(lambda spec, t: host(t)[..., :n] if Axis.TOKEN in spec.axes else host(t))
    return StudentExample(
        example_id=encoded.example_id,
        label=encoded.label,
        input_ids=encoded.input_ids,
        token_type_ids=encoded.token_type_ids,
        special_mask=encoded.special_mask,
        attribution=host(explanation.attribution[:n]).astype(np.float32),
        teacher_logits=host(explanation.logits).astype(np.float32),
        extras=extras,
    )


def batches_for(
    encoded: Sequence[EncodedExample], explanations: dict[str, Explanation], batch_size: int, count: int, pad: int
) -> list[StudentBatch]:
    rows = [student_example(e, explanations[e.example_id]) for e in encoded[: batch_size * count]]
    return [collate_students(rows[i : i + batch_size], pad) for i in range(0, len(rows), batch_size)]


def explain_rows(
    explainer: Explainer, items: Sequence[EncodedExample], pad: int, batch_size: int, compute: Compute
) -> dict[str, Explanation]:
    """Each example's explanation (batch axis dropped, on the host), from length-bucketed batches on the device."""
    out = {}
    for indices in bucketed_batches(items, batch_size):
        batch = collate([items[i] for i in indices], pad).to(compute.device)
        with compute.autocast():
            explanation = explainer.explain(batch)
        host = Explanation(
            explanation.attribution.detach().float().cpu(),
            explanation.logits.detach().float().cpu(),
            explanation.extras.map(lambda _, t: t.detach().cpu()),
        )
        for row, example_id in enumerate(batch.example_ids):
            out[example_id] = Explanation(
                host.attribution[row], host.logits[row], host.extras.map(lambda _, t, row=row: t[row])
            )
    return out


def _with_explanation(batch: StudentBatch, explanation: Explanation) -> StudentBatch:
    """``batch`` with the cached fields replaced by a freshly computed teacher explanation."""
    return dataclasses.replace(
        batch, teacher_logits=explanation.logits, attribution=explanation.attribution, extras=explanation.extras
    )


@dataclass
class StepRunner:
    """One configuration (objective, cached or online) with its own student and optimizer."""

    name: str
    trainer: Trainer
    optimizer: object
    scheduler: object
    batches: Sequence[StudentBatch]  # on the host (pinned on a GPU)
    teacher: Explainer | None
    compute: Compute
    step_count: int = 0

    @property
    def batch_size(self) -> int:
        return self.batches[0].tokens.size

    def steps(self, count: int) -> tuple[float, float]:
        """Seconds of ``count`` training steps until the device has finished them, and of their teacher part."""
        compute = self.compute
        start = time.perf_counter()
        teacher_s = 0.0
        for _ in range(count):
            batch = self.batches[self.step_count % len(self.batches)]
            if compute.cuda:
                batch = to_device(batch, compute.device, non_blocking=True)
            if self.teacher is not None:
                teacher_start = time.perf_counter()
                with compute.autocast():
                    batch = _with_explanation(batch, self.teacher.explain(batch.tokens))
                compute.synchronize()
                teacher_s += time.perf_counter() - teacher_start
            self.trainer.step(batch, self.optimizer, self.scheduler, self.step_count, 0)
            self.step_count += 1
        compute.synchronize()
        return time.perf_counter() - start, teacher_s


def make_runner(
    name: str,
    student_ref: str,
    layers: int,
    method: Method | None,
    batches: Sequence[StudentBatch],
    mask_token_id: int,
    teacher: Explainer | None = None,
    compute: Compute | None = None,
    alpha: float | None = None,
) -> StepRunner:
    """A student of ``layers`` layers of ``student_ref`` on ``compute``'s device, its AdamW and its loss.

    ``alpha`` defaults to 0 for ``method`` None (plain fine-tuning) and 0.5 otherwise.
    """
    from pipeline.models import load_classifier

    compute = compute or Compute.cpu()
    torch.manual_seed(0)
    student = load_classifier(student_ref, 2, num_layers=layers).to(compute.device).train()
    params = DistillParams(
        alpha=(0.0 if method is None else 0.5) if alpha is None else alpha,
        beta=0.0 if method is None else 1.0,
        method=method or "none",
        explain_start=0.0,  # every step pays for its objective, and nothing else: no view term
        explain_start_max_steps=None,
        views=0,
        train=TrainParams(batch_size=batches[0].tokens.size),
    )
    optimizer, scheduler = optimizer_for(student, params.train, total=10_000)
    objective = make_objective(method, ObjectiveSettings(params.temperature, params.t2_scaling, mask_token_id))
    trainer = Trainer(student, params.train, list, DistillLoss(objective, params, 0), desc=name, compute=compute)
    host = [pin(b) for b in batches] if compute.cuda else list(batches)
    return StepRunner(name, trainer, optimizer, scheduler, host, teacher, compute)


def time_interleaved(
    runners: Sequence[StepRunner], warmup: int, repeats: dict[str, int], block: int = 1, online_block: int = 1
) -> dict:
    """Round-robin blocks of ``block`` steps (``online_block`` for an online runner) over the runners; per runner
    the median step of its timed blocks.

    Each runner first takes one untimed step under :func:`section_memory` (its peak RSS, and on a GPU its
    peak device memory) with its student's FLOPs counted, then ``warmup`` untimed and ``repeats[name]``
    timed blocks, interleaved.
    """
    out: dict[str, dict] = {}
    blocks = {r.name: block if r.teacher is None else online_block for r in runners}
    for runner in runners:
        compute = runner.compute
        if compute.cuda:
            torch.cuda.reset_peak_memory_stats(compute.device)
        counter = FlopCounter(FlopModel.of(runner.trainer.model), train=True)
        with section_memory() as memory, counter.attached(runner.trainer.model):
            runner.steps(1)
        if compute.cuda:
            memory["peak_device_mib"] = round(torch.cuda.max_memory_allocated(compute.device) / 2**20, 1)
        out[runner.name] = {**memory, "student_flops_per_step": counter.total, "times": [], "teacher_times": []}
    for _ in range(warmup):
        for runner in runners:
            runner.steps(blocks[runner.name])
    for round_ in range(max(repeats.values())):
        for runner in runners:
            if round_ < repeats[runner.name]:
                steps = blocks[runner.name]
                total, teacher_s = runner.steps(steps)
                out[runner.name]["times"].append(total / steps)
                out[runner.name]["teacher_times"].append(teacher_s / steps)
    for runner in runners:
        entry = out[runner.name]
        times, teacher_times = entry.pop("times"), entry.pop("teacher_times")
        step = statistics.median(times)
        entry.update(
            step_s=step,
            step_s_min=min(times),
            steps=len(times) * blocks[runner.name],
            sentences_per_s=runner.batch_size / step,
            student_flops_per_s=entry["student_flops_per_step"] / step,
        )
        if runner.teacher is not None:
            entry["teacher_s"] = statistics.median(teacher_times)
    return out


def online_explainer(method: Method, model: torch.nn.Module, params: ExplainParams, mask_token_id: int) -> Explainer:
    from pipeline.explain.base import make_explainer

    return make_explainer(method, model, params, mask_token_id)


def device_peak(compute: Compute, given_tflops: float | None = None, quick: bool = False) -> dict:
    """The matmul peak the fractions divide by: bf16 ``torch.mm`` on a GPU, fp32 on a CPU (or ``given_tflops``)."""
    if given_tflops is not None:
        return {"flops_per_s": given_tflops * 1e12, "dtype": "bf16" if compute.cuda else "fp32", "source": "given"}
    if not compute.cuda:
        measured = matmul_peak((512,) if quick else (1024, 1536, 2048), repeats=2 if quick else 5)
        return {**measured, "dtype": "fp32", "source": "measured"}
    best = 0.0
    for n in (4096, 8192):
        a = torch.randn(n, n, device=compute.device, dtype=torch.bfloat16)
        b = torch.randn(n, n, device=compute.device, dtype=torch.bfloat16)
        torch.mm(a, b)
        for _ in range(3 if quick else 5):
            compute.synchronize()
            start = time.perf_counter()
            for _ in range(10):
                torch.mm(a, b)
            compute.synchronize()
            best = max(best, 10 * 2.0 * n**3 / (time.perf_counter() - start))
        del a, b
    return {"flops_per_s": best, "dtype": "bf16", "source": "measured (torch.mm, 4096^2 and 8192^2)"}


def training_sentences(data: str, tokenizer, sizes: StepSizes, split: str = "train") -> list[EncodedExample]:
    """The first ``batch x batches`` sentences of ``split`` in a seeded random order, as a training epoch draws them
    (so each batch pads to the longest of a random draw, as in training)."""
    from pipeline.data import load_dataset
    from pipeline.encoding import encode
    from pipeline.tasks import get_task
    from pipeline.training import epoch_order

    dataset = load_dataset(data, get_task("sst2"), split, None)
    chosen = epoch_order(0, 0, len(dataset.examples))[: sizes.batch * sizes.batches]
    return encode(tokenizer, [dataset.examples[i] for i in chosen], 128)


def section(
    teacher_model: torch.nn.Module,
    tokenizer,
    encoded: Sequence[EncodedExample],
    student_ref: str,
    sizes: StepSizes,
    compute: Compute,
    peak: dict,
    explanations: dict[str, dict[str, Explanation]] | None = None,
) -> dict:
    """The stage-two results: every configuration's step, ratios, sentences/s and fraction of ``peak``.

    ``explanations`` (per stage-one case name, per example id) are used where they cover the batches;
    the rest is explained here by egkd's explainers on the device.
    """
    from benchmarks.stage_one import cases

    mask, pad = tokenizer.mask_token_id, tokenizer.pad_token_id or 0
    needed = list(encoded[: sizes.batch * sizes.batches])
    by_case = {case.name: case for case in cases(min(sizes.batch, 256))}
    given = explanations or {}
    teacher_model = teacher_model.to(compute.device).eval()
    rows: dict[str, dict[str, Explanation]] = {}
    for case_name in TEACHER_CASE.values():
        have = given.get(case_name, {})
        if all(e.example_id in have for e in needed):
            rows[case_name] = have
        else:
            case = by_case[case_name]
            explainer = online_explainer(case.method, teacher_model, case.params, mask)
            rows[case_name] = explain_rows(explainer, needed, pad, case.params.batch_size, compute)

    def batches(case_name: str) -> list[StudentBatch]:
        return batches_for(needed, rows[case_name], sizes.batch, sizes.batches, pad)

    plain_batches = batches("input_x_gradient")
    runners = [
        make_runner("plain", student_ref, sizes.layers, None, plain_batches, mask, compute=compute),
        make_runner("kd", student_ref, sizes.layers, None, plain_batches, mask, compute=compute, alpha=0.5),
    ]
    repeats = {"plain": sizes.repeats, "kd": sizes.repeats}
    for method, case_name in TEACHER_CASE.items():
        method_batches, case = batches(case_name), by_case[case_name]
        teacher = online_explainer(case.method, teacher_model, case.params, mask)
        runners += [
            make_runner(
                f"{method.value}/cached", student_ref, sizes.layers, method, method_batches, mask, None, compute
            ),
            make_runner(
                f"{method.value}/online", student_ref, sizes.layers, method, method_batches, mask, teacher, compute
            ),
        ]
        repeats.update({f"{method.value}/cached": sizes.repeats, f"{method.value}/online": sizes.online_repeats})
    timed = time_interleaved(runners, sizes.warmup, repeats, sizes.block, sizes.online_block)
    for entry in timed.values():
        entry["fraction_of_peak"] = entry["student_flops_per_s"] / peak["flops_per_s"]
    plain = timed["plain"]
    out = {
        "device": str(compute.device),
        "device_name": compute.record()["device_name"],
        "precision": compute.precision,
        "batch_size": sizes.batch,
        "student_layers": sizes.layers,
        "padded_tokens_per_batch": float(np.mean([b.tokens.input_ids.numel() for b in plain_batches])),
        "real_tokens_per_sentence": float(np.mean([len(e.input_ids) for e in needed])),
        "peak": peak,
        "plain": plain,
        "kd": {**timed["kd"], "vs_plain": timed["kd"]["step_s"] / plain["step_s"]},
        "timing": f"configurations interleaved round-robin in blocks of {sizes.block} step(s) "
        f"({sizes.online_block} online); median step",
    }
    for method, case_name in TEACHER_CASE.items():
        cached, online = timed[f"{method.value}/cached"], timed[f"{method.value}/online"]
        out[method.value] = {
            "cached": cached,
            "online": online,
            "teacher_explainer": case_name,
            "vs_plain": cached["step_s"] / plain["step_s"],
            "vs_online": cached["step_s"] / online["step_s"],
        }
    for line in report.stage_two_table(out):
        print(line, flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    return run(parse(argv))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_two", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--quick", action="store_true", help="fewer batches and repeats")
    parser.add_argument("--teacher", default="builtin:minilm-l6", help="teacher (and student base) reference")
    parser.add_argument("--data", default=DEFAULT_DATA, help="GLUE folder holding SST-2/train.tsv")
    parser.add_argument("--split", default="train", help="sentences drawn from this split, in a seeded random order")
    parser.add_argument("--batch", type=int, default=None, help="sentences per step (default: 512 on a GPU)")
    parser.add_argument("--layers", type=int, default=None, help="student layers (default: 3 on a GPU)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the peak to divide by, instead of measuring")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--out", type=Path, default=None, help="folder for <machine>-stage-two.json and .md")
    parser.add_argument("--machine", default=None, help="results file name (default: the host name)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace, sizes: StepSizes | None = None) -> dict:
    from pipeline.models import base_model_of, load_classifier, load_tokenizer

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    compute = resolve_compute(ComputeParams(args.device, args.precision))
    sizes = sizes or sizes_for(compute, args.quick)
    sizes = dataclasses.replace(sizes, batch=args.batch or sizes.batch, layers=args.layers or sizes.layers)
    info = machine_info()
    print(f"stage two on {compute.describe()}; load average {info['load_avg_1_5_15']}", flush=True)
    peak = device_peak(compute, args.peak_tflops, args.quick)
    print(f"{peak['dtype']} matmul peak {peak['flops_per_s'] / 1e12:.2f} TFLOP/s ({peak['source']})", flush=True)
    torch.manual_seed(0)
    model = load_classifier(args.teacher, 2).eval()
    tokenizer = load_tokenizer(args.teacher)
    encoded = training_sentences(args.data, tokenizer, sizes, args.split)
    results = {
        "machine": info,
        "compute": compute.record(),
        "sizes": dataclasses.asdict(sizes),
        "teacher": args.teacher,
        "data": f"sst2 {args.split}, {len(encoded)} sentences in a seeded random order (as an epoch draws them)",
        "stage_two": section(model, tokenizer, encoded, base_model_of(args.teacher), sizes, compute, peak),
    }
    results["targets"] = report.targets(results)
    results["wall_s"] = round(time.perf_counter() - started, 1)
    checks = [
        f"| {c['name']} | {c['value']:,.2f} | {c['op']} {c['target']:,} | {'yes' if c['met'] else '**no**'} |"
        for c in results["targets"]
    ]
    targets = ["| target | value | goal | met |", "|---|---:|---:|---|", *checks]
    lines = [*report.stage_two_table(results["stage_two"]), "", *targets]
    print("\n".join(lines[-len(checks) - 2 :]), flush=True)
    if args.out is not None:
        name = f"{args.machine or info['hostname']}-stage-two"
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}.json").write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
        (args.out / f"{name}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {args.out / name}.json and .md in {results['wall_s']} s", flush=True)
    return results


if __name__ == "__main__":
    main()

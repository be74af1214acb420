"""Devices and precision on a CPU: --device cpu, bf16 autocast, checkpoints moved across devices, the
prefetching loader, the batched loss log, and evaluation's token budgets (the same code paths a GPU runs)."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_tiny_model_dir, small_distill
from distill_cache import build_cache
from safetensors.torch import load_file
from typer.testing import CliRunner

from pipeline import training
from pipeline.checkpoint import last_dir
from pipeline.config import ComputeParams, EvaluateParams, TrainParams, load_params, override
from pipeline.data import load_dataset
from pipeline.device import Compute, map_tensors, resolve_compute, to_device
from pipeline.distill.job import DistillRequest, distill
from pipeline.encoding import bucketed_batches, encode
from pipeline.errors import EgkdError
from pipeline.evaluate.metrics import compute_metrics, predictions_from_logits
from pipeline.evaluate.predict import predict_logits, token_batches
from pipeline.methods import Method
from pipeline.models import load_classifier, load_tokenizer
from pipeline.tasks import get_task
from stages.cli import app

FAST = small_distill()
CPU = ComputeParams(device="cpu")
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the messages of a machine without CUDA")


@pytest.fixture(scope="module")
def cache(tmp_path_factory, glue_dir) -> Path:
    root = tmp_path_factory.mktemp("device")
    teacher = make_tiny_model_dir(root / "teacher", seed=0)
    make_tiny_model_dir(root / "base", seed=1)
    build_cache(root / "cache", teacher, root / "base", glue_dir)
    shutil.rmtree(teacher)
    return root / "cache"


def run(cache: Path, out: Path, compute: ComputeParams = CPU, resume: bool = False, **changes):
    params = dataclasses.replace(FAST, **changes)
    return distill(
        DistillRequest(cache=cache, out=out, params=params, evaluate=EvaluateParams(), resume=resume, compute=compute)
    )


def log_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


# --- resolving --device and --precision --------------------------------------------------------------


def test_cpu_resolves_to_fp32_and_bf16_only_when_asked():
    assert resolve_compute(CPU) == Compute(torch.device("cpu"), False)
    assert resolve_compute(ComputeParams("cpu", "bf16")) == Compute(torch.device("cpu"), True)
    assert resolve_compute(ComputeParams("cpu", "fp32")).precision == "fp32"
    if not torch.cuda.is_available():
        assert resolve_compute(ComputeParams()) == Compute(torch.device("cpu"), False)  # auto on a CPU machine


@NO_CUDA
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_a_gpu_is_one_line(device):
    with pytest.raises(EgkdError, match=f"device {device}: torch sees no CUDA GPU here; use --device cpu or auto"):
        resolve_compute(ComputeParams(device))


def test_bad_device_and_precision_name_the_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("compute:\n  device: gpu0\n", encoding="utf-8")
    with pytest.raises(EgkdError, match="compute.device must be auto, cpu, cuda or cuda:N, got 'gpu0'"):
        load_params(path)
    path.write_text("compute:\n  precision: fp16\n", encoding="utf-8")
    with pytest.raises(EgkdError, match="'compute.precision' must be one of \\['auto', 'fp32', 'bf16'\\]"):
        load_params(path)
    with pytest.raises(EgkdError, match="option 'precision' must be one of"):
        override(ComputeParams(), precision="half")
    assert load_params(None).compute == ComputeParams("auto", "auto")


def test_batches_move_and_come_back_whole(cache):
    from pipeline.cache.project import collate_students, to_student_examples
    from pipeline.cache.store import read_cache

    _, rows = read_cache(cache, "perturbation", "train")
    batch = collate_students(to_student_examples(rows[:4]), 0)
    moved = to_device(batch, torch.device("cpu"))
    assert type(moved) is type(batch) and moved.tokens.example_ids == batch.tokens.example_ids
    assert torch.equal(moved.extras.items[0].masks, batch.extras.items[0].masks)
    doubled = map_tensors({"a": (torch.ones(2), [torch.zeros(1)])}, lambda t: t + 1)
    assert doubled["a"][0].tolist() == [2.0, 2.0] and doubled["a"][1][0].tolist() == [1.0]


# --- the command line records the device ---------------------------------------------------------------


def test_cli_distill_device_cpu_is_recorded(cache, tmp_path):
    out = tmp_path / "s"
    args = ["distill", "--cache", str(cache), "--out", str(out), "--method", "gradient", "--epochs", "1"]
    # the fixture's teacher is gone (stage two needs only the cache): the student starts from the base model's
    # first layer (the tiny base has 2; params.yaml's students have 3)
    result = CliRunner().invoke(
        app, [*args, "--student", "base", "--layers", "1", "--device", "cpu", "--precision", "fp32"]
    )
    assert result.exit_code == 0, result.output
    assert "steps on cpu, fp32" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["compute"] == {"device": "cpu", "device_name": "cpu", "precision": "fp32"}
    assert "- trained on: cpu, fp32\n" in (out / "README.md").read_text()


@NO_CUDA
def test_cli_device_cuda_without_a_gpu_exits_2(cache, tmp_path, glue_dir, tiny_model_dir):
    commands = [
        ["distill", "--cache", str(cache), "--out", str(tmp_path / "s")],
        ["finetune", "--data", str(glue_dir), "--out", str(tmp_path / "t"), "--model", str(tiny_model_dir)],
        ["evaluate", "--data", str(glue_dir), "--model", str(tiny_model_dir)],
    ]
    for command in commands:
        result = CliRunner().invoke(app, [*command, "--device", "cuda:0"])
        assert result.exit_code == 2, result.output
        assert result.output.strip() == "error: device cuda:0: torch sees no CUDA GPU here; use --device cpu or auto"


def test_cli_finetune_and_evaluate_record_the_device(glue_dir, tiny_model_dir, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "data: {train_limit: 16, dev_limit: 8, max_length: 32}\n"
        "finetune: {train: {epochs: 1, batch_size: 8}}\n"
        "compute: {device: cpu}\n",
        encoding="utf-8",
    )
    teacher = tmp_path / "teacher"
    result = CliRunner().invoke(
        app,
        ["finetune", "--data", str(glue_dir), "--out", str(teacher), "--model", str(tiny_model_dir)]
        + ["--params", str(params), "--precision", "bf16"],
    )
    assert result.exit_code == 0, result.output
    assert "on cpu (bf16)" in result.output
    assert json.loads((teacher / "metrics.json").read_text())["compute"]["precision"] == "bf16"
    report = tmp_path / "eval.json"
    result = CliRunner().invoke(
        app,
        ["evaluate", "--data", str(glue_dir), "--model", str(teacher), "--out", str(report), "--params", str(params)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["compute"] == {"device": "cpu", "device_name": "cpu", "precision": "fp32"}


# --- bf16 autocast on a CPU ----------------------------------------------------------------------------

# bf16 keeps 8 bits of mantissa (a relative rounding error of 2^-9 = 0.2% per product). Measured on the tiny
# student over 4 steps: the logged loss terms differ from fp32's by at most 0.2% (tolerance: 2%, or 1e-3
# absolute for terms near zero); the weights differ by 1% of the fp32 run's own update on average (tolerance:
# 5%). A few weights whose gradient is near zero take AdamW steps of opposite sign (AdamW moves each weight by
# about lr per step whatever the gradient's size), so single weights may differ by up to 2 x lr x steps.
BF16_LOSS_RTOL, BF16_LOSS_ATOL, BF16_MEAN_UPDATE_SHARE = 2e-2, 1e-3, 5e-2


@pytest.mark.parametrize("method", [m.value for m in Method] + ["none"])
def test_bf16_autocast_on_cpu_is_finite_and_close_to_fp32(cache, tmp_path, method):
    four_steps = dataclasses.replace(FAST.train, epochs=1, batch_size=6)  # 24 rows: 4 steps
    fp32 = run(cache, tmp_path / "fp32", method=method, train=four_steps)
    bf16 = run(cache, tmp_path / "bf16", ComputeParams("cpu", "bf16"), method=method, train=four_steps)
    assert bf16.compute.bf16 and not fp32.compute.bf16 and bf16.training.steps == 4
    for low, full in zip(log_of(tmp_path / "bf16"), log_of(tmp_path / "fp32"), strict=True):
        for term in ("loss", "ce", "kd", "explain"):
            if full[term] is None:
                assert low[term] is None
                continue
            assert math.isfinite(low[term]), (term, low)
            assert low[term] == pytest.approx(full[term], rel=BF16_LOSS_RTOL, abs=BF16_LOSS_ATOL), (term, low, full)
    low_w = load_file(tmp_path / "bf16" / "model.safetensors")
    full_w = load_file(tmp_path / "fp32" / "model.safetensors")
    start = load_file(cache.parent / "base" / "model.safetensors")  # the student's initial encoder weights
    assert all(w.dtype == torch.float32 for w in low_w.values())  # the master weights stay fp32
    shared = [k for k in full_w if k in start]
    difference = torch.cat([(low_w[k] - full_w[k]).abs().flatten() for k in full_w])
    update = torch.cat([(full_w[k] - start[k]).abs().flatten() for k in shared])
    assert 0 < difference.mean() < BF16_MEAN_UPDATE_SHARE * update.mean()  # bf16 did run, and stayed close
    assert difference.max() <= 2 * four_steps.lr * 4


# --- checkpoints across devices ------------------------------------------------------------------------


def test_checkpoint_saved_on_another_device_loads_with_map_location(cache, tmp_path, monkeypatch):
    """A checkpoint whose tensors are tagged as saved on a GPU (torch.save records each storage's device)
    resumes on this CPU to exactly the weights and log of an uninterrupted run."""
    run(cache, tmp_path / "full", method="perturbation")
    original = training.Trainer.step

    def crash_at_step_4(self, batch, optimizer, scheduler, step, epoch):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, batch, optimizer, scheduler, step, epoch)

    monkeypatch.setattr(training.Trainer, "step", crash_at_step_4)
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:1")  # "saved on cuda:1"
    with pytest.raises(KeyboardInterrupt):
        run(cache, tmp_path / "moved", method="perturbation")
    monkeypatch.undo()
    state = last_dir(tmp_path / "moved") / "state.pt"
    if not torch.cuda.is_available():  # the file really names a GPU: without map_location it does not load here
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(state, weights_only=True)  # noqa: TID251
    saved = torch.load(state, map_location="cpu", weights_only=True)  # noqa: TID251
    assert saved["device"] == "cpu" and saved["step"] == 2
    report = run(cache, tmp_path / "moved", resume=True, method="perturbation")
    assert report.training.resumed_from == 2 and report.training.resumed_on == "cpu"
    first, second = (
        load_file(tmp_path / "full" / "model.safetensors"),
        load_file(tmp_path / "moved" / "model.safetensors"),
    )
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (tmp_path / "full" / "train_log.jsonl").read_text() == (tmp_path / "moved" / "train_log.jsonl").read_text()
    assert "resumed from the checkpoint at step 2 saved on cpu" in (tmp_path / "moved" / "README.md").read_text()


# --- the loader and the log ----------------------------------------------------------------------------


def test_prefetching_and_batched_log_copies_change_nothing(cache, tmp_path, monkeypatch):
    run(cache, tmp_path / "inline", method="feature_selection")
    monkeypatch.setattr(training, "SYNC_EVERY", 3)  # host copies after steps 3, 4 (a checkpoint) and 6 (the end)
    original = training.Trainer.__init__

    def with_prefetch(self, *args, **kwargs):
        original(self, *args, **{**kwargs, "prefetch": 3})

    monkeypatch.setattr(training.Trainer, "__init__", with_prefetch)
    run(cache, tmp_path / "prefetched", method="feature_selection", checkpoint_every=4)
    first = load_file(tmp_path / "inline" / "model.safetensors")
    second = load_file(tmp_path / "prefetched" / "model.safetensors")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert (tmp_path / "inline" / "train_log.jsonl").read_text() == (
        tmp_path / "prefetched" / "train_log.jsonl"
    ).read_text()


def test_prefetched_yields_every_step_in_order_and_surfaces_errors():
    with training.prefetched(lambda step: step * 10, range(3, 9), depth=2) as batches:
        assert list(batches) == [30, 40, 50, 60, 70, 80]

    def broken(step):
        if step == 2:
            raise ValueError("bad row")
        return step

    with pytest.raises(ValueError, match="bad row"), training.prefetched(broken, range(5), depth=3) as batches:
        list(batches)


def test_non_finite_loss_names_its_step_after_logging_the_steps_before(tmp_path):
    model = torch.nn.Linear(2, 1)

    def loss(model, batch, step):
        value = model(batch).mean() * (float("nan") if step == 2 else 1.0)
        return training.Losses(total=value, ce=value)

    trainer = training.Trainer(
        model, TrainParams(epochs=1, batch_size=1, min_steps=0), lambda items: torch.stack(items), loss
    )
    with pytest.raises(EgkdError, match=r"^the loss became nan at step 3 \(ce nan\); try a lower lr$"):
        trainer.run([torch.ones(2)] * 6, tmp_path)
    assert [r["step"] for r in log_of(tmp_path)] == [1, 2]


# --- evaluation's token budgets ----------------------------------------------------------------------


def test_token_batches_respect_both_budgets():
    lengths = [5, 9, 3, 9, 12, 1, 7]
    batches = list(token_batches(lengths, batch_size=3, batch_tokens=20))
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert batches == [[4], [1, 3], [6, 0], [2, 5]]  # 2 x 12 > 20, 3 x 9 > 20, 3 x 7 > 20: cut by tokens
    for batch in batches:
        assert len(batch) <= 3 and (len(batch) == 1 or len(batch) * lengths[batch[0]] <= 20)
    plain = [list(b) for b in token_batches(lengths, batch_size=3)]
    assert plain == [[4, 1, 3], [6, 0, 2], [5]]


def test_token_batches_without_a_binding_budget_are_the_old_batches(glue_dir, tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    items = encode(tokenizer, load_dataset(glue_dir, get_task("sst2"), "dev", 100).examples, 128)
    old = list(bucketed_batches(items, 16))
    assert list(token_batches([len(i.input_ids) for i in items], 16, 16 * 128)) == old


@pytest.mark.parametrize("batch_size, batch_tokens", [(64, 64 * 128), (7, 10_000), (1000, 300), (1000, 60), (1, 1)])
def test_token_budgets_give_the_metrics_of_fixed_batches(glue_dir, tiny_model_dir, batch_size, batch_tokens):
    task = get_task("sst2")
    model = load_classifier(str(tiny_model_dir), 2)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    items = encode(tokenizer, load_dataset(glue_dir, task, "dev", 200).examples, 128)
    labels = np.asarray([i.label for i in items])
    before = predict_logits(model, items, tokenizer.pad_token_id, 64)  # the batches evaluate used so far
    now = predict_logits(model, items, tokenizer.pad_token_id, batch_size, batch_tokens, Compute.cpu())
    np.testing.assert_allclose(now, before, rtol=1e-5, atol=1e-6)
    assert compute_metrics(task, predictions_from_logits(task, now), labels) == compute_metrics(
        task, predictions_from_logits(task, before), labels
    )


# --- weights are fp32 whatever the checkpoint's dtype --------------------------------------------------


def test_an_fp16_checkpoint_loads_as_fp32_master_weights(tiny_model_dir, tmp_path):
    half = tmp_path / "half"
    model = load_classifier(str(tiny_model_dir), 2)
    model.half().save_pretrained(half, safe_serialization=True)
    load_tokenizer(str(tiny_model_dir)).save_pretrained(half)
    assert {t.dtype for t in load_file(half / "model.safetensors").values()} == {torch.float16}
    loaded = load_classifier(str(half), 2)
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    reference = load_classifier(str(tiny_model_dir), 2).state_dict()
    for name, tensor in loaded.state_dict().items():
        torch.testing.assert_close(tensor, reference[name].half().float(), rtol=0, atol=0)
    student = load_classifier(str(half), 2, num_layers=1)
    assert {p.dtype for p in student.parameters()} == {torch.float32}


# --- collating a large batch -------------------------------------------------------------------------


def test_vectorised_collate_pads_exactly_as_row_by_row(cache):
    from pipeline.cache.project import collate_students, to_student_examples
    from pipeline.cache.store import read_cache

    _, rows = read_cache(cache, "perturbation", "train")
    examples = to_student_examples(rows)
    batch = collate_students(examples, pad_token_id=7)
    length = max(len(e.input_ids) for e in examples)
    assert batch.tokens.input_ids.shape == (len(examples), length)
    for b, e in enumerate(examples):
        n = len(e.input_ids)
        assert batch.tokens.input_ids[b].tolist() == e.input_ids.tolist() + [7] * (length - n)
        assert batch.tokens.attention_mask[b].tolist() == [1] * n + [0] * (length - n)
        assert batch.tokens.token_type_ids[b].tolist() == e.token_type_ids.tolist() + [0] * (length - n)
        assert batch.tokens.special_mask[b].tolist() == e.special_mask.tolist() + [True] * (length - n)
        assert batch.attribution[b].tolist() == e.attribution.tolist() + [0.0] * (length - n)
        views = batch.extras.items[0]
        assert torch.equal(views.masks[b, :, :n], torch.from_numpy(e.extras.items[0].masks))
        assert not views.masks[b, :, n:].any()
    assert batch.tokens.input_ids.dtype == torch.long and batch.tokens.special_mask.dtype == torch.bool
    assert batch.attribution.dtype == torch.float32


def test_keep_freed_memory_keeps_a_large_freed_block_in_the_heap():
    """Without it glibc unmaps a freed 64 MiB block at once; with it the block stays free in the heap for reuse."""
    from pipeline.host_memory import heap_usage, keep_freed_memory

    if heap_usage() is None:
        pytest.skip("not glibc 2.33 or later: the allocator is left as it is")
    assert keep_freed_memory() and keep_freed_memory()  # once per process; asking again is harmless
    size = 64 * 2**20
    before = heap_usage()
    block = torch.ones(size, dtype=torch.uint8)
    held = heap_usage()
    assert before is not None and held is not None
    assert held.mapped - before.mapped < size  # served from the heap, not from a mapping of its own
    del block
    after = heap_usage()
    assert after is not None and after.free - held.free >= size


def test_cpu_training_keeps_freed_memory(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(training, "keep_freed_memory", lambda: calls.append(True) or True)
    model = torch.nn.Linear(2, 2)
    trainer = training.Trainer(
        model,
        TrainParams(epochs=1, batch_size=2, lr=0.1, seed=0, min_steps=0),
        lambda items: torch.tensor(items, dtype=torch.float32),
        lambda m, batch, step: training.Losses(m(batch).pow(2).mean(), m(batch).pow(2).mean()),
    )
    trainer.run([[1.0, 2.0], [3.0, 4.0]], tmp_path)
    assert calls == [True]


@pytest.mark.parametrize("scale", [1e-3, 10.0])  # a global norm below max_norm, and one above it
def test_clip_gradients_ends_as_torch_clips_and_skips_only_a_multiplication_by_one(scale):
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(shape)) for shape in [(30, 4), (4,), (3, 3)]]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    for mine, reference in zip(ours, theirs, strict=True):
        mine.grad = torch.randn(mine.shape) * scale
        reference.grad = mine.grad.clone()
    versions = [p.grad._version for p in ours]
    training.clip_gradients(ours, 1.0)
    torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    for mine, reference in zip(ours, theirs, strict=True):
        assert torch.equal(mine.grad, reference.grad)
    touched = [p.grad._version != v for p, v in zip(ours, versions, strict=True)]
    assert touched == [scale > 1] * 3  # scaled in place only where the norm was over 1
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in ours]))
    assert float(total) <= 1.0 + 1e-5


def test_clip_gradients_without_gradients_does_nothing():
    parameter = torch.nn.Parameter(torch.ones(3))
    training.clip_gradients([parameter], 1.0)
    assert parameter.grad is None

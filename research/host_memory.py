"""CPU training steps with and without keeping freed host memory (:mod:`pipeline.host_memory`).

Each setting runs in its own process (the allocator setting lasts a process's lifetime): a randomly
initialised BERT classifier of the medium profile's student shape (30,522-token vocabulary, hidden 384, two
layers), ``--steps`` AdamW steps of the training loop's own step (:meth:`pipeline.training.Trainer.step`: the
loss, backward, clipping at norm 1, AdamW, scheduler) on the same seeded batches of 8 sentences of 24 tokens.
It prints each setting's wall time, its CPU time in user and kernel mode, its peak resident memory, and how
far the two final weight sets differ (0: the setting changes only the allocator's bookkeeping).

Run: ``python -m research.host_memory [--steps 250] [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def child(keep: bool, steps: int, out: Path) -> None:
    """One process's run: build, train ``steps`` steps, save the weights, print its own figures as JSON."""
    from safetensors.torch import save_model
    from transformers import BertConfig, BertForSequenceClassification

    from pipeline.config import TrainParams
    from pipeline.host_memory import keep_freed_memory
    from pipeline.training import Losses, Trainer, optimizer_for

    if keep:
        keep_freed_memory()
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=2, num_attention_heads=12, intermediate_size=1536
    )
    model = BertForSequenceClassification(config).train()
    params = TrainParams(batch_size=8, lr=2e-4, seed=0)
    optimizer, scheduler = optimizer_for(model, params, steps)
    generator = torch.Generator().manual_seed(1)
    batches = [
        (torch.randint(1000, 30000, (8, 24), generator=generator), torch.randint(0, 2, (8,), generator=generator))
        for _ in range(steps)
    ]

    def loss(model: torch.nn.Module, batch, step: int) -> Losses:
        ce = torch.nn.functional.cross_entropy(model(input_ids=batch[0]).logits, batch[1])
        return Losses(ce, ce, None, None, None)

    trainer = Trainer(model, params, lambda items: items, loss)
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        trainer.step(batch, optimizer, scheduler, step, 0)
    wall = time.perf_counter() - start
    save_model(model, str(out))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps({"wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime, "maxrss_mb": usage.ru_maxrss / 1024})
    )


def run(keep: bool, steps: int, out: Path) -> dict[str, float]:
    command = [sys.executable, "-m", "research.host_memory", "--child", "keep" if keep else "release"]
    command += ["--steps", str(steps), "--weights", str(out)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each setting, alternated")
    parser.add_argument("--child", choices=["keep", "release"], help=argparse.SUPPRESS)
    parser.add_argument("--weights", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child == "keep", args.steps, args.weights)
        return
    from safetensors.torch import load_file

    print(
        f"{args.steps} training steps, batch 8 x 24 tokens, student shape (2 layers, hidden 384), torch threads "
        f"{torch.get_num_threads()}"
    )
    print("| setting | wall (s) | user CPU (s) | kernel CPU (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for keep in (False, True):
                path = Path(tmp) / f"{'keep' if keep else 'release'}-{repeat}.safetensors"
                r = run(keep, args.steps, path)
                name = "keep freed memory" if keep else "glibc default"
                print(f"| {name} | {r['wall']:.1f} | {r['user']:.1f} | {r['sys']:.1f} | {r['maxrss_mb']:.0f} |")
        first, second = load_file(Path(tmp) / "release-0.safetensors"), load_file(Path(tmp) / "keep-0.safetensors")
        difference = max(float((first[k] - second[k]).abs().max()) for k in first)
    print(f"largest difference between the two settings' final weights: {difference}")


if __name__ == "__main__":
    main()

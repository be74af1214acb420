"""Stage one's cost against input length: seconds per example for every family at 64 to 512 tokens.

User data runs longer than SST-2's dozen tokens: reviews, tickets and documents of 256-512. Occlusion costs one
forward of the whole input per token, so it grows with the square of the length; with a window and stride of w
(``explain.perturbation.window``/``stride``) an input of n tokens costs n / w forwards instead of n. The other
families cost a fixed number of passes per example (gradient x input: one forward and one backward; feature
selection: ``samples`` forwards), so they grow with the length (and attention's square).

Each example is one batch, as ``egkd explain`` forms for long inputs; the explainer chunks its copies by the
token budget as stage one does. The model is the packaged MiniLM-L6 (its weights do not change the time); inputs
are synthetic sentences of exactly ``length`` tokens. No views are cached (``explain.views.count`` 0): the time is
the map's.

    python -m benchmarks.lengths                       # 64, 128, 256, 512 tokens; a few minutes on 2 cores
    python -m benchmarks.lengths --lengths 64 128 --examples 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from pipeline.config import ExplainParams, PerturbationParams, ViewParams
from pipeline.data import Example
from pipeline.encoding import collate, encode
from pipeline.explain.base import make_explainer
from pipeline.methods import Method
from pipeline.models import load_classifier, load_tokenizer

WORDS = "the film was not good but the acting and the story kept me watching until the very end".split()
MODEL = "builtin:minilm-l6"


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    method: Method
    params: ExplainParams


def cases() -> list[Case]:
    base = ExplainParams(views=ViewParams(count=0))
    occlusion = dataclasses.replace(base.perturbation, variant="occlusion")
    return [
        Case("gradient (input x gradient)", Method.GRADIENT, base),
        Case("perturbation (occlusion)", Method.PERTURBATION, dataclasses.replace(base, perturbation=occlusion)),
        Case(
            "perturbation (occlusion, window 8, stride 8)",
            Method.PERTURBATION,
            dataclasses.replace(base, perturbation=PerturbationParams(window=8, stride=8)),
        ),
        Case("feature_selection", Method.FEATURE_SELECTION, base),
    ]


def examples(tokenizer, length: int, count: int) -> list:
    """``count`` synthetic sentences of exactly ``length`` tokens, specials included."""
    words = [WORDS[(i * 7) % len(WORDS)] for i in range(4 * length)]
    rows = [Example(f"x-{i}", "train", " ".join(words[i:] + words[:i]), None, 0) for i in range(count)]
    encoded = encode(tokenizer, rows, length)
    assert all(len(e.input_ids) == length for e in encoded), "the synthetic sentences are shorter than the length"
    return encoded


def seconds_per_example(model, tokenizer, case: Case, length: int, count: int) -> float:
    explainer = make_explainer(case.method, model, case.params, tokenizer.mask_token_id)
    items = examples(tokenizer, length, count + 1)
    explainer.explain(collate(items[:1], tokenizer.pad_token_id))  # warm-up: allocations, kernels
    times = []
    for item in items[1:]:
        start = time.perf_counter()
        explainer.explain(collate([item], tokenizer.pad_token_id))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--examples", type=int, default=2, help="timed examples per case and length (median)")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_classifier(MODEL, 2).eval()
    tokenizer = load_tokenizer(MODEL)
    results: dict[str, dict[int, float]] = {}
    for case in cases():
        for length in args.lengths:
            # per-token occlusion of 512 tokens is 512 forwards of 512 tokens: one example is enough to time it
            count = 1 if case.name == "perturbation (occlusion)" and length >= 512 else args.examples
            seconds = seconds_per_example(model, tokenizer, case, length, count)
            results.setdefault(case.name, {})[length] = seconds
            print(f"{case.name:46s} {length:4d} tokens: {seconds:8.3f} s per example", flush=True)
    print()
    print("| family | " + " | ".join(f"{n} tokens" for n in args.lengths) + " |")
    print("|---|" + "---:|" * len(args.lengths))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{row[n]:.3f} s" for n in args.lengths) + " |")
    windowed, per_token = results["perturbation (occlusion, window 8, stride 8)"], results["perturbation (occlusion)"]
    if 512 in windowed and 128 in per_token:
        print(
            f"\nocclusion at 512 tokens with window 8 / per-token occlusion at 128 tokens, per example: "
            f"{windowed[512] / per_token[128]:.2f}x (the arithmetic ratio is 2x)"
        )
    if args.out is not None:
        args.out.write_text(json.dumps({"threads": torch.get_num_threads(), "seconds": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

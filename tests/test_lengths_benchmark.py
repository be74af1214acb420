"""benchmarks/lengths.py runs every family at a given length on a tiny model (the figures are the script's job)."""

from __future__ import annotations

from benchmarks.lengths import cases, examples, seconds_per_example
from pipeline.explain import REGISTRY
from pipeline.models import load_classifier, load_tokenizer


def test_every_family_is_timed_on_inputs_of_exactly_the_length(tiny_model_dir):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    model = load_classifier(str(tiny_model_dir), 2).eval()
    assert {case.method for case in cases()} == set(REGISTRY)
    assert [len(e.input_ids) for e in examples(tokenizer, 24, 3)] == [24, 24, 24]
    for case in cases():
        assert seconds_per_example(model, tokenizer, case, 24, 1) > 0

"""``egkd mix``: new examples spliced from two cached ones, windows chosen by the teacher's maps or at random."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from distill_cache import tiny_cache
from typer.testing import CliRunner

from pipeline.cache import CachedExample, read_cache
from pipeline.config import MixKind
from pipeline.errors import EgkdError
from pipeline.explain.mix import MixRequest, choose_windows, mix_rows, run_mix, splice, words
from pipeline.methods import Method
from stages.cli import app


def row(example_id: str, text: str, tokens: list[tuple[int, int, float]], text_b: str | None = None) -> CachedExample:
    """A hand-made row: ``[CLS]``, the ``(start, end, score)`` tokens of the mixed segment, ``[SEP]``.

    In a pair row (``text_b`` given) the tokens are the second text's, after one token of the first.
    """
    first = [] if text_b is None else [(0, len(text), 0.0)]
    segments = [-1] + [0] * len(first) + [0 if text_b is None else 1] * len(tokens) + [-1]
    spans = [(0, 0)] + [(s, e) for s, e, _ in first + tokens] + [(0, 0)]
    scores = [0.0] + [x for _, _, x in first + tokens] + [0.0]
    n = len(segments)
    return CachedExample(
        example_id=example_id,
        split="train",
        label=1,
        text_a=text,
        text_b=text_b,
        input_ids=np.arange(n, dtype=np.int32),
        token_type_ids=np.zeros(n, np.int8),
        segments=np.asarray(segments, np.int8),
        special_mask=np.asarray([s == -1 for s in segments]),
        offsets=np.asarray(spans, np.int32),
        attribution=np.asarray(scores, np.float32),
        teacher_logits=np.zeros(2, np.float32),
    )


# "an un ##believ ##able film , really": word pieces and glued punctuation join their word.
FILM = row(
    "train-0",
    "an unbelievable film, really",
    [(0, 2, 0.5), (3, 5, -0.25), (5, 11, 1.0), (11, 15, 0.5), (16, 20, 0.125), (20, 21, -2.0), (22, 28, 0.75)],
)
# "dull and lifeless but brave"
DULL = row(
    "train-1", "dull and lifeless but brave", [(0, 4, 2.0), (5, 8, 0.0), (9, 17, 1.5), (18, 21, -0.5), (22, 27, -1.0)]
)


def test_words_join_word_pieces_and_glued_punctuation_and_sum_the_map():
    w = words(FILM, 0)
    assert w.spans.tolist() == [[0, 2], [3, 15], [16, 21], [22, 28]]
    assert [w.text[s:e] for s, e in w.spans] == ["an", "unbelievable", "film,", "really"]
    assert w.signed.tolist() == [0.5, 1.25, -1.875, 0.75]
    assert w.magnitude.tolist() == [0.5, 1.75, 2.125, 0.75]


def test_salient_windows_replace_the_least_important_words_by_the_donors_most_supportive_ones():
    recipient, donor = words(FILM, 0), words(DULL, 0)
    # span 0.5 of 4 words: windows of 2. Recipient magnitudes by window: 2.25, 3.875, 2.875 -> words 0-1.
    # Donor signed sums by window: 2.0, 1.5, 1.0, -1.5 -> words 0-1 ("dull and").
    replaced, inserted = choose_windows(recipient, donor, 0.5, MixKind.SALIENT, np.random.default_rng(0))
    assert (replaced, inserted) == ((0, 2), (0, 2))
    assert splice(recipient, donor, replaced, inserted) == "dull and film, really"
    # span 0.25: one word. Least important recipient word: "an" (0.5); the donor's most supportive: "dull" (2.0).
    replaced, inserted = choose_windows(recipient, donor, 0.25, MixKind.SALIENT, np.random.default_rng(0))
    assert (replaced, inserted) == ((0, 1), (0, 1))
    # The other way round: the donor FILM's most supportive word is "unbelievable" (1.25); DULL's least
    # important one is "and" (0.0).
    replaced, inserted = choose_windows(donor, recipient, 0.2, MixKind.SALIENT, np.random.default_rng(0))
    assert (replaced, inserted) == ((1, 2), (1, 2))
    assert splice(donor, recipient, replaced, inserted) == "dull unbelievable lifeless but brave"


def test_a_window_is_never_longer_than_either_text():
    short = row("train-2", "fine", [(0, 4, 1.0)])
    replaced, inserted = choose_windows(words(FILM, 0), words(short, 0), 1.0, MixKind.SALIENT, np.random.default_rng(0))
    assert (replaced, inserted) == ((0, 1), (0, 1))
    replaced, inserted = choose_windows(words(short, 0), words(FILM, 0), 0.1, MixKind.RANDOM, np.random.default_rng(3))
    assert replaced == (0, 1) and inserted[1] - inserted[0] == 1


def test_random_windows_cover_every_position_and_depend_on_the_generator_alone():
    recipient, donor = words(FILM, 0), words(DULL, 0)
    draws = [choose_windows(recipient, donor, 0.25, MixKind.RANDOM, np.random.default_rng(i)) for i in range(200)]
    assert {r for r, _ in draws} == {(i, i + 1) for i in range(4)}
    assert {d for _, d in draws} == {(i, i + 1) for i in range(5)}
    again = [choose_windows(recipient, donor, 0.25, MixKind.RANDOM, np.random.default_rng(i)) for i in range(200)]
    assert draws == again


def sentences(count: int) -> list[CachedExample]:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        text = " ".join(f"w{i}x{j}" for j in range(3 + i % 5))
        starts = [m for m in range(len(text)) if m == 0 or text[m - 1] == " "]
        tokens = [(s, text.index(" ", s) if " " in text[s:] else len(text), float(rng.normal())) for s in starts]
        rows.append(row(f"train-{i}", text, tokens))
    return rows


def test_mixes_cycle_through_recipients_and_share_their_donors_across_kinds():
    rows = sentences(7)
    salient = mix_rows(rows, 20, 0.4, MixKind.SALIENT, seed=3)
    random = mix_rows(rows, 20, 0.4, MixKind.RANDOM, seed=3)
    assert [m.recipient for m in salient] == [f"train-{i % 7}" for i in range(20)]
    assert [(m.recipient, m.donor) for m in salient] == [(m.recipient, m.donor) for m in random]
    assert all(m.donor != m.recipient for m in salient)
    assert {m.donor for m in salient} == {r.example_id for r in rows}
    assert mix_rows(rows, 8, 0.4, MixKind.RANDOM, seed=3) == random[:8]  # a longer file starts with a shorter one
    assert [m.donor for m in mix_rows(rows, 20, 0.4, MixKind.SALIENT, seed=4)] != [m.donor for m in salient]
    for m in salient:  # each new text is the recipient's words with one window swapped for the donor's
        recipient = rows[int(m.recipient.split("-")[1])].text_a.split()
        donor = rows[int(m.donor.split("-")[1])].text_a.split()
        (a, b), (c, d) = m.replaced, m.inserted
        assert m.text_a.split() == recipient[:a] + donor[c:d] + recipient[b:]
        assert b - a == d - c == min(max(1, round(0.4 * len(recipient))), len(donor))
        assert m.text_b is None and m.line() == m.text_a


@pytest.mark.parametrize("kind", list(MixKind), ids=lambda k: k.value)
def test_salient_windows_are_the_best_of_every_window_and_random_ones_are_not_always(kind):
    rows = sentences(9)
    by_id = {r.example_id: words(r, 0) for r in rows}
    best = 0
    for m in mix_rows(rows, 40, 0.4, kind, seed=0):
        recipient, donor = by_id[m.recipient], by_id[m.donor]
        length = m.replaced[1] - m.replaced[0]
        low = min(recipient.magnitude[i : i + length].sum() for i in range(len(recipient) - length + 1))
        high = max(donor.signed[i : i + length].sum() for i in range(len(donor) - length + 1))
        start_r, start_d = m.replaced[0], m.inserted[0]
        best += np.isclose(recipient.magnitude[start_r : start_r + length].sum(), low) and np.isclose(
            donor.signed[start_d : start_d + length].sum(), high
        )
    assert best == 40 if kind is MixKind.SALIENT else best < 30


def test_a_pair_task_keeps_the_first_text_and_mixes_the_second():
    first = row("train-0", "what is it ?", [(0, 5, 0.5), (6, 9, 1.0)], text_b="great fun")
    second = row("train-1", "who made it ?", [(0, 1, -1.0), (2, 6, 3.0), (7, 11, 0.5)], text_b="a weak plot")
    (mix,) = mix_rows([first, second], 1, 0.5, MixKind.SALIENT, seed=0)
    assert (mix.recipient, mix.donor, mix.replaced, mix.inserted) == ("train-0", "train-1", (0, 1), (1, 2))
    assert (mix.text_a, mix.text_b) == ("what is it ?", "weak fun")
    assert mix.line() == "what is it ?\tweak fun"


@pytest.mark.parametrize(
    ("rows", "count", "span", "message"),
    [
        ([FILM, DULL], 2, 0.0, r"explain.mix.span must be in \(0, 1\], got 0.0"),
        ([FILM, DULL], 0, 0.3, "explain.mix.count must be at least 1, got 0"),
        ([FILM], 2, 0.3, "mixing needs at least two cached examples with words, found 1"),
    ],
)
def test_bad_mixing_parameters_are_refused(rows, count, span, message):
    with pytest.raises(EgkdError, match=message):
        mix_rows(rows, count, span, MixKind.SALIENT, seed=0)


# --- the command ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache(tmp_path_factory, glue_dir) -> Path:
    return tiny_cache(tmp_path_factory.mktemp("mix"), glue_dir)


@pytest.mark.parametrize("method", list(Method), ids=lambda m: m.value)
def test_run_mix_writes_one_line_per_example_from_any_familys_maps(cache, tmp_path, method):
    request = MixRequest(cache, tmp_path / "mix.txt", method.value, MixKind.SALIENT, None, 0.3, seed=0)
    report = run_mix(request)
    _, rows = read_cache(cache, method.value, "train")
    lines = (tmp_path / "mix.txt").read_text().splitlines()
    assert report.count == len(lines) == len(rows) == 24 and report.method == method.value
    assert lines == [m.line() for m in mix_rows(rows, 24, 0.3, MixKind.SALIENT, seed=0)]
    assert report.changed == sum(line != " ".join(r.text_a.split()) for line, r in zip(lines, rows, strict=True))
    assert report.changed > 20 and "wrote 24 mixed examples" in report.lines()[0]


def test_the_cli_mixes_from_params_and_options_and_refuses_bad_input_in_one_line(cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no params.yaml here: defaults
    out = tmp_path / "m.txt"
    base = ["mix", "--cache", str(cache), "--out", str(out)]
    result = CliRunner().invoke(app, [*base, "--method", "gradient", "--kind", "random", "--count", "30"])
    assert result.exit_code == 0, result.output
    assert "wrote 30 mixed examples" in result.output and "random windows from the gradient maps" in result.output
    _, rows = read_cache(cache, "gradient", "train")
    assert out.read_text().splitlines() == [m.line() for m in mix_rows(rows, 30, 0.3, MixKind.RANDOM, seed=0)]
    for extra, message in (
        ([], "error: cache " + str(cache) + ": name the method whose maps choose the windows"),
        (["--method", "gradient", "--kind", "best"], "error: option 'kind' must be one of ['salient', 'random']"),
        (["--method", "gradient", "--span", "1.5"], "error: span must be between 0 and 1, got 1.5"),
        (["--method", "gradient", "--count", "0"], "error: count must be positive, got 0"),
    ):
        result = CliRunner().invoke(app, [*base, *extra])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith(message), result.output
    result = CliRunner().invoke(app, ["mix", "--cache", str(tmp_path / "none"), "--out", str(out)])
    assert result.exit_code == 2 and result.output.strip() == f"error: cache not found: {tmp_path / 'none'}"

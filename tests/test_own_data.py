"""A user's own data: real TREC, SST-5 and MPQA files, every format, column detection, labels, bad input, metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.errors import EgkdError
from pipeline.evaluate.metrics import OneClass, compute_metrics, macro_f1, one_class
from pipeline.own_data import DataSpec, SourceKind, load_own_dataset, open_data, source_kind
from pipeline.tables import DataFormat
from pipeline.tasks import Metric, make_task

TEXT_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "text-classification"
ROWS = [("a good film", "pos"), ("a bad film", "neg"), ('fine, "really"', "pos")]


@pytest.fixture
def text_dir() -> Path:
    if not (TEXT_DIR / "trec" / "train.csv").is_file():
        pytest.skip(f"the text-classification data is not at {TEXT_DIR}")
    return TEXT_DIR


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def csv_text(rows: list[tuple[str, str]], header: str = "text,label") -> str:
    body = "".join(f'"{t.replace(chr(34), chr(34) * 2)}",{label}\n' for t, label in rows)
    return f"{header}\n{body}"


def pairs(ds) -> list[tuple[str, str | None, object]]:
    return [(e.text_a, e.text_b, e.label) for e in ds.examples]


# ---- real data ---------------------------------------------------------------------------------------------------


def test_real_trec_folder_string_labels_sorted(text_dir):
    data = open_data(DataSpec(source=str(text_dir / "trec")))
    assert data.kind is SourceKind.FOLDER and data.split_names == ("train", "test")
    assert data.task.name == "trec" and not data.task.is_pair
    assert data.task.labels == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
    assert data.task.metrics == (Metric.ACCURACY, Metric.MACRO_F1)
    train = load_own_dataset(DataSpec(source=str(text_dir / "trec")), "train")
    assert len(train) == 5452 and train.source == str(text_dir / "trec" / "train.csv")
    assert train.examples[0].example_id == "train-0"
    assert train.examples[0].text_a == "How did serfdom develop in and then leave Russia ?"
    assert train.examples[0].label == 1  # DESC
    test = load_own_dataset(DataSpec(source=str(text_dir / "trec")), "test", limit=3)
    assert [e.example_id for e in test.examples] == ["test-0", "test-1", "test-2"]
    assert test.examples[0].text_a == "How far is it from Denver to Aspen ?" and test.examples[0].label == 5  # NUM
    with pytest.raises(EgkdError, match=r"trec: no split 'dev' \(its files: train, test\)"):
        load_own_dataset(DataSpec(source=str(text_dir / "trec")), "dev")


def test_real_trec_single_file_is_the_training_split(text_dir):
    data = open_data(DataSpec(source=str(text_dir / "trec" / "train.csv")))
    assert data.kind is SourceKind.FILE and data.split_names == ("train",) and data.task.name == "trec"
    with pytest.raises(EgkdError, match=r"no split 'test' \(it is one file, the training split: train\)"):
        load_own_dataset(DataSpec(source=str(text_dir / "trec" / "train.csv")), "test")


def test_real_sst5_json_lines_integer_labels(text_dir):
    spec = DataSpec(source=str(text_dir / "sst5"))
    data = open_data(spec)
    assert data.split_names == ("train", "dev", "test") and data.task.labels == ("0", "1", "2", "3", "4")
    dev = load_own_dataset(spec, "dev")
    assert len(dev) == 1101 and dev.examples[1].text_a == "one long string of cliches ." and dev.examples[1].label == 1
    assert dev.examples[0].label == 2 and len(load_own_dataset(spec, "test")) == 2210


def test_real_mpqa_test_only_needs_label_names(text_dir):
    with pytest.raises(EgkdError, match=r"no training split to take the labels from; name them \(data.label_names\)"):
        open_data(DataSpec(source=str(text_dir / "mpqa")))
    test = load_own_dataset(DataSpec(source=str(text_dir / "mpqa"), label_names=("0", "1")), "test")
    assert len(test) == 10603 and sum(e.label for e in test.examples) == 3311  # type: ignore[misc]
    assert test.task.metrics == (Metric.ACCURACY, Metric.MACRO_F1, Metric.F1)


# ---- formats -----------------------------------------------------------------------------------------------------


def write_format(folder: Path, fmt: str) -> None:
    records = [{"text": t, "label": label} for t, label in ROWS]
    dev = [{"text": "dull", "label": "neg"}, {"text": "great", "label": "pos"}]
    for split, rows in (("train", records), ("dev", dev)):
        if fmt == "csv":
            write(folder / f"{split}.csv", csv_text([(r["text"], r["label"]) for r in rows]))
        elif fmt == "tsv":
            body = "".join(f"{r['text'].replace(chr(34), chr(34) * 2)}\t{r['label']}\n" for r in rows)
            body = body.replace('fine, ""really""', '"fine, ""really"""')
            write(folder / f"{split}.tsv", "text\tlabel\n" + body)
        elif fmt == "jsonl":
            write(folder / f"{split}.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        elif fmt == "json":
            write(folder / f"{split}.json", json.dumps(rows))
        elif fmt == "json-data":
            write(folder / f"{split}.json", json.dumps({"data": rows}))
        elif fmt == "json-lines":
            write(folder / f"{split}.json", "".join(json.dumps(r) + "\n" for r in rows))
        else:
            pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}.parquet")


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "json-data", "json-lines", "parquet"])
def test_every_format_gives_the_same_examples(tmp_path, fmt):
    write_format(tmp_path, fmt)
    data = open_data(DataSpec(source=str(tmp_path), name="mine"))
    assert data.task.name == "mine" and data.task.labels == ("neg", "pos")
    train = load_own_dataset(DataSpec(source=str(tmp_path)), "train")
    assert pairs(train) == [("a good film", None, 1), ("a bad film", None, 0), ('fine, "really"', None, 1)]
    assert [e.example_id for e in train.examples] == ["train-0", "train-1", "train-2"]
    assert pairs(load_own_dataset(DataSpec(source=str(tmp_path)), "dev")) == [("dull", None, 0), ("great", None, 1)]


def test_validation_file_is_the_dev_split_and_other_stems_are_their_own(tmp_path):
    write(tmp_path / "train.csv", csv_text(ROWS))
    write(tmp_path / "validation.jsonl", '{"text": "dull", "label": "neg"}\n{"text": "fun", "label": "pos"}\n')
    write(tmp_path / "ood.csv", csv_text([("odd", "neg"), ("even", "pos")]))
    write(tmp_path / "README.md", "not data")
    data = open_data(DataSpec(source=str(tmp_path)))
    assert data.split_names == ("train", "dev", "ood")
    assert [e.example_id for e in load_own_dataset(DataSpec(source=str(tmp_path)), "dev").examples] == [
        "dev-0",
        "dev-1",
    ]
    write(tmp_path / "dev.csv", csv_text(ROWS))
    with pytest.raises(EgkdError, match=r"two files for the split 'dev': dev.csv and validation.jsonl"):
        open_data(DataSpec(source=str(tmp_path)))


def test_format_override_and_unknown_extension(tmp_path):
    path = write(tmp_path / "data.txt", "text\tlabel\na\t0\nb\t1\n")
    ds = load_own_dataset(DataSpec(source=str(path), format=DataFormat.TSV), "train")
    assert pairs(ds) == [("a", None, 0), ("b", None, 1)] and ds.task.name == "data"
    with pytest.raises(EgkdError, match=r"data.txt: unknown data format '.txt'.*\(or set data.format\)"):
        open_data(DataSpec(source=str(path)))


def test_quoted_fields_across_lines_keep_their_line_numbers(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\n"two\nlines",0\nok,1\n,1\n')
    with pytest.raises(EgkdError, match=r"train.csv:5: empty text in column 'text'"):
        open_data_and_load(path)


def open_data_and_load(path: Path, **settings) -> object:
    return load_own_dataset(DataSpec(source=str(path), **settings), "train")


# ---- columns -----------------------------------------------------------------------------------------------------


def test_columns_detected_like_run_glue(tmp_path):
    pair = write(tmp_path / "pair.csv", "idx,sentence2,sentence1,label\n0,b,a,0\n1,d,c,1\n")
    assert pairs(open_data_and_load(pair)) == [("a", "b", 0), ("c", "d", 1)]
    text = write(tmp_path / "text.csv", "title,text,label\nt,body,0\nu,more,1\n")
    assert open_data(DataSpec(source=str(text))).columns.text == ("text",)
    # neither: the first string columns that are not the label (a numeric column is no text)
    other = write(tmp_path / "other.csv", "num,label,title,body,extra\n1,0,t1,b1,x\n2,1,t2,b2,y\n")
    assert open_data(DataSpec(source=str(other))).columns.text == ("title", "body")
    numbers = write(tmp_path / "numbers.csv", "a,label\n1.5,0\n2,1\n")
    with pytest.raises(EgkdError, match=r"numbers.csv: no text column found among \['a', 'label'\]"):
        open_data(DataSpec(source=str(numbers)))


def test_explicit_columns_and_id_column(tmp_path):
    path = write(tmp_path / "train.jsonl", '{"q": "a?", "ctx": "x", "y": "no", "uid": "k1"}\n')
    write(tmp_path / "train.jsonl", path.read_text() + '{"q": "b?", "ctx": "z", "y": "yes", "uid": "k2"}\n')
    spec = DataSpec(source=str(path), text_columns=("ctx", "q"), label_column="y", id_column="uid")
    ds = load_own_dataset(spec, "train")
    assert pairs(ds) == [("x", "a?", 0), ("z", "b?", 1)] and ds.task.is_pair
    assert [e.example_id for e in ds.examples] == ["train-k1", "train-k2"]
    assert ds.task.tsv.text_columns == ("ctx", "q") and ds.task.tsv.id_column == "uid"


# ---- labels ------------------------------------------------------------------------------------------------------


def test_integer_labels_sort_numerically_and_label_names_give_the_order(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,10\nb,2\nc,2\n")
    assert open_data(DataSpec(source=str(path))).task.labels == ("2", "10")
    names = open_data(DataSpec(source=str(path), label_names=("10", "2", "7")))
    assert names.task.labels == ("10", "2", "7") and names.task.metrics == (Metric.ACCURACY, Metric.MACRO_F1)
    assert [
        e.label for e in load_own_dataset(DataSpec(source=str(path), label_names=("10", "2")), "train").examples
    ] == [
        0,
        1,
        1,
    ]
    with pytest.raises(EgkdError, match=r"train.csv:2: label '10' is not in data.label_names \['2', '3'\]"):
        open_data(DataSpec(source=str(path), label_names=("2", "3")))
    with pytest.raises(EgkdError, match=r"data.label_names: two or more distinct labels"):
        open_data(DataSpec(source=str(path), label_names=("2", "2")))


def test_a_dev_label_unseen_in_training_is_refused_with_file_and_line(tmp_path):
    write(tmp_path / "train.csv", csv_text(ROWS))
    write(tmp_path / "dev.csv", csv_text([("ok", "pos"), ("meh", "neutral")]))
    with pytest.raises(EgkdError, match=r"dev.csv:3: label 'neutral' is not in the training split's labels "):
        load_own_dataset(DataSpec(source=str(tmp_path)), "dev")


def test_hundreds_of_classes(tmp_path):
    rows = "".join(f"text {i},c{i:03d}\n" for i in range(300))
    data = open_data(DataSpec(source=str(write(tmp_path / "train.csv", "text,label\n" + rows))))
    assert data.task.num_labels == 300 and data.task.labels is not None and data.task.labels[:2] == ("c000", "c001")


def test_float_labels_make_a_regression_task(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\na,0.5\nb,3\nc,4.25\n")
    data = open_data(DataSpec(source=str(path)))
    assert data.task.is_regression and data.task.metrics == (Metric.PEARSON, Metric.SPEARMAN)
    assert [e.label for e in load_own_dataset(DataSpec(source=str(path)), "train").examples] == [0.5, 3.0, 4.25]
    assert open_data(DataSpec(source=str(path), regression=False)).task.labels == ("0.5", "3", "4.25")
    jsonl = write(tmp_path / "s.jsonl", '{"text": "a", "label": 1.0}\n{"text": "b", "label": 2.0}\n')
    assert open_data(DataSpec(source=str(jsonl))).task.is_regression
    ints = write(tmp_path / "i.csv", "text,label\na,1\nb,2\n")
    assert open_data(DataSpec(source=str(ints), regression=True)).task.is_regression
    with pytest.raises(EgkdError, match=r"bad.csv:3: label 'x' does not parse as a number \(a regression task\)"):
        open_data_and_load(write(tmp_path / "bad.csv", "text,label\na,1.5\nb,x\n"), regression=True)


# ---- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, settings, message",
    [
        (
            "train.csv",
            "sentence,category\na,x\nb,y\n",
            {},
            r"train.csv: no column 'label'; the file has columns \['sentence', 'category'\]",
        ),
        (
            "train.csv",
            "text,label\na,x\nb,y\n",
            {"text_columns": ("body",)},
            r"train.csv: no column 'body'; the file has columns \['text', 'label'\]",
        ),
        ("train.csv", "text,label\na,x\n  ,y\n", {}, r"train.csv:3: empty text in column 'text'"),
        (
            "train.jsonl",
            '{"text": "a", "label": 1}\n{"text": "b", "label": [1, 2]}\n',
            {},
            r"train.jsonl:2: label \[1, 2\] does not parse",
        ),
        ("train.csv", "text,label\na,x\nb,\n", {}, r"train.csv:3: no label in column 'label'"),
        (
            "train.csv",
            "text,label\na,x\nb,x\n",
            {},
            r"train.csv: every example has the label 'x': a split with one class only",
        ),
        (
            "train.csv",
            "uid,text,label\n1,a,x\n2,b,y\n1,c,y\n",
            {"id_column": "uid"},
            r"train.csv:4: duplicate id '1' in column 'uid' \(first at .*train.csv:2\)",
        ),
        ("train.csv", "text,label\na,x\nb,y,z\n", {}, r"train.csv:3: 3 fields, expected 2"),
        ("train.csv", "text,text\na,x\n", {}, r"train.csv:1: the header line has repeated column name\(s\) \['text'\]"),
        ("train.jsonl", '{"text": "a", "label": 1}\n{"text": \n', {}, r"train.jsonl:2: not valid JSON"),
        ("train.csv", "", {}, r"train.csv: empty file, expected a header line"),
        ("train.csv", "text,label\n", {}, r"train.csv: no examples"),
        ("train.parquet", "not parquet", {}, r"train.parquet: not a readable Parquet file"),
        (
            "train.csv",
            "text,label\na,x\nb,y\n",
            {"encoding": "klingon"},
            r"unknown encoding 'klingon' \(data.encoding\)",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_file_and_line(tmp_path, name, content, settings, message):
    path = write(tmp_path / name, content)
    with pytest.raises(EgkdError, match=message) as caught:
        load_own_dataset(DataSpec(source=str(path), **settings), "train")
    assert "\n" not in str(caught.value)


def test_one_class_dev_split_is_refused_and_a_test_split_may_be_unlabelled(tmp_path):
    write(tmp_path / "train.csv", csv_text(ROWS))
    write(tmp_path / "dev.csv", csv_text([("ok", "pos"), ("fine", "pos")]))
    write(tmp_path / "test.csv", "text\nno label here\n")
    with pytest.raises(EgkdError, match=r"dev.csv: every example has the label 'pos'"):
        load_own_dataset(DataSpec(source=str(tmp_path)), "dev")
    assert pairs(load_own_dataset(DataSpec(source=str(tmp_path)), "test")) == [("no label here", None, None)]


def test_latin1_needs_the_encoding_setting(tmp_path):
    path = write(tmp_path / "train.csv", "text,label\nplain,a\ncaf\u00e9 cr\u00e8me,b\n".encode("latin-1"))
    with pytest.raises(EgkdError, match=r"train.csv:3: bytes that are not utf-8 .*set data.encoding .*latin-1"):
        load_own_dataset(DataSpec(source=str(path)), "train")
    ds = load_own_dataset(DataSpec(source=str(path), encoding="latin-1"), "train")
    assert pairs(ds) == [("plain", None, 0), ("caf\u00e9 cr\u00e8me", None, 1)]


def test_missing_paths_and_hub_names(tmp_path):
    with pytest.raises(EgkdError, match=r"data not found: .*nope.csv \(no such file or folder\)"):
        open_data(DataSpec(source=str(tmp_path / "nope.csv")))
    with pytest.raises(EgkdError, match=r"data not found: my/data/folder \(no such file or folder\)"):
        source_kind("my/data/folder")
    assert source_kind("stanfordnlp/imdb") is SourceKind.HUB and source_kind(str(tmp_path)) is SourceKind.FOLDER
    with pytest.raises(EgkdError, match=r"empty: no data files \(train.csv, dev.jsonl"):
        (tmp_path / "empty").mkdir()
        open_data(DataSpec(source=str(tmp_path / "empty")))
    with pytest.raises(EgkdError, match="limit must be a positive"):
        load_own_dataset(DataSpec(source=str(write(tmp_path / "t.csv", csv_text(ROWS)))), "train", limit=0)


# ---- provenance --------------------------------------------------------------------------------------------------


def test_fingerprint_covers_the_bytes_and_the_settings(tmp_path):
    path = write(tmp_path / "train.csv", "uid,text,other,label,alt\n1,a,x,p,1\n2,b,y,q,0\n")

    def fingerprint(**settings) -> str:
        return load_own_dataset(DataSpec(source=str(path), **settings), "train").fingerprint

    base = fingerprint()
    assert base == fingerprint() and len(base) == 64
    variants = [
        fingerprint(text_columns=("other",)),
        fingerprint(label_column="alt"),
        fingerprint(id_column="uid"),
        fingerprint(label_names=("q", "p")),
        fingerprint(encoding="latin-1"),
        fingerprint(name="renamed"),  # the task's name is not a setting of the examples
    ]
    assert len({base, *variants[:-1]}) == 6 and variants[-1] == base
    write(path, path.read_text() + "3,c,z,p,1\n")
    assert fingerprint() != base


# ---- hub datasets ------------------------------------------------------------------------------------------------


def test_a_hub_dataset_that_is_neither_cached_nor_reachable_is_one_line(tmp_path):
    code = (
        "from pipeline.own_data import DataSpec, load_own_dataset\n"
        "from pipeline.errors import EgkdError\n"
        "try:\n    load_own_dataset(DataSpec(source='egkd-tests/no-such-dataset'), 'train')\n"
        "except EgkdError as err:\n    print(err)\n"
    )
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1, out.stdout + out.stderr
    assert lines[0].startswith(
        "could not load the hub dataset 'egkd-tests/no-such-dataset' (split 'train'): "
        "it is not in the local datasets cache and the hub cannot be reached"
    )


def test_a_hub_dataset_with_class_labels(monkeypatch):
    import datasets

    features = datasets.Features(
        {"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
    )
    tables = {
        "train": {"sentence": ["good", "bad", "ok"], "label": [1, 0, 1]},
        "validation": {"sentence": ["fun", "dull"], "label": [1, 0]},
        "test": {"sentence": ["hidden"], "label": [-1]},
    }
    calls = []

    def fake_load(name, config=None, split=None):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict(tables[split], features=features)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    spec = DataSpec(source="someone/reviews", dataset_config="short")
    data = open_data(spec)
    assert data.kind is SourceKind.HUB and data.task.name == "reviews-short" and data.task.labels == ("neg", "pos")
    dev = load_own_dataset(spec, "dev")
    assert pairs(dev) == [("fun", None, 1), ("dull", None, 0)] and dev.source == "hub:someone/reviews/short/validation"
    assert pairs(load_own_dataset(spec, "test")) == [("hidden", None, None)]
    assert calls[-1] == ("someone/reviews", "short", "test")


# ---- metrics -----------------------------------------------------------------------------------------------------


def test_macro_f1_by_hand_on_three_classes():
    labels, preds = np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1, 1, 1, 2, 0])
    # F1 per class: 0: 2*1/(2+1+1) = 1/2; 1: 2*2/(4+1+0) = 4/5; 2: 2*1/(2+0+1) = 2/3
    assert macro_f1(preds, labels) == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    task = make_task("three", ("a", "b", "c"), ("text",))
    result = compute_metrics(task, preds, labels)
    assert result.main_name == "accuracy" and result.main == pytest.approx(4 / 6)
    assert result.values == (("accuracy", pytest.approx(4 / 6)), ("macro_f1", pytest.approx(59 / 90)))
    assert result.one_class is None and macro_f1(np.array([], dtype=int), np.array([], dtype=int)) == 0.0


def test_binary_tasks_also_report_the_positive_class_f1():
    task = make_task("two", ("neg", "pos"), ("text",))
    result = compute_metrics(task, np.array([1, 0, 0, 1, 1]), np.array([1, 1, 0, 0, 1]))
    # pos: tp 2, fp 1, fn 1 -> 2/3; neg: tp 1, fp 1, fn 1 -> 1/2
    assert [name for name, _ in result.values] == ["accuracy", "macro_f1", "f1"]
    assert result.get(Metric.ACCURACY) == pytest.approx(3 / 5)
    assert result.get(Metric.MACRO_F1) == pytest.approx(7 / 12) and result.get(Metric.F1) == pytest.approx(2 / 3)


def test_regression_metrics_and_the_one_class_flag_for_n_classes():
    task = make_task("score", None, ("a", "b"))
    result = compute_metrics(task, np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0]))
    assert result.main_name == "pearson" and result.main == pytest.approx(
        3 / 84**0.5
    )  # covariance 1, variances 42/9, 2
    assert result.get("spearman") == pytest.approx(
        0.5
    )  # ranks (1,2,3), (1,3,2): 1 - 6 * 2 / (3 * 8) and result.one_class is None and task.is_pair
    six = make_task("six", ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"), ("text",))
    flagged = compute_metrics(six, np.array([4] * 19 + [5]), np.array([0, 1, 2, 3, 4, 5] * 3 + [4, 4]))
    assert flagged.one_class == OneClass(4, 0.95) and "class LOC for 95.0%" in flagged.one_class.note(six.labels)
    assert one_class(np.array([0, 1, 2, 3, 4, 5] * 4)) is None
    with pytest.raises(EgkdError, match="one or two text columns"):
        make_task("three", ("a", "b"), ("x", "y", "z"))

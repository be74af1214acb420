"""GLUE loading: the task registry, real SST-2 rows, and malformed TSV files."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data import load_dataset
from pipeline.errors import EgkdError
from pipeline.tasks import TASKS, Metric, TaskSpec, get_task


def write_task(root: Path, glue_dir: str, split: str, content: bytes) -> Path:
    folder = root / glue_dir
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.tsv").write_bytes(content)
    return root


def test_registry_covers_all_glue_tasks():
    assert set(TASKS) == {"sst2", "cola", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
    assert get_task("SST-2").name == "sst2"
    assert get_task("sts-b").is_regression and get_task("stsb").metrics == (Metric.PEARSON, Metric.SPEARMAN)
    assert get_task("cola").metrics[0] is Metric.MATTHEWS and get_task("mrpc").metrics[0] is Metric.F1
    assert not hasattr(TaskSpec, "main_metric")  # dead code removed: the first of `metrics` is the main one
    assert get_task("mnli").num_labels == 3 and "dev_mismatched" in get_task("mnli").splits
    assert all(get_task(n).is_pair for n in ("mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"))


def test_unknown_task_is_named():
    with pytest.raises(EgkdError, match="unknown task 'sst3'"):
        get_task("sst3")


def test_real_sst2_rows(glue_dir):
    dev = load_dataset(glue_dir, get_task("sst2"), "dev")
    assert len(dev) == 872
    first = dev.examples[0]
    assert (first.example_id, first.text_a, first.label) == ("dev-0", "one long string of cliches .", 0)
    assert len({e.example_id for e in dev.examples}) == 872
    limited = load_dataset(glue_dir, get_task("sst2"), "train", limit=10)
    assert [e.example_id for e in limited.examples] == [f"train-{i}" for i in range(10)]
    assert limited.fingerprint == load_dataset(glue_dir, get_task("sst2"), "train", limit=3).fingerprint


def test_pair_task_with_index_column(tmp_path):
    content = (
        b"index\tsentence1\tsentence2\tlabel\n7\tA man runs.\tSomeone moves.\tentailment\n9\tX\tY\tnot_entailment\n"
    )
    root = write_task(tmp_path, "RTE", "dev", content)
    ds = load_dataset(root, get_task("rte"), "dev")
    assert [(e.example_id, e.text_a, e.text_b, e.label) for e in ds.examples] == [
        ("dev-7", "A man runs.", "Someone moves.", 0),
        ("dev-9", "X", "Y", 1),
    ]


def test_cola_has_no_header(tmp_path):
    root = write_task(tmp_path, "CoLA", "train", b"gj04\t1\t\tOur friends won't buy this.\ngj04\t0\t*\tThey drank.\n")
    ds = load_dataset(root, get_task("cola"), "train")
    assert [(e.text_a, e.label) for e in ds.examples] == [("Our friends won't buy this.", 1), ("They drank.", 0)]


def test_bom_crlf_blank_lines_and_quotes_are_read_correctly(tmp_path):
    content = '\ufeffsentence\tlabel\r\n"quoted" start\t1\r\n\r\nit \'s a "film\t0\r\n'.encode()
    ds = load_dataset(write_task(tmp_path, "SST-2", "dev", content), get_task("sst2"), "dev")
    assert [(e.text_a, e.label) for e in ds.examples] == [('"quoted" start', 1), ("it 's a \"film", 0)]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"sentence\n a film\n", r"missing column\(s\) 'label'"),
        (b"sentence\tlabel\na film\t2\n", r"dev.tsv:2: label '2' not in \['0', '1'\]"),
        (b"sentence\tlabel\na film\t1\nshort\n", r"dev.tsv:3: 1 fields, expected 2"),
        (b"sentence\tlabel\na film\t1\textra\n", r"dev.tsv:2: 3 fields, expected 2"),
        (b"sentence\tlabel\na film\t1\nbad \xff byte\t0\n", r"dev.tsv:3: bytes that are not UTF-8"),
        (b"sentence\tlabel\n", r"no examples"),
    ],
)
def test_malformed_sst2_is_refused_with_file_and_line(tmp_path, content, message):
    root = write_task(tmp_path, "SST-2", "dev", content)
    with pytest.raises(EgkdError, match=message):
        load_dataset(root, get_task("sst2"), "dev")


def test_duplicate_ids_are_refused(tmp_path):
    content = b"index\tsentence1\tsentence2\tlabel\n1\ta\tb\tentailment\n1\tc\td\tentailment\n"
    with pytest.raises(EgkdError, match=r"dev.tsv:3: duplicate id '1' \(first at line 2\)"):
        load_dataset(write_task(tmp_path, "RTE", "dev", content), get_task("rte"), "dev")


def test_missing_folder_file_and_split(tmp_path):
    with pytest.raises(EgkdError, match="data folder not found"):
        load_dataset(tmp_path / "nope", get_task("sst2"), "dev")
    with pytest.raises(EgkdError, match="sst2 dev file not found"):
        load_dataset(tmp_path, get_task("sst2"), "dev")
    with pytest.raises(EgkdError, match="has no split 'validation'"):
        load_dataset(tmp_path, get_task("sst2"), "validation")
    with pytest.raises(EgkdError, match="limit must be a positive"):
        load_dataset(tmp_path, get_task("sst2"), "dev", limit=0)


def test_regression_scores(tmp_path):
    content = (
        b"index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        b"0\tmain\tf\t2012\t1\tnone\tnone\tA plane.\tAn air plane.\t5.000\n"
    )
    ds = load_dataset(write_task(tmp_path, "STS-B", "dev", content), get_task("stsb"), "dev")
    assert ds.examples[0].label == 5.0
    bad = content.replace(b"5.000", b"7.5")
    with pytest.raises(EgkdError, match=r"dev.tsv:2: score '7.5' outside \[0, 5\]"):
        load_dataset(write_task(tmp_path, "STS-B", "dev", bad), get_task("stsb"), "dev")

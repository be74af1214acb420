"""The command line: help, one-line errors with exit code 2, and teacher fine-tuning."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from stages.cli import app

runner = CliRunner()


def test_help_lists_the_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("finetune", "explain", "distill", "evaluate", "cache", "report"):
        assert command in result.output


def _one_line_error(result, text: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "make_args, text",
    [
        (lambda d, t: ["--data", str(t / "missing")], "data not found"),
        (lambda d, t: ["--data", str(d), "--task", "sst3"], "unknown task 'sst3'"),
    ],
)
def test_finetune_bad_inputs(glue_dir, tmp_path, tiny_model_dir, make_args, text):
    args = ["finetune", "--model", str(tiny_model_dir), "--out", str(tmp_path / "o")] + make_args(glue_dir, tmp_path)
    _one_line_error(runner.invoke(app, args), text)


@pytest.mark.parametrize(
    "content, text",
    [
        (b"sentence\tscore\na film\t1\n", "missing column(s) 'label'"),
        (b"sentence\tlabel\na film\tpositive\n", "train.tsv:2: label 'positive' not in ['0', '1']"),
    ],
)
def test_finetune_bad_files(tmp_path, tiny_model_dir, content, text):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_bytes(content)
    (tmp_path / "SST-2" / "dev.tsv").write_bytes(b"sentence\tlabel\nok\t1\n")
    args = ["finetune", "--model", str(tiny_model_dir), "--data", str(tmp_path), "--out", str(tmp_path / "o")]
    _one_line_error(runner.invoke(app, args), text)


def test_finetune_bad_params_file(tmp_path, tiny_model_dir, glue_dir):
    params = tmp_path / "params.yaml"
    params.write_text("finetune:\n  train:\n    epochs: 0\n")
    args = [
        "finetune",
        "--model",
        str(tiny_model_dir),
        "--data",
        str(glue_dir),
        "--params",
        str(params),
        "--out",
        str(tmp_path / "o"),
    ]
    _one_line_error(runner.invoke(app, args), "finetune.train.epochs must be positive, got 0")


@pytest.mark.parametrize(
    "args, text",
    [
        (["finetune", "--data", "x"], "Missing option '--out'"),
        (["distill", "--out", "x"], "Missing option '--cache'"),
        (["finetune", "--data", "x", "--out", "y", "--epochs", "many"], "Invalid value for '--epochs'"),
        (["cache", "verify"], "Missing argument 'path'"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_usage_errors_are_one_line(args, text):
    _one_line_error(runner.invoke(app, args), text)


def test_finetune_tiny_teacher_is_reproducible(glue_dir, tiny_model_dir, tmp_path):
    outs = []
    for name in ("a", "b"):
        out = tmp_path / name
        args = [
            "finetune",
            "--model",
            str(tiny_model_dir),
            "--data",
            str(glue_dir),
            "--limit",
            "48",
            "--dev-limit",
            "32",
            "--batch-size",
            "16",
            "--out",
            str(out),
        ]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        outs.append(out)
    metrics = [json.loads((o / "metrics.json").read_text()) for o in outs]
    assert metrics[0]["dev"] == metrics[1]["dev"] and metrics[0]["steps"] == 3
    assert (outs[0] / "model.safetensors").read_bytes() == (outs[1] / "model.safetensors").read_bytes()
    info = json.loads((outs[0] / "egkd_model.json").read_text())
    assert info == {"role": "teacher", "task": "sst2", "base_model": str(tiny_model_dir), "num_layers": 2}
    losses = [json.loads(line)["loss"] for line in (outs[0] / "train_log.jsonl").read_text().splitlines()]
    assert len(losses) == 3


@pytest.mark.parametrize("command", ["finetune", "explain", "evaluate"])
def test_every_command_reads_the_data_source_from_the_params(command, glue_dir, tmp_path, tiny_model_dir, monkeypatch):
    """`data.source: hub` wins over the GLUE folder dvc.yaml passes as --data, in every command that reads data."""
    from pipeline.errors import EgkdError

    def hub(task, split, limit):
        raise EgkdError(f"hub asked for {task.name} {split}")

    monkeypatch.setattr("pipeline.data._load_hub", hub)
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  source: hub\n", encoding="utf-8")
    model = str(tiny_model_dir)
    options = {
        "finetune": ["--model", model, "--out", str(tmp_path / "teacher")],
        "explain": ["--teacher", model, "--out", str(tmp_path / "cache")],
        "evaluate": ["--model", model],
    }[command]
    result = runner.invoke(app, [command, *options, "--data", str(glue_dir), "--params", str(params)])
    _one_line_error(result, "hub asked for sst2")


def test_every_variant_option_is_a_distill_option():
    """dvc.yaml passes a variant's options to ``egkd distill`` as ``--key value`` (``--no-key`` for false), spelt as
    in params.yaml: every distill setting is one, made from its declaration (help and all)."""
    import typer.main

    from pipeline.config import DistillParams, FinetuneParams, option_keys

    declared = {}
    for name, section in (("distill", DistillParams), ("finetune", FinetuneParams)):
        command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
        declared[name] = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
        keys = option_keys(section)
        assert {f"--{key}" for key in keys} | {f"--{key.replace('_', '-')}" for key in keys} <= declared[name]
    assert {"--t2_scaling", "--no-t2_scaling", "--transfer", "--no-transfer"} <= declared["distill"]


def test_distill_options_reach_the_settings(tmp_path, monkeypatch):
    """Options given win over params.yaml, nested train options included; options not given leave it as it is."""
    import pipeline.distill.job

    seen = []
    monkeypatch.setattr(pipeline.distill.job, "distill", lambda request: seen.append(request.params) or 1 / 0)
    params = tmp_path / "params.yaml"
    params.write_text("distill:\n  beta: 0.3\n  train:\n    epochs: 7\n", encoding="utf-8")
    args = ["distill", "--cache", str(tmp_path), "--out", str(tmp_path / "s"), "--params", str(params)]
    runner.invoke(app, [*args, "--lr", "0.002", "--view_kind", "random", "--no-t2-scaling", "--layers", "2"])
    (chosen,) = seen
    assert (chosen.train.lr, chosen.train.epochs, chosen.beta) == (0.002, 7, 0.3)
    assert (chosen.view_kind, chosen.t2_scaling, chosen.layers) == ("random", False, 2)
    help_text = runner.invoke(app, ["distill", "--help"], terminal_width=200).output
    assert "Peak learning rate" in help_text and "distill.train.lr" in help_text


def test_a_bad_distill_option_value_is_one_line(tmp_path):
    args = ["distill", "--cache", str(tmp_path), "--out", str(tmp_path / "s"), "--params", "params.yaml"]
    _one_line_error(
        runner.invoke(app, [*args, "--gradient-loss", "mse"]),
        "option 'gradient_loss' must be one of ['cosine', 'adkd'], got 'mse'",
    )
    _one_line_error(runner.invoke(app, [*args, "--explain-every", "0"]), "explain_every must be positive")


def test_paths_that_cannot_be_written_are_one_line(tmp_path, tiny_model_dir, glue_dir):
    (tmp_path / "afile").write_text("a file, not a folder", encoding="utf-8")
    _one_line_error(
        runner.invoke(app, ["profile", "default", "--out", str(tmp_path / "afile" / "x.yaml")]),
        f"error: Not a directory: {tmp_path / 'afile' / 'x.yaml'}",
    )
    explain = ["explain", "--teacher", str(tiny_model_dir), "--data", str(glue_dir), "--split", "dev", "--limit", "4"]
    _one_line_error(
        runner.invoke(app, [*explain, "--out", str(tmp_path / "afile" / "cache")]),
        f"cannot write the cache to {tmp_path / 'afile' / 'cache'}: {tmp_path / 'afile'} is a file, not a folder",
    )


def test_an_infinite_number_is_refused_in_one_line(tmp_path):
    args = ["distill", "--cache", str(tmp_path), "--out", str(tmp_path / "s"), "--params", "params.yaml"]
    _one_line_error(runner.invoke(app, [*args, "--lr", "inf"]), "option 'lr' must be a finite number, got inf")
    _one_line_error(
        runner.invoke(app, [*args, "--temperature", "-inf"]), "option 'temperature' must be a finite number, got -inf"
    )


def test_an_interrupted_distill_says_what_it_leaves_to_continue_from(tmp_path, monkeypatch):
    import pipeline.distill.job

    def interrupted(request):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline.distill.job, "distill", interrupted)
    args = ["distill", "--cache", str(tmp_path), "--out", str(tmp_path / "s"), "--params", "params.yaml"]
    result = runner.invoke(app, [*args, "--checkpoint-every", "25"])
    assert result.exit_code == 130 and result.stderr == (
        "interrupted; no checkpoint was written yet (one every 25 steps: distill.checkpoint_every); a rerun starts "
        "over\n"
    )


def test_report_options_are_checked_as_their_params_are(tmp_path):
    args = ["report", "--evals", str(tmp_path), "--out", str(tmp_path / "r.html"), "--params", "params.yaml"]
    _one_line_error(runner.invoke(app, [*args, "--examples", "-1"]), "report_examples must be positive, got -1")

"""The `yolo-pipeline` command as a user runs it: help, data synthesis, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "pipeline.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", [[], ["train"], ["resume"], ["sync"], ["data", "synth"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0 and "usage: yolo-pipeline" in result.stdout


def test_data_synth_writes_a_yolo_dataset(tmp_path: Path) -> None:
    result = run("data", "synth", "--out", "synthetic", "--images", "20", "--seed", "3", "--size", "64")
    assert result.returncode == 0, result.stderr
    assert "wrote 20 images (16 train, 4 val)" in result.stdout
    assert len(list((tmp_path / "synthetic" / "images" / "train").glob("*.png"))) == 16
    assert len(list((tmp_path / "synthetic" / "labels" / "val").glob("*.txt"))) == 4
    assert (tmp_path / "synthetic" / "data.yaml").is_file()


def test_data_synth_rejects_bad_sizes() -> None:
    result = run("data", "synth", "--out", "x", "--images", "1")
    assert (
        result.returncode == 2 and result.stderr.strip() == "error: images: need at least 2 (one train, one val), got 1"
    )


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        ("train:\n  epochs: -3\n", [], "bad.yaml: train.epochs: must be > 0, got -3"),
        ("train:\n  epoch: 3\n", [], "bad.yaml: train.epoch: unknown key"),
        ("train:\n  batch: many\n", [], "bad.yaml: train.batch: must be an integer, got 'many'"),
        (
            "train: {}\n",
            ["train.imgsz=100"],
            "bad.yaml (with overrides): train.imgsz: must be a multiple of 32, got 100",
        ),
        ("data:\n  path: nowhere\n", [], "data.path: "),
    ],
)
def test_train_reports_bad_input_in_one_line(tmp_path: Path, content: str, overrides: list[str], message: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    result = run("train", "bad.yaml", *overrides)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_train_reports_a_missing_config() -> None:
    result = run("train", "missing.yaml")
    assert result.returncode == 2 and result.stderr.strip() == "error: missing.yaml: no such config file"


def test_resume_and_sync_report_unknown_targets(tmp_path: Path) -> None:
    result = run("resume", str(tmp_path))
    assert result.returncode == 2 and "not a training folder" in result.stderr
    result = run("sync", "nowhere")
    assert result.returncode == 2 and "nowhere: not a tracking spool" in result.stderr


def test_nonfinite_stop_is_one_line_and_exit_code_1(monkeypatch, capsys, tmp_path: Path) -> None:
    import pipeline.train as train_package
    from pipeline import cli
    from pipeline.train.errors import NonFiniteGradients

    message = "gradients: nonfinite in epoch 2: 1 of 4 sampled steps had NaN/inf gradients; layers: model.0.conv"

    def stopped(config):
        assert config.gradients.stop_on_nonfinite
        raise NonFiniteGradients(message)

    monkeypatch.setattr(train_package, "train", stopped)
    (tmp_path / "c.yaml").write_text("train: {epochs: 1}\n")
    assert cli.main(["train", "c.yaml", "gradients.stop_on_nonfinite=true"]) == 1
    assert capsys.readouterr().err == f"error: {message}\n"

"""The `yolo-pipeline` command as a user runs it: help, data synthesis, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "pipeline.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["train"],
        ["resume"],
        ["sync"],
        ["data", "synth"],
        ["data", "import"],
        ["data", "validate"],
        ["data", "stats"],
        ["data", "split"],
        ["augment", "preview"],
    ],
)
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


@pytest.fixture
def coco_source(synth_data: Path, tmp_path: Path) -> Path:
    """The synthetic set as COCO JSON (one file per split) with one broken image and one bad annotation."""
    import json

    from pipeline.data.coco import write_coco
    from pipeline.data.yolo import read_yolo

    files = write_coco(read_yolo(synth_data), tmp_path / "coco")
    spec = json.loads(files["train"].read_text())
    spec["annotations"][0]["category_id"] = 42
    files["train"].write_text(json.dumps(spec))
    return tmp_path / "coco"


def test_data_import_validate_stats_and_split(coco_source: Path, tmp_path: Path) -> None:
    imported = run("data", "import", "--format", "coco", str(coco_source), "--name", "parts", "--out", "datasets")
    assert imported.returncode == 0, imported.stderr
    assert "imported 120 images, " in imported.stdout and "(train 96, val 24)" in imported.stdout
    assert (
        "1 boxes dropped" in imported.stdout and "annotation 1: category id 42 is not in categories" in imported.stdout
    )
    data_yaml = tmp_path / "datasets" / "parts" / "data.yaml"
    assert f"data.path for a config: {data_yaml}" in imported.stdout
    assert {"card.json", "card.md", "validation.json", "data.yaml"} <= {p.name for p in data_yaml.parent.iterdir()}

    checked = run("data", "validate", str(data_yaml))
    assert checked.returncode == 0 and checked.stdout.startswith(f"{data_yaml}: 120 images, ")
    assert "no problems" in checked.stdout

    stats = run("data", "stats", str(data_yaml))
    assert stats.returncode == 0 and "# Dataset card: parts" in stats.stdout and "| scratch |" in stats.stdout

    split = run("data", "split", str(data_yaml), "--split", "train=0.5,val=0.25,test=0.25", "--out", "resplit")
    assert split.returncode == 0, split.stderr
    counts = {s: len(list((tmp_path / "resplit" / "images" / s).iterdir())) for s in ("train", "val", "test")}
    assert sum(counts.values()) == 120  # stratified by class boxes, so image counts are close, not exact
    assert abs(counts["train"] - 60) <= 4 and abs(counts["val"] - 30) <= 3 and abs(counts["test"] - 30) <= 3


def test_data_validate_under_fail_exits_1_and_names_the_problem(coco_source: Path) -> None:
    result = run(
        "data", "validate", str(coco_source / "instances_train.json"), "--policy", "fail", "--report", "r.json"
    )
    assert result.returncode == 1
    assert "annotation 1: category id 42 is not in categories (dropped box)" in result.stdout
    assert Path("r.json").is_file()


def test_data_import_of_a_missing_source_is_one_line(tmp_path: Path) -> None:
    result = run("data", "import", str(tmp_path / "nowhere"), "--name", "x")
    assert result.returncode == 2 and result.stderr.strip() == f"error: {tmp_path / 'nowhere'}: no such file or folder"


def test_augment_preview_draws_a_grid(synth_data: Path, tmp_path: Path) -> None:
    import cv2

    config = tmp_path / "exp.yaml"
    config.write_text(f"data:\n  path: {synth_data}\ntrain:\n  imgsz: 64\naugment:\n  preset: surface\n")
    result = run("augment", "preview", str(config), "augment.mosaic=0.0", "--out", "grid.png", "--samples", "9")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "wrote grid.png: 9 augmented training samples" in result.stdout
        and "4 albumentations transforms, symmetry p=1 (preset surface)" in result.stdout
    )
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape == (3 * 68 + 4, 3 * 68 + 4, 3)  # 3 x 3 tiles of 64 px with 4-px gaps


def test_augment_preview_reports_a_bad_transform_in_one_line(synth_data: Path, tmp_path: Path) -> None:
    config = tmp_path / "exp.yaml"
    config.write_text(f"data:\n  path: {synth_data}\naugment:\n  albumentations:\n    - transform: Blurr\n")
    result = run("augment", "preview", str(config), "--out", "grid.png")
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == "error: augment.albumentations[0]: transform: 'Blurr' is not an albumentations transform"
    )

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
        ["init"],
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
    import pipeline.training as train_package
    from pipeline import cli
    from pipeline.training.errors import NonFiniteGradients

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


def test_init_writes_a_starter_config_once(tmp_path: Path) -> None:
    from pipeline.config import Config, load_config

    result = run("init")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wrote experiment.yaml: every key at its default")
    written = (tmp_path / "experiment.yaml").read_text()
    assert load_config("experiment.yaml") == Config()
    again = run("init")
    assert again.returncode == 2
    assert (
        again.stderr.strip() == "error: experiment.yaml: already exists; init writes only a new file (name another one)"
    )
    assert (tmp_path / "experiment.yaml").read_text() == written


def _trained_with(monkeypatch, *argv: str):
    import pipeline.training as train_package
    from pipeline import cli
    from pipeline.cli import train as train_commands

    seen = []  # the config a training would have run with
    monkeypatch.setattr(train_package, "train", seen.append)
    monkeypatch.setattr(train_commands, "_print_training", lambda result: None)
    assert cli.main(["train", *argv]) == 0
    return seen[0]


def test_train_without_a_config_uses_the_defaults_with_data(monkeypatch, tmp_path: Path) -> None:
    from pipeline.config import Config

    config = _trained_with(monkeypatch, "--data", "my data: 1/data.yaml", "train.epochs=3")
    assert config.data.path == "my data: 1/data.yaml" and config.train.epochs == 3  # a path is text, always
    config.train.epochs = 10
    config.data.path = ""
    assert config == Config()

    (tmp_path / "c.yaml").write_text("data:\n  path: elsewhere\ntrain:\n  epochs: 2\n")
    config = _trained_with(monkeypatch, "c.yaml", "--data", "here")
    assert (config.data.path, config.train.epochs) == ("here", 2)


def test_train_without_a_config_or_data_says_what_to_give(capsys) -> None:
    from pipeline import cli

    assert cli.main(["train", "train.epochs=3"]) == 2
    assert capsys.readouterr().err == (
        "error: train: give an experiment config (yolo-pipeline init writes one) or --data PATH\n"
    )


def test_promote_registers_the_logged_model_without_mlflow_warning_of_missing_artifacts(tmp_path: Path) -> None:
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("promote")
    run_id = client.create_run(experiment).info.run_id
    model = client.create_logged_model(experiment, name="model", source_run_id=run_id)  # as the tracker logs it
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "MLmodel").write_text("flavors: {}\n")
    client.log_model_artifacts(model.model_id, str(tmp_path / "model"))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])
    client.set_terminated(run_id)

    result = run("promote", run_id, "--name", "defects", "--tracking-uri", uri)
    assert result.returncode == 0, result.stderr
    assert f"registered defects version 1 from run {run_id}" in result.stdout
    assert "artifact path" not in result.stdout + result.stderr and "WARNING" not in result.stderr
    version = client.get_model_version_by_alias("defects", "champion")
    # The registry took the path that warns: the run's logged model, found although the run has no model artifacts.
    assert (version.run_id, version.source) == (run_id, f"models:/{model.model_id}")


@pytest.fixture
def untrained_checkpoint(tmp_path: Path) -> Path:
    """A 3-class YOLO11n checkpoint with random weights: enough for `evaluate` to run end to end."""
    import torch

    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    model.names = {0: "scratch", 1: "pit", 2: "patch"}
    path = tmp_path / "untrained.pt"
    torch.save({"epoch": -1, "model": model.half(), "train_args": {"imgsz": 64}}, path)
    return path


def test_evaluate_names_no_temporary_folder(untrained_checkpoint: Path, synth_data: Path) -> None:
    result = run("evaluate", "--model", str(untrained_checkpoint), "--data", str(synth_data), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"on {synth_data} [val]: 24 images" in result.stdout
    output = result.stdout + result.stderr
    assert "yolo-pipeline-evaluate-" not in output and "Results saved to" not in output and "Saving " not in output


def test_data_import_takes_the_class_order_of_a_voc_source_from_classes(synth_data: Path, tmp_path: Path) -> None:
    from pipeline.data.voc import write_voc
    from pipeline.data.yolo import read_yolo

    source = read_yolo(synth_data)
    write_voc(source, tmp_path / "voc")
    order = ["pit", "scratch", "patch"]  # neither the synthetic set's order nor sorted
    result = run("data", "import", "voc", "--name", "parts", "--classes", ",".join(order), "--format", "voc")
    assert result.returncode == 0, result.stderr
    assert "boxes: pit " in result.stdout and "validation: 120 images" in result.stdout
    imported = read_yolo(tmp_path / "datasets" / "parts" / "data.yaml")
    assert imported.names == order

    def named_boxes(collection) -> dict[str, list[str]]:
        return {s.image.stem: sorted(collection.names[b.cls] for b in s.boxes) for s in collection.samples}

    assert named_boxes(imported) == named_boxes(source)

    with_manifest = run("data", "import", "--manifest", "m.yaml", "--classes", "pit")
    assert with_manifest.returncode == 2
    assert with_manifest.stderr.strip() == (
        "error: data import: --classes goes with SRC and --name; a manifest lists its `classes:`"
    )

"""A real tiny training recorded in a real MLflow server (and in the embedded SQLite default)."""

from __future__ import annotations

import json
import math
from importlib import metadata
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from pipeline.cpu import cpu_threads
from pipeline.inference import predict
from pipeline.tracking import load_model
from pipeline.training import train
from tests.helpers.configs import tiny_config
from tests.helpers.tracking import (
    CLASSES,
    EPOCH_METRICS,
    assert_epochs_exactly_once,
    assert_gradients_recorded,
    per_class_keys,
)

pytestmark = pytest.mark.slow


def test_training_is_fully_recorded_in_mlflow_server(synth_data: Path, mlflow_server, tmp_path: Path) -> None:
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"plots": True},  # the plots are part of the record this test checks
        augment={"preset": "surface-light"},
        tracking={"uri": mlflow_server.uri, "experiment": "full"},
    )
    result = train(config)

    assert result.run_id and result.pending_records == 0
    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1  # one training, one run

    assert_epochs_exactly_once(client, result.run_id, EPOCH_METRICS | per_class_keys(), epochs=2)
    assert_gradients_recorded(client, mlflow_server.folder / "mlflow.db", result.run_id, result.save_dir, epochs=2)
    assert result.gradient_health == run.data.tags["gradients.health"]
    # Names with dots and digits work in MLflow search (quoted with backticks, as MLflow documents).
    found = client.search_runs([run.info.experiment_id], "metrics.`grad_norm.model.23.cv2.0` > 0")
    assert [r.info.run_id for r in found] == [result.run_id]
    for key in ("mAP50", "precision", "recall"):
        assert all(0.0 <= m.value <= 1.0 for m in client.get_metric_history(result.run_id, key))
    assert {f"best.AP50.{c}" for c in CLASSES} <= set(run.data.metrics)
    assert any(k.startswith("system/cpu_utilization_percentage") for k in run.data.metrics)

    params = run.data.params
    assert params["train.epochs"] == "2" and params["train.imgsz"] == "64"
    assert params["data.path"] == str(synth_data) and params["tracking.uri"] == mlflow_server.uri
    tags = run.data.tags
    assert len(tags["dataset.hash"]) == 64 and tags["dataset.images.train"] == "96"
    assert tags["device"] == "cpu" and "version.ultralytics" in tags and "version.torch" in tags
    assert tags["pipeline.output_dir"] == str(result.save_dir)

    # Lineage: the data is an MLflow dataset input with its hash and card; the augmentation spec is logged.
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.name == synth_data.parent.name and data_input.dataset.digest == tags["dataset.hash"][:36]
    assert json.loads(data_input.dataset.source)["uri"] == str(synth_data)
    profile = json.loads(data_input.dataset.profile)
    assert profile["images"] == 120 and profile["splits"]["train"]["images"] == 96
    assert json.loads(data_input.dataset.schema)["classes"] == list(CLASSES)
    assert {t.key: t.value for t in data_input.tags}["mlflow.data.context"] == "training"
    dataset_files = {Path(a.path).name for a in client.list_artifacts(result.run_id, "dataset")}
    assert dataset_files == {"card.json", "card.md", "validation.json"}
    assert tags["dataset.skipped_images"] == "0" and tags["dataset.dropped_boxes"] == "0"
    assert params["augment.preset"] == "surface-light"
    augment_dir = Path(client.download_artifacts(result.run_id, "augment", str(tmp_path / "downloaded")))
    spec = yaml.safe_load((augment_dir / "augment.yaml").read_text())
    assert [t["transform"] for t in spec["transforms"]] == ["RandomBrightnessContrast", "RandomGamma", "FastGaussNoise"]
    assert len(spec["albumentations"]) == 3

    top = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "results.csv", "args.yaml", "plots", "val_predictions"} <= top
    plots = {Path(a.path).name for a in client.list_artifacts(result.run_id, "plots")}
    assert {"confusion_matrix.png", "confusion_matrix.json", "BoxPR_curve.png", "results.png"} <= plots
    assert len(client.list_artifacts(result.run_id, "val_predictions")) >= 1

    model = load_model(f"runs:/{result.run_id}/model", mlflow_server.uri)
    # The scale the model learned travels with it (training size, the images' typical side; 64-px images), and which
    # pipeline code it carries.
    assert model.metadata.metadata == {
        "imgsz": 64,
        "training_image_side": 64,
        "yolo_pipeline_version": metadata.version("yolo-pipeline"),
        "weights": "data/yolo/weights/best.pt",  # where predict finds the checkpoint; MLflow loads no pickle
    }
    assert model.metadata.flavors["python_function"]["loader_module"] == "pipeline.inference.serving"
    # The model is the screen: predict's detections per image, in order, each with its verdict (no screen was
    # calibrated: an image fails at any detection reaching conf), and a file it cannot read as an error row.
    images = sorted((synth_data.parent / "images" / "val").glob("*.png"))[:2]
    conf = 0.001  # low enough that a 2-epoch model keeps a few detections
    missing = tmp_path / "missing.png"
    answers = model.predict([str(images[0]), str(missing), str(images[1])], params={"conf": conf})
    listed = tmp_path / "listed.txt"
    listed.write_text(f"{images[0]}\n{images[1]}\n", encoding="utf-8")
    predict(
        listed,
        f"runs:/{result.run_id}/model",
        tmp_path / "predicted",
        conf=conf,
        progress=False,
        tracking_uri=mlflow_server.uri,
    )
    records = [json.loads(line) for line in (tmp_path / "predicted" / "predictions.jsonl").read_text().splitlines()]
    assert [a["image"] for a in answers] == [str(images[0]), str(missing), str(images[1])]
    assert answers[1] == {
        "image": str(missing),
        "verdict": "error",
        "failed_classes": [],
        "detections": [],
        "error": "no such file",
    }
    served = [answers[0], answers[2]]
    assert [r["path"] for r in records] == [str(p) for p in images] and sum(len(r["detections"]) for r in records) > 0
    for answer, record in zip(served, records, strict=True):
        assert len(answer["detections"]) == len(record["detections"])
        for got, want in zip(answer["detections"], record["detections"], strict=True):
            assert (got["class_id"], got["class"]) == (want["class_id"], want["class"]) and got["class"] in CLASSES
            assert abs(got["score"] - want["score"]) <= 1e-3 and got["score"] >= conf
            assert all(abs(a - b) <= 0.5 for a, b in zip(got["box"], want["box"], strict=True))
            assert 0 <= got["box"][0] <= got["box"][2] <= 64 and 0 <= got["box"][1] <= got["box"][3] <= 64
        failing = sorted({d["class"] for d in record["detections"]})  # every kept detection reaches conf
        assert answer["failed_classes"] == failing and answer["verdict"] == ("fail" if failing else "pass")

    # The run's model is one MLflow 3 logged model, which the registry takes as a version.
    logged = [m for m in client.search_logged_models([run.info.experiment_id]) if m.source_run_id == result.run_id]
    assert len(logged) == 1 and logged[0].name == "model"
    client.create_registered_model("synthetic-defects")
    version = client.create_model_version(
        "synthetic-defects", f"models:/{logged[0].model_id}", run_id=result.run_id, model_id=logged[0].model_id
    )
    registered = load_model(f"models:/synthetic-defects/{version.version}", mlflow_server.uri)
    (row,) = registered.predict(pd.DataFrame({"path": [str(images[0])]}), params={"conf": conf})
    assert row["image"] == str(images[0]) and len(row["detections"]) == len(records[0]["detections"])


def test_training_with_embedded_default_tracking(synth_data: Path, tmp_path: Path) -> None:
    config = tiny_config(synth_data, tmp_path / "runs", train={"epochs": 1}, tracking={"system_metrics": False})
    result = train(config)

    assert (tmp_path / "mlflow.db").is_file()  # the working folder's SQLite file, no server
    assert result.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert_epochs_exactly_once(client, result.run_id, EPOCH_METRICS | per_class_keys(), epochs=1)
    assert run.info.artifact_uri.startswith((tmp_path / "mlruns").as_uri())
    assert (Path(run.info.artifact_uri.removeprefix("file://")) / "results.csv").is_file()
    assert (result.save_dir / "config.yaml").is_file() and (result.save_dir / "weights" / "best.pt").is_file()


def test_tracking_off_trains_without_mlflow(synth_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = tiny_config(synth_data, tmp_path / "runs", train={"epochs": 1, "plots": True}, tracking={"enabled": False})
    with caplog.at_level("INFO", logger="pipeline.training"):
        result = train(config)
    assert result.run_id is None
    assert not (tmp_path / "mlflow.db").exists() and not (result.save_dir / "tracking").exists()
    assert len(result.epochs) == 1 and not math.isnan(result.epochs[0]["metrics/mAP50(B)"])
    # The CPU training's threads: the free cores (at least one), said in one line, and PyTorch given them.
    (line,) = [m for m in caplog.messages if m.startswith("train: ") and "PyTorch thread" in m]
    threads = int(line.removeprefix("train: ").split()[0])
    assert 1 <= threads <= cpu_threads() and torch.get_num_threads() == threads
    assert line.endswith("; data loaded in the training process")
    # The epoch's validation draws no plot that the final validation of best.pt draws again: each once, from it.
    assert (result.save_dir / "confusion_matrix.png").is_file() and (result.save_dir / "val_batch0_pred.jpg").is_file()

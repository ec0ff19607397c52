"""The drift baseline a training records at its end (train.drift_baseline): its val split as best.pt sees it, beside
best.pt and in the run, and predict checking drift against it with no calibration: for that very .pt, for the run's
model and for a version registered from the run; never for other weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import mlflow
import pytest
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient

from pipeline.checkpoints import file_sha256
from pipeline.data.dataset import images_in
from pipeline.drift import DIGEST_TAG, FILENAME, TRAINING, Baseline
from pipeline.inference import predict
from pipeline.inference.options import PredictOptions
from pipeline.tracking.store import using_tracking_uri
from tests.helpers.configs import tiny_config, untracked_training
from tests.helpers.tracking import CLASSES

pytestmark = pytest.mark.slow


def _val(synth_data: Path) -> Path:
    return synth_data.parent / "images" / "val"


def test_a_training_records_its_baseline_and_predict_checks_a_pt_against_it(
    synth_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.cli import main

    result = untracked_training(synth_data, tmp_path, drift_baseline=True)
    weights = result.save_dir / "weights"
    baseline = Baseline.load(weights / FILENAME)
    assert baseline.model_sha256 == file_sha256(weights / "best.pt")
    assert baseline.images == len(images_in(_val(synth_data))) == 24
    assert baseline.origin == TRAINING and baseline.split == "val"
    conf = PredictOptions.model_fields["conf"].default
    assert baseline.thresholds == dict.fromkeys(CLASSES, conf)  # every class at predict's own default
    from pipeline.cli.train import _print_training

    _print_training(result)  # the training's summary names it
    assert f"drift baseline:  {weights / FILENAME}\n" in capsys.readouterr().out

    # the very images it was recorded on: nothing drifts, and the line says which baseline it was
    out = tmp_path / "same"
    assert main(["predict", str(_val(synth_data)), "--model", str(weights / "best.pt"), "--out", str(out),
                 "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("drift: "))
    assert "against the training's validation split (val)" in line, line
    report = json.loads((out / "drift.json").read_text())
    assert report["images"] == 24 and report["baseline"]["digest"] == baseline.digest() and report["notes"] == []

    # last.pt beside it is other weights: the baseline is not theirs
    other = predict(_val(synth_data), str(weights / "last.pt"), tmp_path / "last", progress=False, device="cpu")
    assert other.drift is None and "belongs to other weights" in other.drift_note
    assert not (tmp_path / "last" / "drift.json").exists()
    # nor is it a copied checkpoint's once its bytes change (another training's best.pt in its place)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(weights / FILENAME, moved / FILENAME)
    shutil.copy(weights / "last.pt", moved / "best.pt")
    copied = predict(_val(synth_data), str(moved / "best.pt"), tmp_path / "copied", progress=False, device="cpu")
    assert copied.drift is None and "belongs to other weights" in copied.drift_note


def test_a_tracked_training_sends_its_baseline_and_predict_finds_it_through_the_run(
    synth_data: Path, mlflow_server, tmp_path: Path
) -> None:
    from pipeline.tracking.registry import register_model
    from pipeline.training import train

    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 1, "drift_baseline": True},
        tracking={"uri": mlflow_server.uri, "experiment": "training-baseline", "system_metrics": False},
        gradients={"enabled": False},
    )
    result = train(config)
    digest = Baseline.load(result.save_dir / "weights" / FILENAME).digest()
    client = MlflowClient(mlflow_server.uri)
    assert client.get_run(result.run_id).data.tags[DIGEST_TAG] == digest
    assert [a.path for a in client.list_artifacts(result.run_id, "drift")] == [f"drift/{FILENAME}"]

    found = predict(_val(synth_data), f"runs:/{result.run_id}/model", tmp_path / "run", progress=False,
                    device="cpu", tracking_uri=mlflow_server.uri)  # fmt: skip
    assert found.drift is not None and found.drift.baseline["digest"] == digest and found.drift.images == 24
    assert found.drift.notes == []  # MLflow's copy of best.pt has other bytes, the same weights: no "model differs"
    assert (tmp_path / "run" / "drift.json").exists()

    register_model(result.run_id, "trained-baseline", "fresh", {}, mlflow_server.uri)
    version = predict(_val(synth_data), "models:/trained-baseline@fresh", tmp_path / "version", progress=False,
                      device="cpu", tracking_uri=mlflow_server.uri)  # fmt: skip
    assert version.drift is not None and version.drift.baseline["digest"] == digest

    # The logged model holds it beside MLmodel: what `mlflow models serve` (and `mlflow.pyfunc.load_model`, the same
    # loader, run here in-process) compares a request with when the model was never calibrated.
    logged = client.get_logged_model(client.get_model_version("trained-baseline", "1").source.removeprefix("models:/"))
    kept = download_artifacts(f"{logged.artifact_location}/{FILENAME}", dst_path=str(tmp_path / "kept"),
                              tracking_uri=mlflow_server.uri)  # fmt: skip
    assert Baseline.load(kept).digest() == digest
    with using_tracking_uri(mlflow_server.uri):
        (tmp_path / "served").mkdir()
        served = mlflow.pyfunc.load_model("models:/trained-baseline@fresh", dst_path=str(tmp_path / "served"))
    brighter = tmp_path / "brighter"
    brighter.mkdir()
    for path in images_in(_val(synth_data)):
        cv2.imwrite(str(brighter / path.name), cv2.convertScaleAbs(cv2.imread(str(path)), alpha=1.4))
    rows = served.predict(sorted(str(p) for p in brighter.iterdir()), params={"drift": True})
    assert len(rows) == 24 and all(row["drift"] == rows[0]["drift"] for row in rows)
    assert rows[0]["drift"]["drifted"] is True, rows[0]["drift"]
    assert "brightness" in rows[0]["drift"]["line"] and "the training's validation split" in rows[0]["drift"]["line"]

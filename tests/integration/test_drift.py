"""predict's drift check on a trained model: the baseline calibrate records, a clean folder that does not alarm, a
brighter one that does (naming brightness), the review queue it feeds, the run it tracks, a model without a
baseline, and the baseline inside an exported bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import pytest
from mlflow.tracking import MlflowClient

from pipeline.data.synth import synthesize
from pipeline.drift import DIGEST_TAG, STATISTICS, Baseline
from pipeline.inference import predict
from pipeline.inference.screen import read_screen
from pipeline.screen.calibrate import calibrate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def calibrated(downscaled_training, downscaled_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model calibrated on its val split into a folder: screen.json and the baseline it names."""
    out = tmp_path_factory.mktemp("drift") / "screen"
    calibrate(str(downscaled_training.best_weights), downscaled_data, out=out, target_recall=0.8, bootstrap=200)
    return out


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """100 new parts of the same line (another seed), and the same parts under a lamp 30% brighter."""
    made = synthesize(tmp_path_factory.mktemp("line"), images=100, seed=11, size=128).data_yaml.parent
    clean, bright = tmp_path_factory.mktemp("clean"), tmp_path_factory.mktemp("bright")
    for image in sorted(made.glob("images/*/*.png")):
        shutil.copy(image, clean / image.name)
        cv2.imwrite(str(bright / image.name), cv2.convertScaleAbs(cv2.imread(str(image)), alpha=1.3))
    return clean, bright


def test_calibrate_records_the_baseline_its_screen_names(calibrated: Path) -> None:
    screen = read_screen(calibrated / "screen.json")
    baseline = Baseline.load(calibrated / "drift_baseline.npz")
    assert screen.drift_baseline == {"file": "drift_baseline.npz", "sha256": baseline.digest(), "images": 80}
    assert baseline.images == 80 and baseline.split == "val" and baseline.model_sha256 == screen.model_sha256
    assert baseline.thresholds == screen.thresholds
    assert baseline.sample.embeddings.shape == (80, 256)  # YOLO11n's last backbone stage, pooled
    # each detection kept is at or above its class's threshold
    for cls in baseline.sample.classes:
        assert (baseline.sample.scores(cls) >= screen.thresholds[cls]).all()


def test_a_clean_folder_does_not_alarm_and_a_brighter_one_does(
    downscaled_training, calibrated: Path, folders: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    from pipeline.cli import main

    clean, bright = folders
    model, screen = str(downscaled_training.best_weights), str(calibrated / "screen.json")
    calm = predict(clean, model, tmp_path / "clean", screen=screen, progress=False, device="cpu")
    assert calm.drift is not None and calm.drift.images == 100
    # the input statistics depend on the images only: not one moves; the model's figures move little (Holm)
    assert not any(calm.drift.check(name).drifted for name in STATISTICS)
    assert all((check.p_holm or 1.0) > 1e-3 for check in calm.drift.ran), calm.drift.line()
    written = json.loads((tmp_path / "clean" / "drift.json").read_text())
    assert written["images"] == 100 and written["correction"] == "holm" and written["line"] == calm.drift.line()
    seen = Baseline.load(tmp_path / "clean" / "drift_sample.npz")
    assert seen.images == 100 and seen.model_sha256 == read_screen(screen).model_sha256

    assert main(["predict", str(bright), "--model", model, "--screen", screen, "--out", str(tmp_path / "bright"),
                 "--review", str(tmp_path / "queue"), "--device", "cpu", "--no-progress"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    report = json.loads((tmp_path / "bright" / "drift.json").read_text())
    assert report["drifted"] is True
    brightness = next(check for check in report["checks"] if check["name"] == "brightness")
    assert brightness["drifted"] and brightness["current"] > 1.2 * brightness["baseline"]
    line = next(line for line in said.splitlines() if line.startswith("drift: "))
    assert "brightness" in line and "the images are not like the calibration split (val)" in line

    # the queue starts with the images that drive the drift, most atypical first
    tasks = json.loads((tmp_path / "queue" / "tasks.json").read_text())
    atypical = [task for task in tasks if "atypical" in task["data"]]
    assert len(atypical) == 20 and tasks[:20] == atypical
    assert all(Path(task["data"]["source"]).parent == bright for task in atypical)


def test_a_tracked_run_records_the_drift(
    downscaled_training, calibrated: Path, folders: tuple[Path, Path], mlflow_server, tmp_path: Path
) -> None:
    _, bright = folders
    result = predict(bright, str(downscaled_training.best_weights), tmp_path / "out", screen=str(calibrated / "screen.json"),
                     track=True, tracking_uri=mlflow_server.uri, experiment="drift-test", progress=False)  # fmt: skip
    run = MlflowClient(mlflow_server.uri).get_run(result.tracking_run_id)
    assert run.data.tags["pipeline.drift"] == "drifted"
    assert run.data.tags[DIGEST_TAG] == Baseline.load(calibrated / "drift_baseline.npz").digest()
    assert run.data.metrics["drift.drifted"] == 1.0 and run.data.metrics["drift.images"] == 100
    assert run.data.metrics["drift.p.brightness"] < 0.05
    artifacts = {a.path for a in MlflowClient(mlflow_server.uri).list_artifacts(result.tracking_run_id)}
    assert {"drift.json", "drift.png"} <= artifacts
    assert (tmp_path / "out" / "drift.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_model_without_a_baseline_says_drift_is_not_checked(
    downscaled_training, folders: tuple[Path, Path], tmp_path: Path
) -> None:
    clean, _ = folders
    result = predict(clean, str(downscaled_training.best_weights), tmp_path / "out", progress=False, device="cpu")
    assert result.drift is None and result.drift_note.startswith("not checked: no baseline")
    assert not (tmp_path / "out" / "drift.json").exists()
    assert Baseline.load(tmp_path / "out" / "drift_sample.npz").images == 100  # kept all the same
    quiet = predict(clean, str(downscaled_training.best_weights), tmp_path / "off", progress=False, drift=False)
    assert quiet.drift is None and quiet.drift_note == "" and not (tmp_path / "off" / "drift_sample.npz").exists()

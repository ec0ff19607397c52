"""`export`: bundles of a really trained model, screened by `predict --model DIR` as the checkpoint screens; INT8
behind its accuracy gate, refused in a forced bad case with nothing written; the destination rules; and a line
PC's environment, without torch, ultralytics or MLflow, screening a folder with a bundle.

The model is `downscaled_training`'s (tests/conftest.py): 64 px, three classes.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipeline.checkpoints import file_sha256
from pipeline.drift import Baseline
from pipeline.inference import predict
from pipeline.inference.screen import Screen, read_screen
from tests.helpers.commands import run
from tests.helpers.line_venv import clean_env, make_line_venv

pytestmark = pytest.mark.slow
THRESHOLDS = (0.3, 0.2, 0.25)  # per class, in the model's order: distinct, so a class mixed up shows


@pytest.fixture(scope="module")
def classes(downscaled_data: Path) -> list[str]:
    return list(yaml.safe_load(downscaled_data.read_text())["names"].values())


@pytest.fixture(scope="module")
def screen_file(classes: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    thresholds = {name: THRESHOLDS[k % 3] for k, name in enumerate(classes)}
    screen = Screen(thresholds, "test", "data.yaml", "val", "2026-12-06T00:00:00+00:00", targets={"default": 0.9})
    return screen.write(tmp_path_factory.mktemp("screen") / "screen.json")


@pytest.fixture(scope="module")
def val(downscaled_data: Path) -> Path:
    return downscaled_data.parent / "images" / "val"


@pytest.fixture(scope="module")
def checkpoint_results(downscaled_training, val: Path, screen_file: Path, tmp_path_factory) -> Path:
    """The checkpoint's own screening of the val images, in PyTorch: what every FP32 bundle must repeat."""
    out = tmp_path_factory.mktemp("checkpoint") / "out"
    predict(val, str(downscaled_training.best_weights), out, screen=str(screen_file), runtime="torch", progress=False)
    return out


def _records(out: Path) -> dict[str, dict]:
    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    return {record["path"]: record for record in map(json.loads, lines)}


def _verdicts(out: Path) -> dict[str, str]:
    with open(out / "summary.csv", encoding="utf-8", newline="") as table:
        return {row["path"]: row["verdict"] for row in csv.DictReader(table)}


def _same_detections(these: Path, those: Path, box_px: float = 0.5, score: float = 1e-3) -> int:
    """Every image has the same detections in both folders: classes, boxes within ``box_px``, scores within
    ``score``; returns how many were compared."""
    a, b = _records(these), _records(those)
    assert a.keys() == b.keys()
    compared = 0
    for path, record in a.items():
        mine, theirs = record["detections"], b[path]["detections"]
        assert [d["class_id"] for d in mine] == [d["class_id"] for d in theirs], path
        for d, e in zip(mine, theirs):
            assert np.abs(np.subtract(d["box"], e["box"])).max() <= box_px, (path, d, e)
            assert abs(d["score"] - e["score"]) <= score, (path, d, e)
            compared += 1
    return compared


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_an_fp32_bundle_screens_as_its_checkpoint(
    fmt: str,
    downscaled_training,
    screen_file: Path,
    classes: list[str],
    val: Path,
    checkpoint_results: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    weights = downscaled_training.best_weights
    bundle = tmp_path / "bundle"
    code, out, err = run(
        capsys, "export", "--model", str(weights), "--screen", str(screen_file), "--format", fmt, "--out", str(bundle)
    )
    assert code == 0, err
    document = json.loads((bundle / "screen.json").read_text(encoding="utf-8"))
    assert document["thresholds"] == json.loads(screen_file.read_text())["thresholds"]
    section = document["bundle"]
    assert section["names"] == classes and section["imgsz"] == 64 and section["precision"] == "fp32"
    assert section["source"]["sha256"] == file_sha256(weights)
    assert {"yolo-pipeline", "ultralytics", "onnx"} <= set(section["versions"])
    assert file_sha256(bundle / section["network"]) == section["network_sha256"]
    assert "thresholds: calibrated on val of data.yaml" in out

    results = tmp_path / "results"
    found = predict(val, str(bundle), results, progress=False)
    assert found.runtime == fmt
    assert "from the bundle" in found.thresholds_source
    assert _same_detections(results, checkpoint_results) > 0
    assert _verdicts(results) == _verdicts(checkpoint_results)


def test_int8_is_gated_against_fp32_and_the_gate_is_recorded(
    downscaled_training,
    downscaled_data: Path,
    screen_file: Path,
    classes: list[str],
    val: Path,
    checkpoint_results: Path,
    tmp_path: Path,
    capsys,
) -> None:
    # The screen's baseline: what the checkpoint saw of val, as calibrate records it (this data, this split).
    named = tmp_path / "screen"
    named.mkdir()
    seen = Baseline.load(checkpoint_results / "drift_sample.npz")
    fp32_baseline = replace(seen, data=str(downscaled_data), split="val", _digest=None)
    fp32_baseline.save(named / "drift_baseline.npz")
    recorded = {"file": "drift_baseline.npz", "sha256": fp32_baseline.digest(), "images": fp32_baseline.images}
    replace(read_screen(screen_file), drift_baseline=recorded).write(named / "screen.json")
    bundle = tmp_path / "int8"
    # Wide limits: this asserts what the gate records and that an INT8 bundle screens; the refusal is the next test's.
    code, out, err = run(
        capsys,
        "export",
        "--model", str(downscaled_training.best_weights),
        "--screen", str(named / "screen.json"),
        "--format", "onnx-int8",
        "--data", str(downscaled_data),
        "--calibration-images", "24",
        "--max-recall-drop", "0.3",
        "--max-map50-drop", "0.3",
        "--out", str(bundle),
    )  # fmt: skip
    assert code == 0, err
    gate = json.loads((bundle / "screen.json").read_text(encoding="utf-8"))["bundle"]["gate"]
    assert gate["passed"] and gate["split"] == "val" and gate["max_recall_drop"] == 0.3
    assert set(gate["fp32"]["recall"]) == set(classes) == set(gate["int8"]["recall"])
    assert gate["fp32"]["images"] == gate["int8"]["images"] == len(list(val.iterdir()))
    for name in classes:
        assert gate["fp32"]["recall"][name] - gate["int8"]["recall"][name] <= 0.3
    assert gate["fp32"]["map50"] > 0.3  # the model finds the defects: the gate compared something
    assert all(name in out for name in classes) and "gate:       passed" in out

    import onnx

    network = onnx.load(str(bundle / "network.onnx"))
    assert sum(node.op_type == "QuantizeLinear" for node in network.graph.node) > 10

    # the baseline travels as the INT8 network saw the same split: its own embeddings, the same images
    own = Baseline.load(bundle / "drift_baseline.npz")
    assert own.extra["recorded_by"] == "onnx-int8" and own.digest() != fp32_baseline.digest()
    assert own.sample.names == fp32_baseline.sample.names and own.images == 80
    assert not np.array_equal(own.sample.embeddings, fp32_baseline.sample.embeddings)
    assert json.loads((bundle / "screen.json").read_text())["drift_baseline"]["sha256"] == own.digest()
    assert "recorded again by the onnx-int8 network on val" in out

    results = tmp_path / "results"
    found = predict(val, str(bundle), results, progress=False)
    assert found.images == len(list(val.iterdir())) and found.errors == 0
    assert found.drift is not None and not found.drift.drifted  # the split it was recorded on


def test_the_gate_refuses_a_forced_bad_case_and_writes_nothing(
    downscaled_training, downscaled_data: Path, screen_file: Path, tmp_path: Path, capsys
) -> None:
    """Quantized on one flat grey image, the INT8 network's ranges are wrong for real parts: refused, exit 1,
    one line per failing class, and the bundle folder of an earlier export is left exactly as it was."""
    data = tmp_path / "one-image"
    for split in ("train", "val"):
        (data / "images" / split).mkdir(parents=True)
        (data / "labels" / split).mkdir(parents=True)
    cv2.imwrite(str(data / "images" / "train" / "flat.png"), np.full((128, 128, 3), 128, np.uint8))
    (data / "labels" / "train" / "flat.txt").write_text("")
    source = downscaled_data.parent
    for image in sorted((source / "images" / "val").iterdir()):
        (data / "images" / "val" / image.name).symlink_to(image)
        label = source / "labels" / "val" / f"{image.stem}.txt"
        (data / "labels" / "val" / label.name).symlink_to(label)
    names = yaml.safe_load(downscaled_data.read_text())["names"]
    (data / "data.yaml").write_text(yaml.safe_dump({"path": str(data), "train": "images/train", "val": "images/val",
                                                    "names": names}))  # fmt: skip
    bundle = tmp_path / "bundle"
    weights = str(downscaled_training.best_weights)
    assert run(capsys, "export", "--model", weights, "--screen", str(screen_file), "--out", str(bundle))[0] == 0
    before = {path.name: path.read_bytes() for path in bundle.iterdir()}

    code, out, err = run(
        capsys,
        "export",
        "--model", weights,
        "--screen", str(screen_file),
        "--format", "onnx-int8",
        "--data", str(data / "data.yaml"),
        "--out", str(bundle),
    )  # fmt: skip
    assert code == 1, (out, err)
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]  # the rest: progress lines
    assert lines[-1].startswith("error: INT8 refused by the accuracy gate; nothing written")
    assert len(lines) >= 2 and all("INT8 recall" in line or "mAP50: INT8" in line for line in lines[:-1])
    assert {path.name: path.read_bytes() for path in bundle.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle")]  # no staging left beside it


def test_a_users_folder_is_never_replaced(downscaled_training, tmp_path: Path, capsys) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    code, _, err = run(capsys, "export", "--model", str(downscaled_training.best_weights), "--out", str(mine))
    assert code == 2 and "was not made by yolo-pipeline" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_a_line_pc_without_the_training_stack_screens_a_folder_with_a_bundle(
    downscaled_training, val: Path, screen_file: Path, checkpoint_results: Path, tmp_path: Path, capsys
) -> None:
    """A fresh venv with only the project's own dependencies (no extra): no torch, ultralytics or MLflow; the
    screen's drift baseline travels in the bundle and the line PC checks drift against it."""
    named = tmp_path / "screen"  # the screen with a baseline: what the checkpoint saw of val at its thresholds
    named.mkdir()
    shutil.copyfile(checkpoint_results / "drift_sample.npz", named / "drift_baseline.npz")
    baseline = Baseline.load(named / "drift_baseline.npz")
    recorded = {"file": "drift_baseline.npz", "sha256": baseline.digest(), "images": baseline.images}
    replace(read_screen(screen_file), drift_baseline=recorded).write(named / "screen.json")
    bundle = tmp_path / "bundle"
    weights = str(downscaled_training.best_weights)
    code, out, _ = run(
        capsys, "export", "--model", weights, "--screen", str(named / "screen.json"), "--out", str(bundle)
    )
    assert code == 0 and f"drift:      baseline {named / 'drift_baseline.npz'}" in out
    assert Baseline.load(bundle / "drift_baseline.npz").digest() == baseline.digest()
    python = make_line_venv(tmp_path / "line")
    missing = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print([m for m in ('torch', 'ultralytics', 'mlflow') "
         "if u.find_spec(m)])"], capture_output=True, text=True, env=clean_env(), check=True
    )  # fmt: skip
    assert missing.stdout.strip() == "[]"
    results = tmp_path / "results"
    screened = subprocess.run(
        [str(python), "-m", "pipeline.cli", "predict", str(val), "--model", str(bundle), "--out", str(results)],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert screened.returncode == 0, screened.stderr
    assert "runtime onnx" in screened.stderr
    assert "drift: none of" in screened.stdout and json.loads((results / "drift.json").read_text())["images"] == 80
    assert _same_detections(results, checkpoint_results) > 0
    assert _verdicts(results) == _verdicts(checkpoint_results)
    refused = subprocess.run(
        [str(python), "-m", "pipeline.cli", "export", "--model", weights, "--out", str(tmp_path / "other")],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=tmp_path,
    )
    assert refused.returncode == 2 and "pip install 'yolo-pipeline[train]'" in refused.stderr


def test_a_registered_version_exports_its_stored_screen_and_records_the_export(
    downscaled_training, downscaled_data: Path, mlflow_server, tmp_path: Path, capsys
) -> None:
    """A version calibrated with --track exports its own screen by default (the calibration run's whole screen.json,
    lineage and all); --track records an export run and tags the version with it."""
    from mlflow.tracking import MlflowClient

    from pipeline.screen.calibrate import calibrate
    from pipeline.tracking.registry import register_model

    uri, name = mlflow_server.uri, "export-test"
    version = register_model(downscaled_training.run_id, name, "line", {}, uri)
    calibrated = calibrate(
        f"models:/{name}@line", downscaled_data, target_recall=0.8, max_false_reject=None, track=True,
        out=tmp_path / "calibration", bootstrap=100, tracking_uri=uri, experiment="export-test",
    )  # fmt: skip
    bundle = tmp_path / "bundle"
    code, out, err = run(
        capsys, "export", "--model", f"models:/{name}@line", "--out", str(bundle), "--track",
        "--experiment", "export-test", "--tracking-uri", uri,
    )  # fmt: skip
    assert code == 0, err
    document = json.loads((bundle / "screen.json").read_text(encoding="utf-8"))
    assert document["thresholds"] == calibrated.screen.thresholds
    assert document["data_hash"] == calibrated.screen.data_hash and document["targets"] == {"default": 0.8}
    assert document["bundle"]["source"]["run_id"] == downscaled_training.run_id
    assert document["bundle"]["source"]["version"] == version
    assert f"stored with models:/{name}/{version}" in out
    # the calibration's drift baseline, found with the version, travels in the bundle
    baseline = Baseline.load(tmp_path / "calibration" / "drift_baseline.npz")
    assert document["drift_baseline"]["sha256"] == baseline.digest()
    assert Baseline.load(bundle / "drift_baseline.npz").digest() == baseline.digest()
    assert f"drift:      baseline the calibration run {calibrated.run_id}" in out
    client = MlflowClient(uri)
    tag = json.loads(client.get_model_version(name, version).tags["pipeline.export.onnx"])
    assert tag["network_sha256"] == document["bundle"]["network_sha256"]
    export_run = client.get_run(tag["run"])
    assert export_run.data.tags["pipeline.kind"] == "export" and export_run.data.params["format"] == "onnx"
    assert [a.path for a in client.list_artifacts(tag["run"])] == ["screen.json"]

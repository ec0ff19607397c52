"""`predict FOLDER --watch`: a real writer process fills a hot folder while the watcher screens it; killed with
SIGKILL mid-stream and started again, every image is screened exactly once; SIGTERM ends it with exit 0 after the
images in hand; a corrupt image is an errors.jsonl line, never a stop; --move-done moves only screened images.

The watcher runs a bundle (`export` of a YOLO11n built from its architecture, 64 px): a line PC's process, without
torch, which starts in a second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.export.bundles import export_bundle

pytestmark = pytest.mark.slow
WRITER = """
import os, sys, time
from pathlib import Path
source, hot, start, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
images = sorted(source.iterdir())
for k in range(start, start + count):
    data = images[k % len(images)].read_bytes()
    name = f"part{k:03d}.png"
    if k % 3 == 0:  # an atomic writer: a hidden temporary name, then the rename
        (hot / f".{name}.part").write_bytes(data)
        os.replace(hot / f".{name}.part", hot / name)
    else:  # a slow writer: half, a pause, the rest, then the close
        with open(hot / name, "wb") as f:
            f.write(data[: len(data) // 2]); f.flush(); time.sleep(0.05); f.write(data[len(data) // 2 :])
    time.sleep(0.1)
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from ultralytics.nn.tasks import DetectionModel

    folder = tmp_path_factory.mktemp("watch-model")
    model = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    model.names = {0: "scratch", 1: "pit", 2: "patch"}
    torch.save({"model": model.half(), "train_args": {"imgsz": 64}, "epoch": -1}, folder / "untrained.pt")
    return export_bundle(str(folder / "untrained.pt"), folder / "bundle", "onnx").out


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(0)
    for k in range(8):
        cv2.imwrite(str(folder / f"p{k}.png"), rng.integers(0, 255, (96, 96, 3), dtype=np.uint8))
    return folder


def _watcher(bundle: Path, hot: Path, out: Path, done: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline.cli", "predict", str(hot), "--model", str(bundle), "--out", str(out),
               "--watch", "--move-done", str(done), "--no-progress", "--conf", "0.0001"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _write(parts: Path, hot: Path, start: int, count: int) -> None:
    subprocess.run([sys.executable, "-c", WRITER, str(parts), str(hot), str(start), str(count)], check=True)


def _wait_for_records(out: Path, count: int, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = [out / "predictions.jsonl", out / "errors.jsonl"]
        records = [json.loads(line) for log in logs if log.exists() for line in log.read_text().splitlines()]
        if len(records) >= count:
            return records
        time.sleep(0.1)
    raise AssertionError(f"{count} records expected in {out}, {len(records)} found")


def test_a_killed_watch_restarts_and_screens_each_image_once(bundle: Path, parts: Path, tmp_path: Path) -> None:
    hot, out, done = tmp_path / "hot", tmp_path / "out", tmp_path / "done"
    hot.mkdir()
    (hot / "already.png").write_bytes((parts / "p0.png").read_bytes())  # there before the watch: screened first
    watcher = _watcher(bundle, hot, out, done)
    try:
        _write(parts, hot, 0, 12)
        _wait_for_records(out, 13)
        os.killpg(watcher.pid, signal.SIGKILL)  # mid-stream, as a power cut
        watcher.wait(timeout=10)
        _write(parts, hot, 12, 6)  # arriving while nothing watches
        (hot / "broken.png").write_bytes(b"\x89PNG not really")
        watcher = _watcher(bundle, hot, out, done)
        _write(parts, hot, 18, 6)
        _wait_for_records(out, 1 + 24 + 1)
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        printed, said = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, said
    screened = [json.loads(line)["path"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    expected = {str(hot / "already.png"), *(str(hot / f"part{k:03d}.png") for k in range(24))}
    assert sorted(screened) == sorted(expected)  # each once: none twice after the kill, none lost
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["path"] for e in errors] == [str(hot / "broken.png")]
    assert {p.name for p in done.iterdir()} == {Path(p).name for p in expected}  # moved once screened
    assert [p.name for p in hot.iterdir()] == ["broken.png"]  # an error stays where it was
    assert "SIGTERM: finishing the images in hand" in said
    assert "latency from written to verdict: p50" in printed
    # The killed watch never closed its minute; the second saw the 12 new images and the broken one.
    minutes = [json.loads(line) for line in (out / "watch.jsonl").read_text().splitlines()]
    assert sum(m["images"] for m in minutes) == 12 and sum(m["errors"] for m in minutes) == 1
    assert all("latency_p95_ms" in m for m in minutes if m["images"])


def test_a_tracked_watch_keeps_its_minutes_in_one_mlflow_run(
    bundle: Path, parts: Path, mlflow_server, tmp_path: Path
) -> None:
    """--track: the watch's own run, its minute's figures (the last minute is closed when the watch stops) and its
    totals as metrics, the settings as params, the results files as artifacts."""
    from mlflow.tracking import MlflowClient

    hot, out = tmp_path / "hot", tmp_path / "out"
    hot.mkdir()
    command = [sys.executable, "-m", "pipeline.cli", "predict", str(hot), "--model", str(bundle), "--out", str(out),
               "--watch", "--no-progress", "--conf", "0.0001", "--track", "--experiment", "watch-test",
               "--tracking-uri", mlflow_server.uri]  # fmt: skip
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        _write(parts, hot, 0, 5)
        _wait_for_records(out, 5)
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        printed, said = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, said
    run_id = printed.split("MLflow run: ")[1].split()[0]
    run = MlflowClient(mlflow_server.uri).get_run(run_id)
    assert run.data.tags["pipeline.watch"] == "true" and run.data.tags["pipeline.kind"] == "prediction"
    assert run.data.metrics["images"] == 5 and run.data.metrics["total_images"] == 5
    assert run.data.metrics["latency_p95_ms"] > 0 and run.data.metrics["total_latency_p95_ms"] > 0
    assert run.data.params["source"] == str(hot)
    artifacts = {a.path for a in MlflowClient(mlflow_server.uri).list_artifacts(run_id)}
    assert {"summary.csv", "run.json"} <= artifacts


def test_a_watch_checks_each_window_of_images_for_drift(
    bundle: Path, parts: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """--drift-window 20 against a baseline of the same parts: the first window is like it, the second (the same
    parts under a lamp 40% brighter) is not, and watch.jsonl says so window by window."""
    import shutil

    from pipeline.drift import Baseline
    from pipeline.inference import predict
    from pipeline.inference.screen import Screen

    seen = tmp_path / "seen"  # the baseline: what the network saw of 24 parts (each of the 8, three times)
    seen.mkdir()
    for k in range(24):
        shutil.copyfile(parts / f"p{k % 8}.png", seen / f"s{k:02d}.png")
    recorded = predict(seen, str(bundle), tmp_path / "recorded", thresholds={"default": 0.0001}, progress=False)
    screen_folder = tmp_path / "screen"
    screen_folder.mkdir()
    shutil.copyfile(recorded.out / "drift_sample.npz", screen_folder / "drift_baseline.npz")
    baseline = Baseline.load(screen_folder / "drift_baseline.npz")
    named = {"file": "drift_baseline.npz", "sha256": baseline.digest(), "images": 24}
    Screen({"default": 0.0001}, "untrained", "parts", "seen", "2026-12-06T00:00:00+00:00",
           drift_baseline=named).write(screen_folder / "screen.json")  # fmt: skip
    with_baseline = export_bundle(
        str(bundle.parent / "untrained.pt"), tmp_path / "bundle", "onnx", screen=screen_folder / "screen.json"
    ).out
    brighter = tmp_path_factory.mktemp("brighter")
    for image in sorted(parts.iterdir()):
        cv2.imwrite(str(brighter / image.name), cv2.convertScaleAbs(cv2.imread(str(image)), alpha=1.4))

    hot, out = tmp_path / "hot", tmp_path / "out"
    hot.mkdir()
    command = [sys.executable, "-m", "pipeline.cli", "predict", str(hot), "--model", str(with_baseline), "--out",
               str(out), "--watch", "--no-progress", "--conf", "0.0001", "--drift-window", "20"]  # fmt: skip
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        _write(parts, hot, 0, 20)
        _wait_for_records(out, 20)
        _write(brighter, hot, 20, 20)
        _wait_for_records(out, 40)
    finally:
        os.killpg(watcher.pid, signal.SIGTERM)
        _, said = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, said
    lines = [json.loads(line) for line in (out / "watch.jsonl").read_text().splitlines()]
    windows = [line for line in lines if "drift_window" in line]
    assert [w["drift_window"] for w in windows] == [1, 2] and [w["images"] for w in windows] == [20, 20]
    assert [w["drifted"] for w in windows] == [False, True], [w["line"] for w in windows]
    assert windows[1]["p_holm"]["brightness"] < 0.05 and "brightness" in windows[1]["line"]
    assert "window 2: drift: " in said
    assert json.loads((out / "drift.json").read_text())["images"] == 40  # the whole watch, at its end

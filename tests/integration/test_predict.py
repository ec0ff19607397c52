"""`predict` with a really trained model on real image files: every format, bad files, ultralytics'
own results, a kill and a rerun, a large folder in flat memory, and a model from the MLflow registry."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.synth import synthesize
from pipeline.data.tiles import tile_grid
from pipeline.inference import predict
from pipeline.inference.backends import racers
from pipeline.inference.tiling import merge_tiles
from pipeline.training.run import train
from tests.helpers.configs import tiny_config, untracked_training

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """400 synthetic 64-px defect images: enough for 10 epochs to learn them (as in test_learning)."""
    return synthesize(tmp_path_factory.mktemp("predict-data"), images=400, seed=1, size=64).data_yaml


@pytest.fixture(scope="module")
def weights(learned: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A YOLO11n trained on `learned` until it finds the defects, untracked."""
    recipe = {"epochs": 10, "batch": 8, "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0}
    return untracked_training(learned, tmp_path_factory.mktemp("predict-model"), **recipe).best_weights


def _records(out: Path, name: str = "predictions.jsonl") -> list[dict]:
    path = out / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _mixed_folder(root: Path, synth_data: Path) -> tuple[set[str], dict[str, str]]:
    """Real defect images saved in every format, nested, plus broken files: (good paths, bad path -> reason)."""
    sources = sorted((synth_data.parent / "images" / "val").glob("*.png"))[:8]
    images = [cv2.imread(str(p)) for p in sources]
    good = {}
    layouts = ["a.jpg", "b.jpeg", "c.png", "sub/d.bmp", "sub/e.tif", "sub/deeper/f.tiff", "g.webp", "sub/h_grey.png"]
    for name, image in zip(layouts, images, strict=True):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if "grey" in name:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        if name.endswith(".tiff"):  # 16-bit grey, as line-scan cameras write
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
        assert cv2.imwrite(str(path), image)
        good[str(path)] = name
    jpg = (root / "a.jpg").read_bytes()
    bad = {
        root / "sub" / "empty.jpg": (b"", "empty file"),
        root / "cut.jpg": (jpg[: len(jpg) // 2], "truncated JPEG"),
        root / "sub" / "notes.png": (b"inspection notes, not pixels", "not an image"),
    }
    for path, (data, _) in bad.items():
        path.write_bytes(data)
    (root / "readme.txt").write_text("ignored: not an image name")
    return set(good), {str(p): reason for p, (_, reason) in bad.items()}


def test_a_nested_folder_of_every_format_with_broken_files(weights: Path, synth_data: Path, tmp_path: Path) -> None:
    good, bad = _mixed_folder(tmp_path / "line", synth_data)
    out = tmp_path / "results"
    result = subprocess.run(
        [*CLI, "predict", str(tmp_path / "line"), "--model", str(weights), "--out", str(out), "--batch", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]  # something failed, and the exit code says so
    assert "predicted 8 images, 3 failed" in result.stdout
    predictions = _records(out)
    assert Counter(r["path"] for r in predictions) == Counter(good)  # each valid image exactly once
    errors = {r["path"]: r["reason"] for r in _records(out, "errors.jsonl")}
    assert set(errors) == set(bad)
    for path, reason in bad.items():
        assert reason in errors[path]
    tiff = next(r for r in predictions if r["path"].endswith(".tiff"))
    assert (tiff["width"], tiff["height"]) == (64, 64)
    summary = (out / "summary.csv").read_text().splitlines()
    assert len(summary) == 1 + 8 and summary[0].startswith("path,width,height,detections,")
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == sum(len(r["detections"]) for r in predictions)


def test_results_equal_ultralytics_predict(weights: Path, learned: Path, tmp_path: Path) -> None:
    from ultralytics import YOLO

    folder = learned.parent / "images" / "val"
    # 16 batches of 5 at runtime auto: the first raced on the installed racers in turn (PyTorch, ONNX Runtime,
    # OpenVINO), the rest on the fastest, so the results hold every racer's detections.
    result = predict(folder, str(weights), tmp_path / "ours", conf=0.05, batch=5, progress=False)
    assert result.runtime in racers(available=True)
    ours = {Path(r["path"]).name: r for r in _records(tmp_path / "ours")}
    reference = YOLO(str(weights)).predict(source=str(folder), stream=True, batch=1, conf=0.05, verbose=False)
    compared = boxes = 0
    for result in reference:
        mine = ours[Path(result.path).name]["detections"]
        theirs = result.boxes
        assert len(mine) == len(theirs), result.path
        for d, xyxy, score, cls in zip(mine, theirs.xyxy.tolist(), theirs.conf.tolist(), theirs.cls.tolist()):
            assert max(abs(a - b) for a, b in zip(d["box"], xyxy)) <= 1.0
            assert abs(d["score"] - score) <= 1e-3 and d["class_id"] == int(cls)
            boxes += 1
        compared += 1
    assert compared == len(ours) == 80 and boxes > 40


def _predict_into(folder: Path, weights: Path, out: Path) -> Path:
    predict(folder, str(weights), out, conf=0.05, batch=5, progress=False)
    return out


def _tiny_folder(root: Path, count: int, size: int = 32) -> None:
    rng = np.random.default_rng(0)
    for i in range(count):
        sub = root / f"{i // 500:03d}"
        sub.mkdir(parents=True, exist_ok=True)
        image = np.full((size, size, 3), 90, np.uint8)
        x, y = rng.integers(2, size - 12, 2)
        image[y : y + 8, x : x + 3] = 230  # a small bright scratch
        cv2.imwrite(str(sub / f"{i:05d}.png"), image)


def test_a_killed_run_resumes_with_no_duplicates_and_no_gaps(weights: Path, tmp_path: Path) -> None:
    _tiny_folder(tmp_path / "frames", 1500)
    out = tmp_path / "results"
    command = [*CLI, "predict", str(tmp_path / "frames"), "--model", str(weights), "--out", str(out)]
    command += ["--batch", "4", "--workers", "1", "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(_records(out)) < 100 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    first = len(_records(out))
    assert 100 <= first < 1500, "the kill should land mid-run"

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "done by an earlier run" in again.stdout
    records = _records(out)  # every line parses
    paths = Counter(r["path"] for r in records)
    expected = {str(p) for p in (tmp_path / "frames").rglob("*.png")}
    assert set(paths) == expected and max(paths.values()) == 1  # no gaps, no duplicates
    assert sorted(r["image_id"] for r in records) == list(range(1, 1501))
    assert len((out / "summary.csv").read_text().splitlines()) == 1501


def _peak_rss_mb(folder: Path, weights: Path, out: Path) -> float:
    """Peak resident memory (MB) of a predict process over ``folder``."""
    code = (
        "import resource, sys; from pipeline.inference import predict; "
        f"predict({str(folder)!r}, {str(weights)!r}, {str(out)!r}, batch=16, progress=False); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return float(done.stdout.strip().splitlines()[-1])


def test_memory_stays_flat_from_a_thousand_to_ten_thousand_images(weights: Path, tmp_path: Path) -> None:
    _tiny_folder(tmp_path / "small", 1000, size=24)
    _tiny_folder(tmp_path / "large", 10000, size=24)
    small = _peak_rss_mb(tmp_path / "small", weights, tmp_path / "out-small")
    large = _peak_rss_mb(tmp_path / "large", weights, tmp_path / "out-large")
    assert len(_records(tmp_path / "out-large")) == 10000
    assert large - small < 40, f"peak memory grew from {small:.0f} MB to {large:.0f} MB with 10x the images"


def test_a_model_by_registry_alias_from_a_real_server(synth_data: Path, mlflow_server, tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 1},
        tracking={"uri": mlflow_server.uri, "experiment": "predict-alias", "system_metrics": False},
    )
    trained = train(config)
    mlflow.set_tracking_uri(mlflow_server.uri)
    try:
        version = mlflow.register_model(f"runs:/{trained.run_id}/model", "surface-defects")
    finally:
        mlflow.set_tracking_uri(None)
    MlflowClient(mlflow_server.uri).set_registered_model_alias("surface-defects", "champion", version.version)

    folder = synth_data.parent / "images" / "val"
    by_alias = predict(
        folder,
        "models:/surface-defects@champion",
        tmp_path / "alias",
        conf=0.001,
        tracking_uri=mlflow_server.uri,
        track=True,
    )
    assert by_alias.run_id == trained.run_id and by_alias.images == 24
    # --track: the summary is a run of its own, tagged with the model's run.
    logged = MlflowClient(mlflow_server.uri).get_run(by_alias.tracking_run_id)
    assert logged.data.tags["pipeline.model_run_id"] == trained.run_id and logged.info.status == "FINISHED"
    assert logged.data.metrics["images"] == 24 and logged.data.metrics["total_errors"] == 0
    assert logged.data.params["model"] == "models:/surface-defects@champion"
    artifacts = {a.path for a in MlflowClient(mlflow_server.uri).list_artifacts(by_alias.tracking_run_id)}
    assert {"summary.csv", "run.json"} <= artifacts
    local = predict(folder, str(trained.best_weights), tmp_path / "local", conf=0.001, progress=False)
    assert sum(by_alias.detections.values()) > 0 and by_alias.detections == local.detections
    assert [r["detections"] for r in _records(tmp_path / "alias")] == [
        r["detections"] for r in _records(tmp_path / "local")
    ]


def _inside(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union


def test_tiling_reports_objects_cut_by_tile_borders_once_with_their_boxes(
    weights: Path, learned: Path, tmp_path: Path
) -> None:
    # An image the model finds things in, inside a larger frame: 64-px tiles at half overlap hold it whole
    # in the tile at (32, 32), cut it in the tiles around that one, and hold objects of its right or lower
    # half whole in a neighbour too. Which view of an object a trained model scores best differs between
    # trainings (they are not bit-identical across machines), so the test predicts every tile alone and
    # asserts what tiling promises for any model: the record is the merge of those views, and each object
    # the whole image shows stays represented by a whole view at least as sure, never by a piece.
    # Whether a model also finds the pieces of an object differs between trainings too: of the five images it is
    # surest of, the first whose tiles show a piece.
    whole = _records(_predict_into(learned.parent / "images" / "val", weights, tmp_path / "whole"))
    surest = sorted((r for r in whole if r["detections"]), key=lambda r: -r["detections"][0]["score"])[:5]
    options = {"conf": 0.05, "runtime": "torch", "progress": False}
    for attempt, best in enumerate(surest):
        image = cv2.imread(best["path"])
        frame = np.full((192, 256, 3), np.median(image, axis=(0, 1)), np.uint8)
        frame[32:96, 32:96] = image
        views, cut = _tile_views(frame, weights, tmp_path / f"views{attempt}", options)
        if any(cut):
            break
    assert any(cut)  # there were pieces to merge
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "frame.png"), frame)

    result = predict(tmp_path / "frames", str(weights), tmp_path / "tiled", tile=64, overlap=0.5, **options)
    assert result.images == 1
    (record,) = _records(tmp_path / "tiled")
    merged = record["detections"]
    assert len(merged) < sum(len(v) for v, _ in views)  # and repeats
    expected = merge_tiles([(v, tile) for v, tile in views], frame.shape[1], frame.shape[0])
    assert [d["class_id"] for d in merged] == [int(c) for c in expected[:, 5]]
    for d, row in zip(merged, expected, strict=True):
        assert d["box"] == pytest.approx(row[:4].tolist(), abs=0.5) and d["score"] == pytest.approx(row[4], abs=1e-3)

    # Boxes touching the small image's edge touch the tile's edge too, where nothing tells whole from cut.
    sure = [d for d in best["detections"] if d["score"] > 0.5 and all(2 < v < 62 for v in d["box"])]
    assert sure
    for found in sure:  # whole in the tile at (32, 32): kept, or covered by a surer whole view of its class
        box = [v + 32 for v in found["box"]]
        assert any(
            d["class_id"] == found["class_id"]
            and d["score"] >= found["score"] - 1e-3
            and (_inside(box, d["box"]) >= 0.5 or _iou(box, d["box"]) >= 0.7)
            for d in merged
        ), (found, merged)


def _tile_views(
    frame: np.ndarray, weights: Path, out: Path, options: dict
) -> tuple[list[tuple[np.ndarray, tuple[int, int, int, int]]], list[bool]]:
    """Every 64-px tile of ``frame`` (half overlap) predicted alone: its detections as rows (x1, y1, x2, y2,
    score, class) in the frame's pixels, with the tile; and for each detection whether a tile border cuts it."""
    height, width = frame.shape[:2]
    folder = out / "tiles"
    folder.mkdir(parents=True)
    tiles = tile_grid(width, height, 64, 0.5)
    for i, (x1, y1, x2, y2) in enumerate(tiles):
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame[y1:y2, x1:x2])
    predict(folder, str(weights), out / "results", **options)
    views, cut = [], []
    for record in _records(out / "results"):
        x1, y1, x2, y2 = tile = tiles[int(Path(record["path"]).stem)]
        rows = [
            [b[0] + x1, b[1] + y1, b[2] + x1, b[3] + y1, d["score"], d["class_id"]]
            for d in record["detections"]
            for b in [d["box"]]
        ]
        views.append((np.array(rows, np.float32).reshape(-1, 6), tile))
        for r in rows:  # within 2 px of a border the tile shares with another (the merge's margin at 64 px)
            cut.append(
                (x1 > 0 and r[0] <= x1 + 2)
                or (y1 > 0 and r[1] <= y1 + 2)
                or (x2 < width and r[2] >= x2 - 2)
                or (y2 < height and r[3] >= y2 - 2)
            )
    return views, cut


def _same_records(these: list[dict], those: list[dict]) -> None:
    assert [(r["image_id"], r["path"], r["width"], r["height"]) for r in these] == [
        (r["image_id"], r["path"], r["width"], r["height"]) for r in those
    ]
    for this, that in zip(these, those, strict=True):
        assert [d["class"] for d in this["detections"]] == [d["class"] for d in that["detections"]], this["path"]
        for mine, theirs in zip(this["detections"], that["detections"], strict=True):
            assert mine["score"] == pytest.approx(theirs["score"], abs=1e-4)
            assert mine["box"] == pytest.approx(theirs["box"], abs=0.05)


def test_the_ray_engine_writes_what_the_local_engine_writes(weights: Path, learned: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    folder = tmp_path / "line"
    for image in sorted((learned.parent / "images" / "val").glob("*.png"))[:30]:
        target = folder / ("sub" if image.stem.endswith(("1", "3")) else "") / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(image.read_bytes())
    (folder / "sub" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")

    local = predict(folder, str(weights), tmp_path / "local", conf=0.05, batch=8, progress=False)
    on_ray = predict(folder, str(weights), tmp_path / "ray", conf=0.05, batch=8, engine="ray", progress=False)
    assert (on_ray.images, on_ray.errors) == (local.images, local.errors) == (30, 1)
    # Same lines in the same order. The numbers agree to float rounding, not bit for bit: auto races PyTorch
    # and ONNX Runtime on the first batches, and Ray's actors cut the batches (and set threads) their own way.
    _same_records(_records(tmp_path / "ray"), _records(tmp_path / "local"))
    assert _records(tmp_path / "ray", "errors.jsonl") == _records(tmp_path / "local", "errors.jsonl")
    ray_rows, local_rows = (
        list(csv.DictReader((tmp_path / side / "summary.csv").read_text().splitlines())) for side in ("ray", "local")
    )
    assert [{**r, "max_score": None} for r in ray_rows] == [{**r, "max_score": None} for r in local_rows]
    assert [float(r["max_score"]) for r in ray_rows] == pytest.approx(
        [float(r["max_score"]) for r in local_rows], abs=2e-4
    )
    again = predict(folder, str(weights), tmp_path / "ray", conf=0.05, batch=8, engine="ray", progress=False)
    assert (again.images, again.skipped) == (0, 31)


def test_annotated_images_and_crops(weights: Path, learned: Path, tmp_path: Path) -> None:
    folder = learned.parent / "images" / "val"
    result = predict(folder, str(weights), tmp_path / "out", conf=0.25, save_images=True, save_crops=True)
    records = _records(tmp_path / "out")
    annotated = sorted((tmp_path / "out" / "annotated").rglob("*.jpg"))
    assert len(annotated) == result.images == 80
    assert cv2.imread(str(annotated[0])).shape == (64, 64, 3)
    crops = list((tmp_path / "out" / "crops").rglob("*.jpg"))
    assert len(crops) == sum(len(r["detections"]) for r in records) > 0
    assert {c.relative_to(tmp_path / "out" / "crops").parts[0] for c in crops} <= {"scratch", "pit", "patch"}
    assert not list((tmp_path / "out").rglob(".*tmp*"))  # every file renamed into place

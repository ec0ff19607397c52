"""Tiles run at the scale the model learned: a model trained on downscaled images finds as much in tiles as whole.

The model trains at 64 px on 128-px synthetic images, so it learns objects at half their size, and its
checkpoint records that (the images' typical side). The test frames are 4 x 4 mosaics of such images
(512 px) with their true boxes. Cut into 256-px tiles, they run at 128 px by default: the learned
half scale. The reference is each image of the mosaics predicted whole, as the model was trained.
Run at the model's 64 px instead (what tiling did before the scale was kept), every defect would
look half as large as in training.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.checkpoints import training_image_side
from pipeline.data.synth import render
from pipeline.inference import predict
from pipeline.training.run import TrainResult
from pipeline.yolo_env import configure_ultralytics

pytestmark = pytest.mark.slow
CELL, CELLS = 128, 4  # each frame: CELLS x CELLS synthetic images of CELL px
FRAMES = 8


@pytest.fixture(scope="module")
def weights(downscaled_training: TrainResult) -> Path:
    """Trained at 64 px on 400 synthetic 128-px images (tests/conftest.py)."""
    return downscaled_training.best_weights


Truth = dict[str, list[tuple[int, float, float, float, float]]]  # image path -> (class, x1, y1, x2, y2)


def _cells_and_frames(folder: Path) -> tuple[Truth, Truth]:
    """Synthetic images (seed 99, unseen in training) one by one, and the same images as mosaics."""
    cells, frames = {}, {}
    (folder / "cells").mkdir(parents=True)
    (folder / "frames").mkdir()
    for k in range(FRAMES):
        mosaic = np.zeros((CELLS * CELL, CELLS * CELL, 3), np.uint8)
        boxes = []
        for row in range(CELLS):
            for col in range(CELLS):
                image, found = render(99, k * 100 + row * CELLS + col, CELL)
                path = folder / "cells" / f"{k}-{row}-{col}.png"
                cv2.imwrite(str(path), image)
                cells[str(path)] = [(b.cls, b.x0, b.y0, b.x1 + 1, b.y1 + 1) for b in found]
                mosaic[row * CELL : (row + 1) * CELL, col * CELL : (col + 1) * CELL] = image
                dx, dy = col * CELL, row * CELL
                boxes += [(c, x1 + dx, y1 + dy, x2 + dx, y2 + dy) for c, x1, y1, x2, y2 in cells[str(path)]]
        path = folder / "frames" / f"{k}.png"
        cv2.imwrite(str(path), mosaic)
        frames[str(path)] = boxes
    return cells, frames


def _iou(a: tuple[float, ...], b: list[float]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - width * height
    return width * height / union


def _recall(out: Path, truth: Truth) -> float:
    """Objects found (same class, IoU >= 0.5, each detection used once) over all true objects."""
    found = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        found[record["path"]] = record["detections"]
    hits = total = 0
    for path, boxes in truth.items():
        detections = sorted(found[path], key=lambda d: -d["score"])
        used: set[int] = set()
        for cls, *box in boxes:
            total += 1
            match = next(
                (
                    i
                    for i, d in enumerate(detections)
                    if i not in used and d["class_id"] == cls and _iou(tuple(box), d["box"]) >= 0.5
                ),
                None,
            )
            if match is not None:
                used.add(match)
                hits += 1
    return hits / total


def test_tiles_of_a_model_trained_on_downscaled_images_keep_its_recall(
    weights: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configure_ultralytics()
    from ultralytics import YOLO

    assert training_image_side(YOLO(str(weights))) == CELL  # recorded in the checkpoint by the training
    cells, frames = _cells_and_frames(tmp_path)
    assert sum(map(len, frames.values())) > 150  # enough objects for recall to mean something

    whole = predict(tmp_path / "cells", str(weights), tmp_path / "whole", conf=0.25, progress=False)
    with caplog.at_level("INFO", logger="pipeline.inference"):
        tiled = predict(tmp_path / "frames", str(weights), tmp_path / "tiled", conf=0.25, tile=256, overlap=0.25)
    at_model_size = predict(
        tmp_path / "frames", str(weights), tmp_path / "unscaled", conf=0.25, tile=256, overlap=0.25, imgsz=64
    )

    expected = (
        "256-px tiles run at 128 px: the scale the model learned, 0.50x (trained at 64 px on images of 128 px); "
        "--imgsz overrides"
    )
    assert (whole.imgsz, whole.scale) == (64, "")  # images like the training ones: nothing to say
    assert tiled.imgsz == 128 and tiled.scale == expected
    assert f"predict: {expected}" in caplog.messages
    assert at_model_size.scale.startswith("--imgsz 64: 256-px tiles run at 0.25x, not the 0.50x the model learned")
    recall_whole, recall_tiled = _recall(tmp_path / "whole", cells), _recall(tmp_path / "tiled", frames)
    recall_unscaled = _recall(tmp_path / "unscaled", frames)
    assert recall_whole >= 0.15, recall_whole  # the model finds things: the comparison means something
    assert abs(recall_tiled - recall_whole) <= 0.05, (recall_tiled, recall_whole)
    assert recall_unscaled < recall_whole - 0.1, (recall_unscaled, recall_whole)  # the scale is what keeps it

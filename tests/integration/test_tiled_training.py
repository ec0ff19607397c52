"""A training on native-scale tiles (``data.tile``): it trains on the cached tiles, its checkpoint records the tile
side as its images' side, and predict then runs a large image's tiles at the scale the model learned.

256-px synthetic images cut into 128-px tiles, trained at 64 px: the model learns objects at half their
size, from tiles of 128 px. Predict cuts a 256-px image into 128-px tiles (the training's, recorded in the
checkpoint) and runs them at 64 px by default; asked for whole images (`--tile 0`), the same image runs at a
quarter of its size, and one line says `--tile 128` keeps the scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import pytest

from pipeline.checkpoints import training_image_side, training_tile
from pipeline.data.synth import render, synthesize
from pipeline.inference import predict
from pipeline.training import train
from pipeline.yolo_env import configure_ultralytics
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow


def _tiled_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tile: dict, **sections: dict) -> tuple[Path, Any]:
    """Twelve 256-px synthetic images (ten train) and a 1-epoch, 64-px, untracked training on ``tile``'s tiles."""
    monkeypatch.setenv("YOLO_PIPELINE_CACHE", str(tmp_path / "cache"))
    data_yaml = synthesize(tmp_path / "data", images=12, seed=0, size=256).data_yaml
    config = tiny_config(
        data_yaml,
        tmp_path / "runs",
        data={"tile": {"overlap": 0.2, **tile}},
        train={"epochs": 1, "imgsz": 64},
        tracking={"enabled": False},
        gradients={"enabled": False},
        **sections,
    )
    return data_yaml, config


def test_a_tiled_training_records_the_tile_side_and_predict_tiles_at_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    data_yaml, config = _tiled_training(tmp_path, monkeypatch, {"size": 128, "min_visible": 0.5, "backgrounds": 0.1})
    result = train(config)

    tiles = next((tmp_path / "cache" / "tiles").glob("[!.]*"))
    card = json.loads((result.save_dir / "data" / "card.json").read_text())
    counts = card["tiles"]["splits"]["train"]
    assert counts["images"] == counts["cut"] == 10 and counts["tiles"] > 10 and card["train_image_side"] == 128
    note = next(note for note in result.notes if note.startswith("data.tile: "))
    assert note.startswith(f"data.tile: {counts['tiles']} tiles of 128 px from 10 images (overlap 0.2): ")
    assert note.endswith(f"; made in {tiles}")
    trained_on = (result.save_dir / "data.yaml").read_text()
    assert str(tiles / "images" / "train") in trained_on and str(data_yaml.parent / "images" / "val") in trained_on

    configure_ultralytics()
    from ultralytics import YOLO

    trained = YOLO(str(result.best_weights))
    assert training_image_side(trained) == 128  # the tile, at native scale
    assert training_tile(trained) == (128, 0.2)  # and how the training data was cut

    frames = tmp_path / "frames"
    frames.mkdir()
    cv2.imwrite(str(frames / "board.png"), render(99, 0, 256)[0])
    options = {"runtime": "torch", "progress": False}
    with caplog.at_level("INFO", logger="pipeline.inference"):
        tiled = predict(frames, str(result.best_weights), tmp_path / "tiled", **options)  # no --tile: as trained
    learned = "the scale the model learned, 0.50x (trained at 64 px on images of 128 px); --imgsz overrides"
    assert (tiled.imgsz, tiled.scale) == (64, f"128-px tiles run at 64 px: {learned}")
    assert "predict: 128-px tiles (overlap 0.2), as the model was trained (data.tile); --tile 0: whole images" in (
        caplog.messages
    )
    assert f"predict: {tiled.scale}" in caplog.messages
    settings = json.loads((tmp_path / "tiled" / "run.json").read_text())
    assert (settings["tile"], settings["overlap"]) == (128, 0.2)
    record = json.loads((tmp_path / "tiled" / "predictions.jsonl").read_text().splitlines()[0])
    assert (record["width"], record["height"]) == (256, 256)

    whole = predict(frames, str(result.best_weights), tmp_path / "whole", tile=0, **options)
    assert (whole.imgsz, whole.scale) == (
        64,
        "images of 256 px (the first one) run at 64 px, 0.25x: objects look 2.00x smaller than in training "
        "(trained at 64 px on images of 128 px); --imgsz 128 or --tile 128 keeps the scale",
    )

    # Its bundle tiles the same way on a line PC: the tiles and the scale travel in screen.json.
    from pipeline.export.bundles import export_bundle

    bundle = export_bundle(str(result.best_weights), tmp_path / "bundle", "onnx").out
    section = json.loads((bundle / "screen.json").read_text())["bundle"]
    assert (section["tile"], section["training_image_side"], section["imgsz"]) == (
        {"size": 128, "overlap": 0.2},
        128,
        64,
    )
    from_bundle = predict(frames, str(bundle), tmp_path / "from-bundle", progress=False)
    assert (from_bundle.imgsz, from_bundle.scale) == (tiled.imgsz, tiled.scale)
    assert json.loads((tmp_path / "from-bundle" / "run.json").read_text())["tile"] == 128
    bundled = json.loads((tmp_path / "from-bundle" / "predictions.jsonl").read_text().splitlines()[0])
    assert sorted(d["class"] for d in bundled["detections"]) == sorted(d["class"] for d in record["detections"])


def test_a_training_with_cut_boxes_ignored_leaves_them_out_of_the_loss_through_its_augmentation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # mosaic: the regions move with the pixels through mosaic, the affine and the flips
    _, config = _tiled_training(tmp_path, monkeypatch, {"size": 96, "cut_boxes": "ignore"}, augment={"mosaic": 1.0})
    with caplog.at_level("INFO", logger="pipeline.training"):
        result = train(config)

    counts = json.loads((result.save_dir / "data" / "card.json").read_text())["tiles"]["splits"]["train"]
    assert counts["ignored"] > 0 and counts["masked"] == 0
    tiles = next((tmp_path / "cache" / "tiles").glob("[!.]*"))
    assert sum(len(f.read_text().splitlines()) for f in (tiles / "ignore" / "train").glob("*.txt")) == counts["ignored"]
    assert f"train: {counts['ignored']} parts of boxes cut by a tile's border ignored by the loss" in " ".join(
        caplog.messages
    )
    left_out = next(m for m in caplog.messages if m.startswith("train: the loss left "))
    assert int(left_out.split()[4]) > 0  # anchors taken out of the background: the regions reached the loss
    assert result.best_weights.exists()

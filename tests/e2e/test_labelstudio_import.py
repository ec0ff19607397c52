"""`yolo-pipeline data import EXPORT.json --format labelstudio` as a user runs it: reviewed tasks in, YOLO out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

CLI = [sys.executable, "-m", "pipeline.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def image(path: Path, width: int, height: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))


def rect(label: str, x: float, y: float, w: float, h: float, width: int, height: int) -> dict:
    """A rectangle in pixels as Label Studio exports it: percent of the image."""
    value = {"x": 100 * x / width, "y": 100 * y / height, "width": 100 * w / width, "height": 100 * h / height}
    return {
        "id": label[:2],
        "type": "rectanglelabels",
        "original_width": width,
        "original_height": height,
        "value": {**value, "rotation": 0, "rectanglelabels": [label]},
    }


def test_import_a_label_studio_export(tmp_path: Path) -> None:
    image(tmp_path / "review" / "images" / "a.png", 80, 40)
    image(tmp_path / "uploads" / "b.png", 50, 50)
    image(tmp_path / "review" / "images" / "c.png", 30, 30)
    tasks = [
        {
            "id": 1,
            "data": {"image": "images/a.png"},
            "annotations": [{"id": 9, "result": [rect("pit", 8, 4, 16, 8, 80, 40), rect("crack", 1, 1, 4, 4, 80, 40)]}],
        },
        {
            "id": 2,
            "data": {"image": "/data/upload/3/0f0e0d0c-b.png"},
            "annotations": [{"result": [rect("scratch", 0, 10, 50, 5, 50, 50)]}],
        },
        {"id": 3, "data": {"image": "images/c.png"}, "annotations": [{"result": []}]},  # reviewed: no defect
        {"id": 4, "data": {"image": "images/gone.png"}, "annotations": [{"result": []}]},
    ]
    export = tmp_path / "review" / "export.json"
    export.write_text(json.dumps(tasks))
    result = run(
        "data", "import", str(export), "--format", "labelstudio", "--images", str(tmp_path / "uploads"),
        "--classes", "scratch,pit", "--name", "reviewed", "--out", str(tmp_path / "datasets"), "--split", "train=1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "datasets" / "reviewed"
    labels = {p.name: p.read_text().splitlines() for p in (out / "labels" / "train").glob("*.txt")}
    assert labels == {
        "a.txt": ["1 0.200000 0.200000 0.200000 0.200000"],  # pit: centre (16, 8) of 80 x 40, 16 x 8 px
        "b.txt": ["0 0.500000 0.250000 1.000000 0.100000"],
        "c.txt": [],  # a background image: an empty label file
    }
    assert sorted(p.name for p in (out / "images" / "train").iterdir()) == ["a.png", "b.png", "c.png"]
    lines = result.stdout.splitlines()
    assert f"imported 3 images, 2 boxes into {out} (train 3)" in lines
    assert "boxes: scratch 1, pit 1" in lines
    assert any(
        line.startswith("validation: 3 images, 2 boxes, 1 backgrounds; 1 images skipped, 1 boxes dropped")  # c.png
        for line in lines
    )
    assert (
        f"  {export}: task 4: image images/gone.png: not found (looked under {export.parent} or {tmp_path / 'uploads'} for a file named gone.png) (skipped image)"
        in lines
    )
    assert f"  {export}: task 1 result cr: label 'crack' is not in the class list (--classes) (dropped box)" in lines
    card = json.loads((out / "card.json").read_text())
    assert card["format"] == "labelstudio" and card["splits"]["train"]["backgrounds"] == 1


def test_a_folder_for_images_goes_with_labelstudio_only(tmp_path: Path) -> None:
    (tmp_path / "instances_train.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    result = run("data", "import", "instances_train.json", "--name", "x", "--images", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: --images {tmp_path}: a folder of images goes with --format labelstudio, not coco (a number of "
        "images is a subset size)"
    )
    (tmp_path / "export.json").write_text("[]")
    result = run("data", "import", "export.json", "--name", "x", "--images", "nowhere")
    assert (result.returncode, result.stderr.strip()) == (2, "error: --images nowhere: no such folder")

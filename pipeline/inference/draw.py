"""Annotated copies of images and crops of their detections, written whole or not at all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.data.palette import class_colour
from pipeline.files import replaced_whole


def output_name(path: str) -> Path:
    """Where an image's derived files go below an output folder: its path, made relative and safe."""
    parts = [part for part in Path(path).parts if part not in {"/", "\\"} and not part.endswith(":\\")]
    return Path(*["__" if part == ".." else part for part in parts])


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Encoded here and written by Python: a name that is not UTF-8 is the file system's business, not OpenCV's.
    ok, data = cv2.imencode(path.suffix, image)
    if not ok:
        raise OSError(f"{path}: could not be encoded")
    with replaced_whole(path) as tmp:  # decoding threads and other processes never share one
        tmp.write_bytes(data.tobytes())


def write_annotated(folder: Path, path: str, image: np.ndarray, detections: list[dict[str, Any]]) -> None:
    canvas = image.copy()
    thickness = max(1, round(sum(image.shape[:2]) / 600))
    for d in detections:
        x1, y1, x2, y2 = (round(v) for v in d["box"])
        colour = class_colour(d["class_id"])
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
        label = f"{d['class']} {d['score']:.2f}"
        cv2.putText(canvas, label, (x1, max(y1 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thickness, colour, thickness)
    _write((folder / "annotated" / output_name(path)).with_suffix(".jpg"), canvas)


def write_crops(folder: Path, path: str, image: np.ndarray, detections: list[dict[str, Any]]) -> None:
    height, width = image.shape[:2]
    stem = output_name(path).with_suffix("")
    for k, d in enumerate(detections):
        x1, y1, x2, y2 = d["box"]
        left, top = max(0, int(x1)), max(0, int(y1))
        right, bottom = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
        if right > left and bottom > top:
            target = folder / "crops" / d["class"] / stem.parent / f"{stem.name}_{k}.jpg"
            _write(target, image[top:bottom, left:right])

"""A labelled split predicted the way `predict` screens parts, for choosing and checking a screen's thresholds.

Ultralytics' validator and its predictor see different detections: the validator resizes with
``INTER_AREA`` and runs NMS multi-label (a box once per class above conf, as mAP wants), predict
resizes with ``INTER_LINEAR`` and keeps each box's best class. On the tests' synthetic parts the same
model's top scores differ by up to 0.1 between the two, so thresholds chosen on the validator's
detections miss their recall in predict. Here the split's images go through `predict` itself
(`pipeline.inference.listed`, as a training's drift baseline does: the same decoding, letterbox,
runtime and NMS a screen runs), and the ground truth is read from the labels with the project's own
YOLO reader.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.data.dataset import DatasetError
from pipeline.evaluation.evaluation import SplitPredictions, data_spec
from pipeline.inference.options import RunOptions


class CalibrationInputError(DatasetError):
    """A --good folder that cannot be used (missing, no image in it); the message is one line."""


@dataclass
class GoodImages:
    """A folder of defect-free images predicted with the split: each image's detections, and what failed."""

    folder: str
    detections: list[list[tuple[int, float]]] = field(default_factory=list)  # per image read: (class index, score)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) of each image that could not be read

    def lines(self) -> list[str]:
        """The failed images, one line each (file and reason): none is dropped silently."""
        return [f"--good: {path}: left out ({reason})" for path, reason in self.failed]


def _split_only(spec: Any, split: str, folder: Path) -> Path:
    """A data.yaml naming only ``split``: the reader then inspects no other split's images."""
    body = {"path": str(spec.root), split: str(spec.splits[split]), "names": spec.names}
    path = folder / "data.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return path


def ground_truth(data_yaml: Path, split: str) -> tuple[dict[str, Any], list[str], int]:
    """COCO ground truth of ``split`` (image ids from 1, ``file_name`` the absolute image path), the class names,
    and how many label problems were left out (the boxes `data validate` would drop)."""
    from pipeline.data.yolo import read_yolo

    collection = read_yolo(data_yaml)
    images, annotations = [], []
    for sample in (s for s in collection.samples if s.split == split and not s.image_problem):
        image_id = len(images) + 1
        path = os.path.abspath(sample.image)
        images.append({"id": image_id, "file_name": path, "width": sample.width, "height": sample.height})
        for box in sample.boxes:
            xywh = [box.x1, box.y1, box.x2 - box.x1, box.y2 - box.y1]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": box.cls + 1,
                 "bbox": xywh, "area": xywh[2] * xywh[3], "iscrowd": 0}
            )  # fmt: skip
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(collection.names)]
    problems = sum(1 for p in collection.problems if p.is_error)
    return {"images": images, "annotations": annotations, "categories": categories}, collection.names, problems


def screened_split(
    model: str, data: str | Path, options: RunOptions, *, split: str, good: str | Path | None = None
) -> tuple[SplitPredictions, int, GoodImages | None]:
    """``split`` of ``data`` predicted by `predict` as ``options`` say (at their conf), with its ground truth; the
    label problems left out; and, with ``good`` (a folder of defect-free images), those images predicted in the same
    pass.
    ``metrics`` of the result is None: these are a screen's detections, not an mAP evaluation's."""
    from pipeline.drift import rethresholded
    from pipeline.inference.listed import predict_listed

    spec = data_spec(data, split)
    good_paths = _good_images(good) if good is not None else []
    with tempfile.TemporaryDirectory(prefix="yolo-pipeline-screen-") as tmp:
        truth, names, problems = ground_truth(_split_only(spec, split, Path(tmp)), split)
    listed = predict_listed([image["file_name"] for image in truth["images"]] + good_paths, model, options)
    ids = {image["file_name"]: image["id"] for image in truth["images"]}
    seen = GoodImages(str(good)) if good is not None else None
    detections = []
    for record in listed.records:
        image_id = ids.get(os.path.abspath(record["path"]))
        if image_id is None:  # one of the good images
            seen.detections.append([(d["class_id"], d["score"]) for d in record["detections"]])
            continue
        for d in record["detections"]:
            x1, y1, x2, y2 = d["box"]
            detections.append(
                {"image_id": image_id, "category_id": d["class_id"] + 1,
                 "bbox": [x1, y1, x2 - x1, y2 - y1], "score": d["score"]}
            )  # fmt: skip
    if seen is not None:
        seen.failed = [(r["path"], r["reason"]) for r in listed.errors if os.path.abspath(r["path"]) not in ids]
    settings = listed.settings
    if len(settings["classes"]) != len(names):
        raise DatasetError(
            f"{data}: {len(names)} classes {names}, but the model has {len(settings['classes'])} {settings['classes']}"
        )
    # What predict saw of the split's images (every detection it kept): the baseline calibrate records; None when it
    # kept nothing (its drift check off).
    observed = None
    if listed.seen is not None:
        keep = [name for name in listed.seen.names if os.path.abspath(name) in ids]
        observed = rethresholded(listed.seen, listed.seen.thresholds, keep=keep)
    predictions = SplitPredictions(
        truth, detections, dict(enumerate(names)), listed.run_id, None, settings.get("model_sha256", ""), observed
    )
    return predictions, problems, seen


def _good_images(good: str | Path) -> list[str]:
    """The images of a --good folder, absolute, in `predict`'s order; one line when there is none to use."""
    from pipeline.inference.discover import iter_images
    from pipeline.inference.errors import SourceError

    folder = Path(good)
    if not folder.is_dir():
        raise CalibrationInputError(f"--good: {good}: not a folder of defect-free images")
    try:
        paths = [os.path.abspath(path) for path in iter_images(folder)]
    except SourceError as exc:
        raise CalibrationInputError(f"--good: {exc}") from None
    if not paths:
        raise CalibrationInputError(f"--good: {good}: no image in it")
    return paths

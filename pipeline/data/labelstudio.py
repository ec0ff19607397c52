"""Label Studio's JSON: task files to import (images with the model's boxes as pre-annotations beside the
ground truth), and exports of reviewed tasks read back into the in-memory dataset form.

Label Studio keeps a rectangle as a ``rectanglelabels`` result whose ``value`` holds ``x``, ``y``,
``width`` and ``height`` in percent of the image and ``original_width``/``original_height`` in pixels
(https://labelstud.io/guide/predictions, https://labelstud.io/guide/export#Label-Studio-JSON-format-of-annotated-tasks).
The labelling config these tasks fit is `LABEL_CONFIG` (a ``RectangleLabels`` named ``label`` on an
``Image`` named ``image``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FROM_NAME, TO_NAME = "label", "image"


@dataclass(frozen=True)
class LabeledBox:
    """A box in image pixels (corners), its class name and, for a model's box, its score."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    score: float | None = None


def label_config(classes: list[str]) -> str:
    """The labelling interface (Label Studio's XML) the task files are written for."""
    labels = "\n".join(f'    <Label value="{name}"/>' for name in classes)
    return (
        "<View>\n"
        f'  <Image name="{TO_NAME}" value="$image"/>\n'
        f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">\n{labels}\n  </RectangleLabels>\n'
        "</View>\n"
    )


def box_result(box: LabeledBox, width: int, height: int, index: int) -> dict[str, Any]:
    """One ``rectanglelabels`` result: percent coordinates of an image of ``width`` x ``height`` px."""
    result: dict[str, Any] = {
        "id": f"r{index}",
        "type": "rectanglelabels",
        "from_name": FROM_NAME,
        "to_name": TO_NAME,
        "original_width": width,
        "original_height": height,
        "image_rotation": 0,
        "value": {
            "x": 100.0 * box.x1 / width,
            "y": 100.0 * box.y1 / height,
            "width": 100.0 * (box.x2 - box.x1) / width,
            "height": 100.0 * (box.y2 - box.y1) / height,
            "rotation": 0,
            "rectanglelabels": [box.label],
        },
    }
    if box.score is not None:
        result["score"] = float(box.score)
    return result


def task(
    image: str,
    width: int,
    height: int,
    *,
    truth: list[LabeledBox] | None = None,
    predictions: list[LabeledBox] | None = None,
    model_version: str = "",
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A task of Label Studio's import format: ``data.image`` (a URL or ``/data/local-files/?d=...``), the
    ground truth as an annotation and the model's boxes as a prediction (pre-annotation)."""
    record: dict[str, Any] = {"data": {"image": image, **(meta or {})}}
    if truth is not None:
        record["annotations"] = [{"result": [box_result(b, width, height, i) for i, b in enumerate(truth)]}]
    if predictions is not None:
        scores = [b.score for b in predictions if b.score is not None]
        record["predictions"] = [
            {
                "model_version": model_version,
                "score": float(min(scores)) if scores else 0.0,
                "result": [box_result(b, width, height, i) for i, b in enumerate(predictions)],
            }
        ]
    return record


def write_tasks(path: str | Path, tasks: list[dict[str, Any]]) -> Path:
    path = Path(path)
    path.write_text(json.dumps(tasks, indent=1) + "\n", encoding="utf-8")
    return path

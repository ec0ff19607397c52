"""`evaluate --review DIR`: the images where the screen went wrong, worst first, for a person to relabel or check.

At the screen's thresholds (``--screen FILE``, else the ones stored with the model URI), an object is
*missed* when no detection of its class at or above the class's threshold matches it (IoU >= 0.5,
matched greedily by score as COCO matches), and a detection at or above threshold that matches no
object is a *false alarm*. Images are ordered by misses + false alarms, ties by their highest
false-alarm score. The queue (`pipeline.inference.review`) holds ``tasks.json`` with the ground truth
as annotations and the model's boxes at or above threshold as predictions, ``label_config.xml``,
``images/``, ``review.csv`` (one row per missed object and per false alarm) and ``crops/`` (each of those
boxes with a margin around it). The predictions are evaluate's own: the split is predicted once.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipeline.checkpoints import MODEL_URI_SCHEMES
from pipeline.data.labelstudio import LabeledBox
from pipeline.evaluation import matching
from pipeline.inference.discover import printable
from pipeline.inference.review import IMAGES, TABLE, QueueItem, check_queue, unique_name, write_queue
from pipeline.messages import UserError, first_line

CROPS = "crops"
MARGIN = 0.25  # of the box's side, around each crop (at least MIN_MARGIN px): the context a reviewer needs
MIN_MARGIN = 8


class ReviewError(UserError, ValueError):
    """A review queue that cannot be made; the message is one line."""


# ---- matching (one image) --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matches:
    pairs: list[tuple[int, int]]  # (truth index, detection index)
    missed: list[int]  # truth boxes no detection matched
    false_alarms: list[int]  # detections that matched no truth box


def _xywh(boxes: list[LabeledBox]) -> np.ndarray:
    return np.array([[b.x1, b.y1, b.x2 - b.x1, b.y2 - b.y1] for b in boxes], dtype=float).reshape(-1, 4)


def box_iou(a: list[LabeledBox], b: list[LabeledBox]) -> np.ndarray:
    """IoU of every box of ``a`` with every box of ``b`` (corners in pixels), shape (len(a), len(b))."""
    return matching.box_iou(_xywh(a), _xywh(b))


def match_image(truth: list[LabeledBox], detections: list[LabeledBox], iou: float = 0.5) -> Matches:
    """COCO's greedy matching on one image (`pipeline.evaluation.matching.assign`), class by class."""
    pairs = []
    for label in {d.label for d in detections}:
        mine = sorted(
            (k for k, d in enumerate(detections) if d.label == label), key=lambda k: -(detections[k].score or 0.0)
        )
        objects = [t for t, box in enumerate(truth) if box.label == label]
        if not objects:
            continue
        taken = matching.assign(
            _xywh([detections[k] for k in mine]), _xywh([truth[t] for t in objects]), np.zeros(len(objects), bool), iou
        )
        pairs += [(objects[t], mine[k]) for k, t in enumerate(taken) if t >= 0]
    matched_truth, matched = {t for t, _ in pairs}, {d for _, d in pairs}
    return Matches(
        sorted(pairs),
        [t for t in range(len(truth)) if t not in matched_truth],
        [d for d in range(len(detections)) if d not in matched],
    )


# ---- the images that went wrong --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """A missed object or a false alarm: its box and score (a missed object's: the best score a detection of its
    class overlapping it had below the threshold, None when there was none)."""

    kind: str  # "missed" | "false_alarm"
    box: LabeledBox
    score: float | None
    threshold: float


@dataclass(frozen=True)
class WrongImage:
    path: str
    width: int
    height: int
    truth: list[LabeledBox]
    shown: list[LabeledBox]  # the model's boxes at or above threshold
    findings: list[Finding]  # misses first, then false alarms by falling score

    @property
    def misses(self) -> int:
        return sum(f.kind == "missed" for f in self.findings)

    @property
    def false_alarms(self) -> int:
        return len(self.findings) - self.misses

    def worst_first(self) -> tuple[int, float, str]:
        top = max((f.score or 0.0 for f in self.findings if f.kind == "false_alarm"), default=0.0)
        return -len(self.findings), -top, self.path


def review_image(
    path: str,
    width: int,
    height: int,
    truth: list[LabeledBox],
    detections: list[LabeledBox],
    thresholds: dict[str, float],
    iou: float = 0.5,
) -> WrongImage | None:
    """What the screen got wrong on one image (None when nothing). Classes without a threshold are not reviewed."""
    truth = [b for b in truth if b.label in thresholds]
    kept = [d for d in detections if d.label in thresholds and (d.score or 0.0) >= thresholds[d.label]]
    below = [d for d in detections if d.label in thresholds and (d.score or 0.0) < thresholds[d.label]]
    found = match_image(truth, kept, iou)
    overlaps = box_iou(truth, below)
    findings = []
    for t in found.missed:
        near = [d.score or 0.0 for k, d in enumerate(below) if d.label == truth[t].label and overlaps[t, k] >= iou]
        findings.append(Finding("missed", truth[t], max(near) if near else None, thresholds[truth[t].label]))
    alarms = sorted(found.false_alarms, key=lambda k: -(kept[k].score or 0.0))
    findings += [Finding("false_alarm", kept[k], kept[k].score, thresholds[kept[k].label]) for k in alarms]
    if not findings:
        return None
    return WrongImage(path, width, height, truth, kept, findings)


def best_class_per_box(detections: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each box once, with its best-scoring class, as `predict` reports it: evaluate's multi-label NMS (for mAP)
    reports a box once per class above its threshold, and the runner-up classes are alarms predict never raises."""
    best: dict[tuple[int, tuple[float, ...]], dict[str, Any]] = {}
    for d in detections:
        key = (d["image_id"], tuple(d["bbox"]))
        if key not in best or d["score"] > best[key]["score"]:
            best[key] = d
    return list(best.values())


def wrong_images(
    truth: dict[str, Any], detections: list[dict[str, Any]], names: dict[int, str], thresholds: dict[str, float]
) -> list[WrongImage]:
    """Every image of a COCO ground truth and results (category id = class index + 1) with a miss or a false
    alarm at ``thresholds``, worst first."""
    by_image: dict[int, tuple[list[LabeledBox], list[LabeledBox]]] = {i["id"]: ([], []) for i in truth["images"]}
    for a in truth["annotations"]:
        x, y, w, h = a["bbox"]
        by_image[a["image_id"]][0].append(LabeledBox(names[a["category_id"] - 1], x, y, x + w, y + h))
    for d in detections:
        x, y, w, h = d["bbox"]
        box = LabeledBox(names[d["category_id"] - 1], x, y, x + w, y + h, score=float(d["score"]))
        by_image[d["image_id"]][1].append(box)
    found = []
    for image in truth["images"]:
        boxes, seen = by_image[image["id"]]
        wrong = review_image(image["file_name"], image["width"], image["height"], boxes, seen, thresholds)
        if wrong is not None:
            found.append(wrong)
    found.sort(key=WrongImage.worst_first)
    return found


# ---- the folder --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewPlan:
    """Where the queue goes and the thresholds it uses, settled before the model loads."""

    folder: Path
    thresholds: dict[str, float]
    source: str  # where the thresholds came from


@dataclass
class ReviewResult:
    folder: Path
    images: int
    missed: int
    false_alarms: int
    thresholds_source: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-ready, for evaluation.json."""
        return {
            "folder": str(self.folder),
            "images": self.images,
            "missed": self.missed,
            "false_alarms": self.false_alarms,
            "thresholds_source": self.thresholds_source,
            "notes": self.notes,
        }


def plan_review(
    folder: str | Path, screen: str | Path | None, model: str, tracking_uri: str = "", out: str | Path | None = None
) -> ReviewPlan:
    """The queue's folder (checked) and thresholds: ``--screen``'s, else those stored with the model URI, else refused."""
    from pipeline.inference.screen import read_screen

    target = check_queue(folder, others=[("--out", Path(out))] if out is not None else [])
    if screen is not None:
        found = read_screen(screen)
        return ReviewPlan(target, found.thresholds, f"{found.describe()}, from {screen}")
    if not model.startswith(MODEL_URI_SCHEMES):  # a file keeps no thresholds (and costs no MLflow import)
        raise ReviewError("--review: no thresholds: calibrate the model first or give --screen")
    from pipeline.tracking.screens import stored_screen

    try:
        stored = stored_screen(model, tracking_uri)
    except Exception as exc:  # noqa: BLE001 - a store that does not answer, an MLflow error
        raise ReviewError(
            f"--review: the thresholds stored with {model} could not be looked up ({first_line(exc, 150)}); "
            "give --screen"
        ) from None
    if stored is None:
        raise ReviewError("--review: no thresholds: calibrate the model first or give --screen")
    return ReviewPlan(target, stored.thresholds, f"{stored.about or 'thresholds'}, stored with {stored.source}")


def thresholds_per_class(plan: ReviewPlan, classes: list[str]) -> tuple[dict[str, float], list[str]]:
    """Each class's threshold (its own, else ``default``), and a note for each class with none or each unknown one."""
    default = plan.thresholds.get("default")
    per_class = {c: plan.thresholds.get(c, default) for c in classes}
    notes = [f"class {c!r} has no threshold in {plan.source}: not reviewed" for c, v in per_class.items() if v is None]
    unknown = sorted(set(plan.thresholds) - set(classes) - {"default"})
    notes += [f"threshold {c!r} ({plan.source}): the dataset has no such class" for c in unknown]
    return {c: v for c, v in per_class.items() if v is not None}, notes


def crop_box(box: LabeledBox, width: int, height: int) -> tuple[int, int, int, int]:
    """The crop around ``box`` (left, top, right, bottom in pixels): a margin of MARGIN of its side, within the image."""
    mx = max(MIN_MARGIN, MARGIN * (box.x2 - box.x1))
    my = max(MIN_MARGIN, MARGIN * (box.y2 - box.y1))
    left, top = max(0, math.floor(box.x1 - mx)), max(0, math.floor(box.y1 - my))
    right, bottom = min(width, math.ceil(box.x2 + mx)), min(height, math.ceil(box.y2 + my))
    return left, top, right, bottom


def _write_crop(path: Path, image: np.ndarray, bounds: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = bounds
    ok, data = cv2.imencode(".png", image[top:bottom, left:right])
    if not ok:
        raise OSError(f"{path}: could not be encoded")
    path.write_bytes(data.tobytes())


def write_review(plan: ReviewPlan, wrong: list[WrongImage], classes: list[str], model: str) -> ReviewResult:
    """The queue of ``wrong`` (worst first): tasks, images, review.csv and one crop per row."""
    from pipeline.inference.decode import ImageError, read_image

    items = [
        QueueItem(
            w.path,
            w.width,
            w.height,
            w.shown,
            truth=w.truth,
            meta={"source": printable(w.path), "missed": w.misses, "false_alarms": w.false_alarms},
        )
        for w in wrong
    ]
    notes: list[str] = []

    def table_and_crops(staging: Path, queue: Any) -> None:
        (staging / CROPS).mkdir()
        taken: set[str] = set()
        with open(staging / TABLE, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["image", "kind", "class", "score", "threshold", "x1", "y1", "x2", "y2", "crop", "file"])
            for w in wrong:
                if w.path not in queue.names:
                    continue
                try:
                    image = read_image(Path(w.path))
                except ImageError as exc:
                    notes.append(f"{printable(w.path)}: no crops ({exc})")
                    image = None
                for finding in w.findings:
                    b = finding.box
                    crop = ""
                    if image is not None:
                        stem = Path(queue.names[w.path]).stem
                        crop = unique_name(f"{stem}-{finding.kind}-{b.label}.png", taken)
                        _write_crop(staging / CROPS / crop, image, crop_box(b, image.shape[1], image.shape[0]))
                        crop = f"{CROPS}/{crop}"
                    score = "" if finding.score is None else f"{finding.score:.4f}"
                    corners = [f"{v:.1f}" for v in (b.x1, b.y1, b.x2, b.y2)]
                    row = [printable(w.path), finding.kind, b.label, score, f"{finding.threshold:g}", *corners]
                    writer.writerow([*row, crop, f"{IMAGES}/{queue.names[w.path]}"])

    queue = write_queue(plan.folder, items, classes, model, extra=table_and_crops, info={"model": model})
    notes += [f"left out {m}" for m in queue.missing]
    kept = [w for w in wrong if w.path in queue.names]
    return ReviewResult(
        queue.folder,
        len(kept),
        sum(w.misses for w in kept),
        sum(w.false_alarms for w in kept),
        plan.source,
        notes,
    )


def review_split(plan: ReviewPlan, found: Any, model: str) -> ReviewResult:
    """The review queue of a split evaluate predicted (`pipeline.evaluation.evaluation.SplitPredictions`)."""
    classes = [found.names[i] for i in sorted(found.names)]
    thresholds, notes = thresholds_per_class(plan, classes)
    wrong = wrong_images(found.truth, best_class_per_box(found.detections), found.names, thresholds)
    result = write_review(plan, wrong, classes, model)
    result.notes[:0] = notes
    return result

"""Detections matched to ground-truth objects as COCO matches them, at one IoU threshold (numpy only).

Per image and class, detections in descending score order each take the still unmatched object of
their class with the highest IoU >= the threshold (pycocotools' ``evaluateImg`` rule). Crowd regions
are not objects: a detection left unmatched that covers one (IoU over its own area, as COCO
computes it for crowds) is dropped, neither a hit nor a false alarm. Unlike COCO's AP there is no
cap of 100 detections per image: an operating point is a score threshold, not a ranking.

The result, per class, is what the operating points need: every detection's score (descending), a
hit flag, an ignored flag, an outside flag (it overlaps no labelled box of any class, crowds included: a
false alarm such as a good image would show) and the image it belongs to, and the number of objects of
each class in each image.

It lives in `pipeline.evaluation`, beside the evaluation it scores against ground truth and the review queue
that uses it, though the screen (`pipeline.screen`) is its heaviest user: the screen already builds on
evaluate (its split and data), so matching here keeps the dependency one way, screen -> evaluate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

IOU = 0.5


@dataclass(frozen=True)
class ClassMatches:
    """One class's detections over the whole split, highest score first."""

    scores: np.ndarray  # float, descending
    hits: np.ndarray  # bool: the detection matched an object (a true positive at the IoU threshold)
    images: np.ndarray  # int: index of the detection's image in `Matches.image_ids`
    ignored: np.ndarray  # bool: it fell on a crowd region only; neither a hit nor a false alarm (COCO's rule)
    # bool: its box overlaps no labelled box of any class (crowds included; intersection area 0 with each): a
    # false alarm where the part looks defect-free, what the false-reject estimate counts
    outside: np.ndarray

    @property
    def false(self) -> np.ndarray:
        """False alarms: neither a hit nor ignored."""
        return ~self.hits & ~self.ignored


@dataclass(frozen=True)
class Matches:
    image_ids: list[int]  # the split's images, in the ground truth's order; indices below point into it
    classes: list[str]  # class names, in category order (category_id = class index + 1)
    objects: np.ndarray  # int (images, classes): non-crowd ground-truth objects per image and class
    per_class: dict[str, ClassMatches]

    def objects_of(self, name: str) -> np.ndarray:
        return self.objects[:, self.classes.index(name)]


def box_iou(detections: np.ndarray, truths: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of xywh boxes (d, 4) x (g, 4) as pycocotools' ``maskUtils.iou`` computes it: areas w*h, no +1;
    for a crowd box the intersection is divided by the detection's area instead of the union."""
    d = np.asarray(detections, dtype=float).reshape(-1, 4)
    g = np.asarray(truths, dtype=float).reshape(-1, 4)
    left = np.maximum(d[:, None, 0], g[None, :, 0])
    top = np.maximum(d[:, None, 1], g[None, :, 1])
    right = np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2])
    bottom = np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3])
    inter = np.clip(right - left, 0, None) * np.clip(bottom - top, 0, None)
    area_d = (d[:, 2] * d[:, 3])[:, None]
    union = area_d + (g[:, 2] * g[:, 3])[None, :] - inter
    if crowd is not None:
        union = np.where(np.asarray(crowd, dtype=bool)[None, :], np.broadcast_to(area_d, union.shape), union)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


UNMATCHED, ON_CROWD = -1, -2  # what `assign` gives a detection that matched no object


def assign(boxes: np.ndarray, truths: np.ndarray, crowd: np.ndarray, iou: float = IOU) -> np.ndarray:
    """For one image and class, detections already in descending score order: the index of the object each
    matched, UNMATCHED (a false alarm) or ON_CROWD (it fell on a crowd region only, so it is ignored)."""
    taken = np.full(len(boxes), UNMATCHED, dtype=np.int64)
    if len(boxes) == 0 or len(truths) == 0:
        return taken
    ious = box_iou(boxes, truths, crowd)
    crowd = np.asarray(crowd, dtype=bool)
    real = np.where(crowd[None, :], -1.0, ious)  # objects to match
    real[real < iou] = -1.0
    free = np.ones(len(truths), dtype=bool)
    for k in np.flatnonzero((real >= 0).any(axis=1)):  # only detections that overlap some object enough
        candidates = np.where(free, real[k], -1.0)
        best = int(np.argmax(candidates))
        if candidates[best] >= 0:
            free[best] = False
            taken[k] = best
    if crowd.any():
        on_crowd = (np.where(crowd[None, :], ious, -1.0) >= iou).any(axis=1)
        taken[(taken == UNMATCHED) & on_crowd] = ON_CROWD
    return taken


def match_image(boxes: np.ndarray, truths: np.ndarray, crowd: np.ndarray, iou: float = IOU) -> np.ndarray:
    """For one image and class, detections already in descending score order: 1 hit, 0 false, -1 ignored
    (it fell on a crowd region only)."""
    taken = assign(boxes, truths, crowd, iou)
    return np.where(taken >= 0, 1, np.where(taken == ON_CROWD, -1, 0)).astype(np.int8)


def outside_boxes(
    d_image: np.ndarray, d_box: np.ndarray, g_image: np.ndarray, g_box: np.ndarray, images: int
) -> np.ndarray:
    """Per detection: True when its box meets no ground-truth box of its image (intersection area 0 with each,
    whatever the class; touching edges do not overlap)."""
    outside = np.ones(len(d_image), dtype=bool)
    if not len(d_image) or not len(g_image):
        return outside
    d_order, g_order = np.argsort(d_image, kind="stable"), np.argsort(g_image, kind="stable")
    d_bounds = np.searchsorted(d_image[d_order], np.arange(images + 1))
    g_bounds = np.searchsorted(g_image[g_order], np.arange(images + 1))
    for image in np.flatnonzero((np.diff(d_bounds) > 0) & (np.diff(g_bounds) > 0)):
        mine, rows = d_order[d_bounds[image] : d_bounds[image + 1]], g_order[g_bounds[image] : g_bounds[image + 1]]
        d, g = d_box[mine], g_box[rows]
        width = np.minimum(d[:, None, 0] + d[:, None, 2], g[None, :, 0] + g[None, :, 2]) - np.maximum(
            d[:, None, 0], g[None, :, 0]
        )
        height = np.minimum(d[:, None, 1] + d[:, None, 3], g[None, :, 1] + g[None, :, 3]) - np.maximum(
            d[:, None, 1], g[None, :, 1]
        )
        outside[mine] = ~((width > 0) & (height > 0)).any(axis=1)
    return outside


def match_split(truth: dict[str, Any], detections: list[dict[str, Any]], iou: float = IOU) -> Matches:
    """Match COCO results to COCO ground truth (``predict_split``'s ``truth`` and ``detections``)."""
    categories = sorted(truth["categories"], key=lambda c: c["id"])
    classes = [str(c["name"]) for c in categories]
    class_of = {c["id"]: k for k, c in enumerate(categories)}
    image_ids = [int(image["id"]) for image in truth["images"]]
    index_of = {image_id: i for i, image_id in enumerate(image_ids)}

    annotations = [a for a in truth["annotations"] if a["image_id"] in index_of and a["category_id"] in class_of]
    g_image = np.array([index_of[a["image_id"]] for a in annotations], dtype=np.int64)
    g_class = np.array([class_of[a["category_id"]] for a in annotations], dtype=np.int64)
    g_box = np.array([a["bbox"] for a in annotations], dtype=float).reshape(-1, 4)
    g_crowd = np.array([bool(a.get("iscrowd", 0)) for a in annotations], dtype=bool)
    objects = np.zeros((len(image_ids), len(classes)), dtype=np.int64)
    np.add.at(objects, (g_image[~g_crowd], g_class[~g_crowd]), 1)

    kept = [d for d in detections if d["image_id"] in index_of and d["category_id"] in class_of]
    d_image = np.array([index_of[d["image_id"]] for d in kept], dtype=np.int64)
    d_class = np.array([class_of[d["category_id"]] for d in kept], dtype=np.int64)
    d_box = np.array([d["bbox"] for d in kept], dtype=float).reshape(-1, 4)
    d_score = np.array([d["score"] for d in kept], dtype=float)

    # Group by (image, class), highest score first within a group; stable, as pycocotools' mergesort.
    order = np.lexsort((-d_score, d_class, d_image))
    d_image, d_class, d_box, d_score = d_image[order], d_class[order], d_box[order], d_score[order]
    outcome = np.zeros(len(order), dtype=np.int8)
    outside = outside_boxes(d_image, d_box, g_image, g_box, len(image_ids))
    g_order = np.lexsort((g_class, g_image))
    g_keys = g_image[g_order] * len(classes) + g_class[g_order]
    d_keys = d_image * len(classes) + d_class
    starts = np.flatnonzero(np.r_[True, d_keys[1:] != d_keys[:-1]]) if len(d_keys) else np.array([], dtype=int)
    ends = np.r_[starts[1:], len(d_keys)]
    for start, end in zip(starts, ends, strict=True):
        low, high = np.searchsorted(g_keys, d_keys[start], "left"), np.searchsorted(g_keys, d_keys[start], "right")
        if low == high:
            continue  # no object of this class in the image: every detection is a false alarm
        rows = g_order[low:high]
        outcome[start:end] = match_image(d_box[start:end], g_box[rows], g_crowd[rows], iou)

    per_class: dict[str, ClassMatches] = {}
    for k, name in enumerate(classes):
        mine = d_class == k
        scores, found, images, away = d_score[mine], outcome[mine], d_image[mine], outside[mine]
        by_score = np.argsort(-scores, kind="stable")
        found = found[by_score]
        per_class[name] = ClassMatches(scores[by_score], found == 1, images[by_score], found == -1, away[by_score])
    return Matches(image_ids, classes, objects, per_class)

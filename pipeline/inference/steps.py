"""The steps around the network, in numpy and OpenCV only: what a screen bundle runs on a line PC.

A screen bundle (an exported ONNX or OpenVINO network and its thresholds) runs where there is no torch and
no ultralytics. Its detections must still be those of the torch path (`pipeline.inference.model.Detector`),
which runs ultralytics' own steps: ``LetterBox(size, auto=True, stride=stride)`` before the network,
``non_max_suppression(raw, conf, iou, None, False, max_det=max_det, nc=0, end2end=end2end)`` and
``scale_boxes`` after it. So each function here is one of those, rewritten step for step in numpy with the
same float32 arithmetic, so that the same inputs give the same pixels, the same kept boxes in the same order
and the same coordinates (the unit tests compare them with ultralytics' on the same inputs):

- `letterbox`: the image the network sees, bit-identical to ultralytics' (same rounding, same
  ``cv2.resize`` interpolation, same padding split and value).
- `detections`: the network's raw output -> per image x1 y1 x2 y2 score class, in the input's pixels.
  Non-maximum suppression is greedy by score, as ``torchvision.ops.nms`` does it: the same stable order for
  equal scores, the same float32 IoU compared in double precision with the threshold. It runs in numpy on
  blocks of boxes in score order and stops at ``max_det`` kept (`_greedy_nms`). Per 640-px image of 8400
  anchors (synthetic YOLO11n-like outputs, one thread): 1 to 1.7 ms at ``conf`` 0.25 (about 1,300 candidates;
  ultralytics with torchvision 0.7 to 1.1 ms), 3 ms at ``conf`` 0.001 (300 kept of 3,800 to 6,200 candidates;
  ultralytics 8 to 53 ms, a numpy loop over the kept boxes 10 to 19 ms). OpenCV's ``cv2.dnn.NMSBoxesBatched``
  is a little faster at 0.25 (0.7 to 1 ms) but far slower at 0.001 (23 to 126 ms: it suppresses every
  candidate, comparing each with the boxes kept so far), and its IoU is not torchvision's: float64
  rectangles, rounded to float32 and compared with a float32 threshold, and empty boxes suppressed as
  duplicates (torchvision's 0 / 0 suppresses nothing), so near the threshold it could keep other boxes.
- `scale_to_image`: boxes in the letterboxed input's pixels -> in the image's, clipped to it.

Importing this module imports neither torch nor ultralytics (a unit test checks it).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

PAD_VALUE = 114  # ultralytics' LetterBox padding_value
MAX_NMS = 30000  # ultralytics' max_nms: at most this many boxes, the highest scored, go into the NMS
MAX_WH = 7680  # ultralytics' max_wh: boxes of class c are shifted by c * MAX_WH, so classes never overlap
NMS_BLOCK = 128  # boxes compared at once in `_greedy_nms`: the fastest of 64 to 512 on 1,000 to 6,000 candidates


def letterbox_shape(
    image_hw: tuple[int, int], size: int, stride: int
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The resized image's (width, height) and the padding (top, bottom, left, right) that `letterbox` adds.

    ultralytics' ``LetterBox.get_params`` with ``auto=True``: the image scaled by the same gain on both sides
    (up or down) so that its long side is ``size``, each side rounded and at least 1 pixel, then padded to a
    multiple of ``stride`` only (not to a square), the padding split as evenly as rounding allows. Python's
    ``round`` (half to even) as there, so the split is the same.
    """
    height, width = image_hw
    gain = min(size / height, size / width)
    new_w, new_h = max(round(width * gain), 1), max(round(height * gain), 1)
    dw, dh = (size - new_w) % stride / 2, (size - new_h) % stride / 2
    return (new_w, new_h), (round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1))


def letterbox(image: np.ndarray, size: int, stride: int) -> np.ndarray:
    """BGR (H, W, 3) uint8 -> the network's input for it: letterboxed RGB (3, h, w) uint8, contiguous.

    Exactly ultralytics' ``LetterBox(size, auto=True, stride=stride)`` image, channels first and BGR -> RGB,
    as ``Detector.prepare`` gives it: resized with ``cv2.INTER_LINEAR`` (when its size changes) and padded
    with 114 by ``cv2.copyMakeBorder``, so the pixels are the same bit for bit, and equally sized images give
    equally sized inputs (the batch the network runs).
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"letterbox: expected a BGR image (H, W, 3), got shape {image.shape}")
    new_wh, (top, bottom, left, right) = letterbox_shape(image.shape[:2], size, stride)
    if image.shape[1::-1] != new_wh:
        image = cv2.resize(image, new_wh, interpolation=cv2.INTER_LINEAR)
    boxed = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return np.ascontiguousarray(boxed.transpose(2, 0, 1)[::-1])


def detections(
    raw: np.ndarray | Sequence[np.ndarray], conf: float, iou: float, max_det: int, end2end: bool
) -> list[np.ndarray]:
    """The network's raw output for a batch -> per image float32 (N, 6): x1 y1 x2 y2 score class, in the
    letterboxed input's pixels, highest score first.

    ultralytics' ``non_max_suppression`` as the torch path calls it (``classes=None, agnostic=False,
    multi_label=False, nc=0``), step for step, so both keep the same boxes in the same order:

    - ``raw`` (B, 4 + nc, N): xywh boxes and class scores per anchor (a list or tuple: its first element, as
      there). An anchor is a candidate when its best class scores above ``conf``; it keeps that class only. At
      most `MAX_NMS` candidates, the highest scored, go on; then a greedy NMS per class (boxes shifted by
      ``class * MAX_WH``) suppresses those overlapping a higher scored one by IoU above ``iou``
      (`_greedy_nms`), and the first ``max_det`` kept remain.
    - ``end2end`` (or ``raw`` of (B, N, 6), as ultralytics decides too): an end-to-end head's output, x1 y1 x2
      y2 score class per row, already suppressed: the rows scoring above ``conf``, in their order, at most
      ``max_det``.

    The arithmetic is ultralytics' in float32 (a float16 output is computed in float32). Unlike ultralytics,
    there is no time limit that leaves the batch's last images empty.
    """
    if isinstance(raw, list | tuple):
        raw = raw[0]
    raw = np.asarray(raw, dtype=np.float32)
    if raw.shape[-1] == 6 or end2end:
        return [_end_to_end(rows, conf, max_det) for rows in raw]
    return [_suppressed(channels, conf, iou, max_det) for channels in raw]


def _end_to_end(rows: np.ndarray, conf: float, max_det: int) -> np.ndarray:
    """An end-to-end head's rows for one image (N, 6+): those scoring above ``conf``, in order, at most ``max_det``."""
    return np.ascontiguousarray(rows[rows[:, 4] > conf][:max_det, :6])


def _suppressed(channels: np.ndarray, conf: float, iou: float, max_det: int) -> np.ndarray:
    """One image's raw output (4 + nc, N) -> its detections (K, 6) after the confidence filter and the NMS."""
    scores = channels[4:].max(0)
    chosen = scores > conf  # float32 against a Python float compares in float32, as torch does
    candidates = channels[:, chosen].T
    if not len(candidates):
        return np.zeros((0, 6), np.float32)
    found = np.empty((len(candidates), 6), np.float32)
    centers, half = candidates[:, :2], candidates[:, 2:4] / 2  # ultralytics' xywh2xyxy, in float32
    found[:, :2] = centers - half
    found[:, 2:4] = centers + half
    found[:, 4] = scores[chosen]
    found[:, 5] = candidates[:, 4:].argmax(1)  # the first of equal best scores, as torch's max
    if len(found) > MAX_NMS:
        found = found[np.argsort(-found[:, 4], kind="stable")[:MAX_NMS]]
    shifted = found[:, :4] + found[:, 5:6] * np.float32(MAX_WH)
    return found[_greedy_nms(shifted, found[:, 4], iou, max_det)]


def _greedy_nms(boxes: np.ndarray, scores: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """The indices of the boxes (N, 4) xyxy float32 that greedy NMS keeps, highest score first, at most ``limit``.

    ``torchvision.ops.nms`` on the CPU, to the bit: boxes in order of score, highest first and equal scores in
    their given order (a stable sort, as torchvision's); each box not suppressed yet is kept, and suppresses
    every later box whose IoU with it is above ``iou`` (`_overlapping`: torchvision's float32 arithmetic). As
    the kept boxes come in that order, stopping at ``limit`` kept gives torchvision's first ``limit``.

    Done in blocks of `NMS_BLOCK` boxes in score order, so that only the boxes up to the ``limit``-th kept are
    ever compared (with a low ``conf``, the highest scored few hundred of thousands of candidates): a block's
    boxes that a box kept before overlaps go, then the rest of the block is scanned greedily against its own
    IoU matrix. Same result as one box at a time; with numpy on matrices rather than Python on boxes, 3 to 6
    times faster than a loop over the kept boxes for 300 kept of 4,000 to 6,000 candidates.
    """
    order = np.argsort(-scores, kind="stable")
    boxes = boxes[order]
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    threshold = np.float64(iou)  # float32 IoU against a double threshold, as in torchvision's C++ kernel
    keep: list[int] = []
    for start in range(0, len(order), NMS_BLOCK):
        if len(keep) >= limit:
            break
        block = slice(start, start + NMS_BLOCK)
        live = np.arange(start, min(start + NMS_BLOCK, len(order)))
        if keep:
            kept = np.asarray(keep)
            live = live[~_overlapping(boxes[kept], areas[kept], boxes[block], areas[block], threshold).any(0)]
        # row r suppresses the block's later boxes that overlap it, if r itself is kept: scanned in order, only the
        # rows that overlap a later box (a box's fate is decided by the rows before it, so it is final when reached)
        suppresses = np.triu(_overlapping(boxes[live], areas[live], boxes[live], areas[live], threshold), 1)
        gone = np.zeros(len(live), dtype=bool)
        for row in np.flatnonzero(suppresses.any(1)).tolist():
            if not gone[row]:
                gone |= suppresses[row]
        keep.extend(live[~gone][: limit - len(keep)].tolist())
    return order[np.asarray(keep, dtype=np.intp)]


def _overlapping(
    kept: np.ndarray, kept_areas: np.ndarray, later: np.ndarray, later_areas: np.ndarray, threshold: np.float64
) -> np.ndarray:
    """(K, M) bool: whether box k (of ``kept``, higher scored) suppresses box m (of ``later``): IoU > ``threshold``.

    torchvision's arithmetic, operation for operation in float32: intersection ``max(0, min(x2) - max(x1)) *
    max(0, min(y2) - max(y1))``, IoU ``inter / (area_k + area_m - inter)``, compared with the threshold in
    double precision (numpy promotes float32 to float64 against an ``np.float64``, as C++ does against a
    double). A NaN IoU (two empty boxes, 0 / 0) is not above it: it suppresses nothing, as there.
    """
    w = np.minimum(kept[:, 2:3], later[:, 2]) - np.maximum(kept[:, 0:1], later[:, 0])
    np.maximum(w, 0, out=w)
    h = np.minimum(kept[:, 3:4], later[:, 3]) - np.maximum(kept[:, 1:2], later[:, 1])
    np.maximum(h, 0, out=h)
    w *= h  # the intersection
    union = kept_areas[:, None] + later_areas
    union -= w
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(w, union, out=w)
    return w > threshold


def scale_to_image(boxes: np.ndarray, input_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """Boxes (N, 4+) x1 y1 x2 y2 in the letterboxed input's pixels -> a float32 copy with the first four columns
    in the image's pixels, clipped to it (the other columns, score and class, as they were).

    ultralytics' ``scale_boxes(input_hw, boxes, image_hw)`` (``padding=True``): the gain and padding recomputed
    from the two shapes as `letterbox` chose them, the padding subtracted and the gain divided out per axis in
    float32, then each coordinate clipped to [0, W] or [0, H].
    """
    out = np.array(boxes, dtype=np.float32, copy=True)
    height, width = image_hw[:2]
    gain = min(input_hw[0] / height, input_hw[1] / width)
    new_h, new_w = max(round(height * gain), 1), max(round(width * gain), 1)
    gain_y, gain_x = new_h / height, new_w / width
    pad_x, pad_y = round((input_hw[1] - new_w) / 2 - 0.1), round((input_hw[0] - new_h) / 2 - 0.1)
    for column, pad, axis_gain, limit in ((0, pad_x, gain_x, width), (1, pad_y, gain_y, height)):
        for k in (column, column + 2):
            out[:, k] -= pad
            out[:, k] /= axis_gain
            np.clip(out[:, k], 0, limit, out=out[:, k])
    return out

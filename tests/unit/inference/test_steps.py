"""The numpy steps a screen bundle runs (`pipeline.inference.steps`) give what ultralytics' own steps give.

Each is compared with the ultralytics function the torch path (`pipeline.inference.model.Detector`) calls, on
the same inputs: the letterboxed image bit for bit, the NMS's kept boxes in the same order, the boxes scaled back.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from pipeline.inference import steps

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def ultralytics() -> Any:
    """ultralytics' LetterBox, non_max_suppression and scale_boxes, with torchvision's NMS (as the torch path has)."""
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    import torchvision  # noqa: F401  (ultralytics uses torchvision.ops.nms when torchvision is imported)
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils import nms, ops

    class Reference:
        letterbox = LetterBox
        non_max_suppression = staticmethod(nms.non_max_suppression)
        scale_boxes = staticmethod(ops.scale_boxes)

    return Reference


def _picture(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A BGR picture with edges, gradients and noise: what makes interpolation and rounding show."""
    rng = np.random.default_rng(seed)
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], -1)
    image = (image + rng.integers(0, 40, image.shape)).clip(0, 255).astype(np.uint8)
    for _ in range(5):
        center = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.circle(image, center, int(rng.integers(1, max(height, width) // 3 + 2)), color, -1)
    return image


SHAPES = [(640, 640), (480, 640), (640, 480), (333, 517), (517, 333), (100, 61), (1500, 2001), (17, 1000), (1000, 3)]


@pytest.mark.parametrize("size", [320, 416, 640])
@pytest.mark.parametrize("shape", SHAPES)
def test_letterbox_is_ultralytics_bit_for_bit(ultralytics: Any, shape: tuple[int, int], size: int) -> None:
    image = _picture(shape, seed=shape[0] * 7 + shape[1])
    theirs = ultralytics.letterbox(size, auto=True, stride=32)(image=image).transpose(2, 0, 1)[::-1]
    ours = steps.letterbox(image, size, 32)
    assert ours.dtype == np.uint8 and ours.flags.c_contiguous
    assert ours.shape == theirs.shape and ours.shape[1] % 32 == 0 and ours.shape[2] % 32 == 0
    np.testing.assert_array_equal(ours, theirs)


def test_letterbox_of_a_decoded_file_and_a_wrong_shape(ultralytics: Any, tmp_path: Path) -> None:
    path = tmp_path / "part.jpg"
    assert cv2.imwrite(str(path), _picture((437, 611), seed=3))
    image = cv2.imread(str(path))
    theirs = ultralytics.letterbox(640, auto=True, stride=32)(image=image).transpose(2, 0, 1)[::-1]
    np.testing.assert_array_equal(steps.letterbox(image, 640, 32), theirs)
    with pytest.raises(ValueError, match="BGR image"):
        steps.letterbox(image[..., 0], 640, 32)


def _clustered(seed: int, batch: int = 3, nc: int = 4, anchors: int = 600, above: float = 0.3) -> np.ndarray:
    """A raw output (batch, 4 + nc, anchors): boxes in a few clusters, so many overlap near any IoU threshold,
    scores mostly low with a share ``above`` spread over 0.25 to 1."""
    rng = np.random.default_rng(seed)
    raw = np.empty((batch, 4 + nc, anchors), np.float32)
    for image in raw:
        centers = rng.uniform(40, 600, (8, 2))
        sizes = rng.uniform(10, 200, (8, 2))
        cluster = rng.integers(0, 8, anchors)
        image[:2] = (centers[cluster] + rng.normal(0, 6, (anchors, 2))).T
        image[2:4] = (sizes[cluster] * rng.uniform(0.8, 1.25, (anchors, 2))).T
        scores = rng.uniform(0, 0.2, (nc, anchors))
        high = rng.random(anchors) < above
        scores[rng.integers(0, nc, anchors)[high], np.flatnonzero(high)] = rng.uniform(0.25, 1, high.sum())
        image[4:] = scores
    return raw


def _anchored(seed: int, nc: int, size: int = 640) -> np.ndarray:
    """A YOLO11n-like raw output (1, 4 + nc, 8400) at 640 px: boxes around the anchors of strides 8, 16 and 32,
    background scores around 1e-4 (thousands of candidates at conf 0.001), a dozen objects scoring high."""
    rng = np.random.default_rng(seed)
    grids = [(np.mgrid[0 : size // s, 0 : size // s].reshape(2, -1)[::-1].T + 0.5) * s for s in (8, 16, 32)]
    points = np.concatenate(grids)
    strides = np.concatenate([np.full(len(g), s) for g, s in zip(grids, (8, 16, 32), strict=True)])
    n = len(points)
    xy = points + rng.normal(0, 0.3, (n, 2)) * strides[:, None]
    wh = strides[:, None] * np.exp(rng.normal(1.2, 0.6, (n, 2)))
    logits = rng.normal(-10 if nc > 10 else -7.5, 1.2, (n, nc))
    for _ in range(12):
        size_wh = np.exp(rng.uniform(np.log(16), np.log(300), 2))
        center = rng.uniform(0, size, 2)
        on = (
            (np.abs(points - center) < size_wh / 2).all(1)
            & (strides * 3 < size_wh.max())
            & (strides * 24 > size_wh.min())
        )
        xy[on] = center + rng.normal(0, 0.05, (on.sum(), 2)) * size_wh
        wh[on] = size_wh * np.exp(rng.normal(0, 0.08, (on.sum(), 2)))
        logits[on, rng.integers(nc)] = rng.normal(1, 2, on.sum())
    raw = np.concatenate([xy, wh, 1 / (1 + np.exp(-logits))], 1).T[None]
    return np.ascontiguousarray(raw, dtype=np.float32)


def _nms(ultralytics: Any, raw: np.ndarray, conf: float, iou: float, max_det: int, end2end: bool = False) -> list:
    import torch

    found = ultralytics.non_max_suppression(
        torch.from_numpy(raw.copy()), conf, iou, None, False, max_det=max_det, nc=0, end2end=end2end
    )
    return [boxes[:, :6].float().numpy() for boxes in found]


def _same(ours: list[np.ndarray], theirs: list[np.ndarray]) -> None:
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.dtype == np.float32 and mine.shape == reference.shape
        np.testing.assert_allclose(mine[:, :4], reference[:, :4], atol=1e-4, rtol=0)
        np.testing.assert_allclose(mine[:, 4], reference[:, 4], atol=1e-6, rtol=0)
        np.testing.assert_array_equal(mine[:, 5], reference[:, 5])


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("conf", "iou"), [(0.25, 0.7), (0.25, 0.45), (0.5, 0.3), (0.01, 0.7)])
def test_detections_are_ultralytics_nms(ultralytics: Any, seed: int, conf: float, iou: float) -> None:
    raw = _clustered(seed)
    ours = steps.detections(raw, conf, iou, 300, False)
    _same(ours, _nms(ultralytics, raw, conf, iou, 300))
    assert all(len(found) for found in ours) and all((np.diff(found[:, 4]) <= 0).all() for found in ours)


@pytest.mark.parametrize(("nc", "conf"), [(80, 0.25), (80, 0.001), (1, 0.001)])
def test_detections_on_8400_anchors_are_ultralytics_nms(ultralytics: Any, nc: int, conf: float) -> None:
    """Thousands of candidates at conf 0.001: max_det (300) stops the NMS, several blocks in."""
    raw = _anchored(seed=nc, nc=nc)
    ours = steps.detections(raw, conf, 0.7, 300, False)
    _same(ours, _nms(ultralytics, raw, conf, 0.7, 300))
    if conf < 0.01:
        assert len(ours[0]) == 300 and (raw[0, 4:].max(0) > conf).sum() > 1000


def test_small_nms_blocks_change_nothing(ultralytics: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = _clustered(seed=9, anchors=900)
    theirs = _nms(ultralytics, raw, 0.25, 0.5, 300)
    for block in (1, 7, 64):
        monkeypatch.setattr(steps, "NMS_BLOCK", block)
        _same(steps.detections(raw, 0.25, 0.5, 300, False), theirs)


def test_detections_with_max_det_zero_one_and_all_candidates(ultralytics: Any) -> None:
    raw = _clustered(seed=5)
    for max_det in (1, 5, 17):
        ours = steps.detections(raw, 0.25, 0.7, max_det, False)
        _same(ours, _nms(ultralytics, raw, 0.25, 0.7, max_det))
        assert [len(found) for found in ours] == [max_det] * 3
    low = raw.copy()
    low[:, 4:] = np.minimum(low[:, 4:], 0.2)  # nothing above conf in any image
    assert [found.shape for found in steps.detections(low, 0.25, 0.7, 300, False)] == [(0, 6)] * 3
    one = low.copy()
    one[1, 6, 17] = 0.9  # one candidate, in the second image
    ours = steps.detections(one, 0.25, 0.7, 300, False)
    _same(ours, _nms(ultralytics, one, 0.25, 0.7, 300))
    assert [len(found) for found in ours] == [0, 1, 0] and ours[1][0, 5] == 2
    everything = _clustered(seed=6, anchors=200)
    _same(steps.detections(everything, 0.0, 0.7, 300, False), _nms(ultralytics, everything, 0.0, 0.7, 300))
    assert steps.detections([everything], 0.0, 0.7, 0, False)[0].shape == (0, 6)  # a list: its first element


@pytest.mark.parametrize("seed", range(3))
def test_equal_scores_and_classes_keep_ultralytics_order(ultralytics: Any, seed: int) -> None:
    """Scores in steps of 0.05 and equal best classes: ties resolved as torchvision does (stable: earlier first)."""
    raw = _clustered(seed, nc=3, anchors=400, above=0.6)
    raw[:, 4:] = np.round(raw[:, 4:] * 20) / 20
    raw[:, 5, ::3] = raw[:, 4, ::3]  # equal best scores: the first class, as torch's max
    raw[:, :4, 1::2] = raw[:, :4, ::2]  # identical boxes side by side
    _same(steps.detections(raw, 0.25, 0.6, 300, False), _nms(ultralytics, raw, 0.25, 0.6, 300))


def test_greedy_nms_is_torchvision_on_edge_cases() -> None:
    import torch
    import torchvision

    rng = np.random.default_rng(0)
    boxes = np.array(
        [
            [0, 0, 10, 10],  # IoU 0.5 exactly with the next: not above 0.5, both kept
            [0, 0, 10, 20],
            [5, 5, 5, 5],  # empty boxes: an IoU of 0 / 0 suppresses nothing
            [5, 5, 5, 5],
            [0, 0, 10, 10],  # identical to the first, equal score: the earlier is kept
            [100, 100, 110, 110],
        ],
        np.float32,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.7, 0.9, 0.1], np.float32)
    for iou in (0.5, 0.3, 0.0, 1.0):
        expected = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou).numpy()
        np.testing.assert_array_equal(steps._greedy_nms(boxes, scores, iou, 300), expected)
    for _ in range(20):
        corner = rng.uniform(0, 100, (300, 2)).astype(np.float32)
        many = np.concatenate([corner, corner + rng.uniform(1, 40, (300, 2))], 1).astype(np.float32)
        tied = np.round(rng.random(300), 1).astype(np.float32)
        iou = float(rng.uniform(0.1, 0.9))
        expected = torchvision.ops.nms(torch.from_numpy(many), torch.from_numpy(tied), iou).numpy()
        np.testing.assert_array_equal(steps._greedy_nms(many, tied, iou, 1000), expected)
        np.testing.assert_array_equal(steps._greedy_nms(many, tied, iou, 7), expected[:7])


def test_end_to_end_outputs_are_filtered_only(ultralytics: Any) -> None:
    rng = np.random.default_rng(1)
    raw = np.concatenate(
        [rng.uniform(0, 600, (3, 300, 4)), rng.random((3, 300, 1)), rng.integers(0, 5, (3, 300, 1))], -1
    ).astype(np.float32)
    for max_det, end2end in ((300, True), (10, True), (300, False)):  # (B, N, 6): end-to-end, whatever it is told
        ours = steps.detections(raw, 0.4, 0.7, max_det, end2end)
        _same(ours, _nms(ultralytics, raw, 0.4, 0.7, max_det, end2end))
        assert all(len(found) == min(max_det, (rows[:, 4] > 0.4).sum()) for found, rows in zip(ours, raw, strict=True))
    extra = np.concatenate([raw, rng.random((3, 300, 2), dtype=np.float32)], -1)  # extra channels are dropped
    _same(steps.detections(extra, 0.4, 0.7, 300, True), _nms(ultralytics, raw, 0.4, 0.7, 300, True))
    assert steps.detections(raw[:, :0], 0.4, 0.7, 300, True)[0].shape == (0, 6)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("size", [320, 640])
def test_scale_to_image_is_ultralytics_scale_boxes(ultralytics: Any, shape: tuple[int, int], size: int) -> None:
    import torch

    input_hw = steps.letterbox(np.zeros((*shape, 3), np.uint8), size, 32).shape[1:]
    rng = np.random.default_rng(shape[0] + size)
    corner = rng.uniform(-20, size + 20, (50, 2))
    boxes = np.concatenate([corner, corner + rng.uniform(0, 200, (50, 2)), rng.random((50, 2))], 1)
    boxes = boxes.astype(np.float32)
    before = boxes.copy()
    ours = steps.scale_to_image(boxes, input_hw, shape)
    theirs = ultralytics.scale_boxes(input_hw, torch.from_numpy(boxes[:, :4].copy()), (*shape, 3)).numpy()
    np.testing.assert_allclose(ours[:, :4], theirs, atol=1e-4, rtol=0)
    np.testing.assert_array_equal(ours[:, 4:], boxes[:, 4:])  # score and class as they were
    np.testing.assert_array_equal(boxes, before)  # the input is not changed
    assert ours.dtype == np.float32 and (ours[:, [0, 2]] <= shape[1]).all() and (ours[:, [1, 3]] <= shape[0]).all()
    assert steps.scale_to_image(np.zeros((0, 6), np.float32), input_hw, shape).shape == (0, 6)


def test_the_whole_path_is_ultralytics(ultralytics: Any) -> None:
    """Letterbox, NMS of a batch, scaling back: as `Detector.prepare` and `Detector.detect` chain them."""
    import torch

    images = [_picture((480, 600), seed) for seed in range(3)]
    inputs = np.stack([steps.letterbox(image, 640, 32) for image in images])
    raw = _clustered(seed=11, anchors=500)
    expected = ultralytics.non_max_suppression(torch.from_numpy(raw), 0.25, 0.7, None, False, max_det=300, nc=0)
    ours = [
        steps.scale_to_image(found, inputs.shape[2:], image.shape[:2])
        for found, image in zip(steps.detections(raw, 0.25, 0.7, 300, False), images, strict=True)
    ]
    for found, image in zip(expected, images, strict=True):
        found[:, :4] = ultralytics.scale_boxes(torch.Size(inputs.shape[2:]), found[:, :4], (*image.shape[:2], 3))
    _same(ours, [found.numpy() for found in expected])


def test_the_module_imports_without_torch_or_ultralytics() -> None:
    code = (
        "import sys\n"
        "sys.modules['torch'] = None\n"
        "sys.modules['ultralytics'] = None\n"
        "import numpy as np\n"
        "from pipeline.inference import steps\n"
        "image = np.zeros((48, 64, 3), np.uint8)\n"
        "raw = np.zeros((1, 5, 10), np.float32)\n"
        "raw[0, 2:4] = 5\n"
        "raw[0, 4, 3] = 0.9\n"
        "found = steps.detections(raw, 0.25, 0.7, 300, False)[0]\n"
        "assert steps.letterbox(image, 64, 32).shape == (3, 64, 64) and found.shape == (1, 6)\n"
        "assert steps.scale_to_image(found, (64, 64), (48, 64)).shape == (1, 6)\n"
        "assert not any(name.split('.')[0] in ('torch', 'ultralytics', 'torchvision') for name in sys.modules\n"
        "               if sys.modules[name] is not None)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

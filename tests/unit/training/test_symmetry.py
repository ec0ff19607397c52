"""The square-symmetry step: each of the 8 symmetries moves the boxes exactly with the pixels, all 8
come equally often, and a flipped view from ultralytics' own flips is folded in correctly."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import numpy as np
import pytest
from ultralytics.utils.instance import Instances

from pipeline.training.symmetry import RandomSquareSymmetry, after_flip, transform_image, transform_instances, unflipped

ELEMENTS = list(itertools.product((False, True), (None, 0, 1, -1)))  # (transpose, cv2 flip code)


def reference(image: np.ndarray, transpose: bool, flip: int | None) -> np.ndarray:
    """The symmetry by NumPy indexing: transpose, then flip vertically (0), horizontally (1) or both (-1)."""
    out = image.transpose(1, 0, *range(2, image.ndim)) if transpose else image
    if flip in (0, -1):
        out = out[::-1]
    if flip in (1, -1):
        out = out[:, ::-1]
    return out


@pytest.mark.parametrize("shape", [(40, 40, 3), (40, 40), (40, 40, 1), (30, 50, 3)])
@pytest.mark.parametrize(("transpose", "flip"), ELEMENTS)
def test_images_turn_as_numpy_says(shape: tuple[int, ...], transpose: bool, flip: int | None) -> None:
    image = np.random.default_rng(1).integers(0, 256, shape, np.uint8)
    out = transform_image(image, transpose, flip)
    assert out.shape == reference(image, transpose, flip).shape
    assert np.array_equal(out, reference(image, transpose, flip))


@pytest.mark.parametrize("normalized", [False, True])
@pytest.mark.parametrize(("transpose", "flip"), ELEMENTS)
def test_boxes_move_exactly_with_the_pixels(transpose: bool, flip: int | None, normalized: bool) -> None:
    image = np.zeros((100, 100), np.uint8)
    image[10:30, 50:90] = 255  # x 50..90, y 10..30
    instances = Instances(np.array([[50, 10, 90, 30]], np.float32), bbox_format="xyxy", normalized=False)
    if normalized:  # as ultralytics' transforms hand them over late in the pipeline
        instances.convert_bbox("xywh")
        instances.normalize(100, 100)
    size = 1 if normalized else 100
    moved = transform_instances(instances, size, size, transpose, flip)
    if normalized:
        moved.denormalize(100, 100)
    moved.convert_bbox("xyxy")
    ys, xs = np.nonzero(transform_image(image, transpose, flip))
    assert np.allclose(moved.bboxes[0], [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])


@pytest.mark.parametrize("pending", [None, 0, 1, -1])
@pytest.mark.parametrize(("transpose", "flip"), ELEMENTS)
def test_a_flipped_view_is_folded_into_one_call(pending: int | None, transpose: bool, flip: int | None) -> None:
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), np.uint8)
    view = reference(image, False, pending)  # what np.flipud / np.fliplr hand on
    base, found = unflipped(view)
    assert found == pending and base.flags.c_contiguous
    out = transform_image(base, transpose, after_flip(found, transpose, flip))
    assert out.flags.c_contiguous
    assert np.array_equal(out, reference(view, transpose, flip))


def _labels(image: np.ndarray) -> dict:
    h, w = image.shape[:2]
    box = np.array([[0.25 * w, 0.1 * h, 0.5 * w, 0.3 * h]], np.float32)
    return {"img": image, "instances": Instances(box, bbox_format="xyxy", normalized=False), "cls": np.zeros((1, 1))}


def _which(image: np.ndarray, out: np.ndarray) -> tuple[bool, int | None]:
    (element,) = [
        e for e in ELEMENTS if reference(image, *e).shape == out.shape and np.array_equal(reference(image, *e), out)
    ]
    return element


def test_all_eight_symmetries_come_equally_often_and_boxes_follow() -> None:
    image = np.arange(16 * 16 * 3, dtype=np.uint8).reshape(16, 16, 3)  # no symmetry of its own
    step = RandomSquareSymmetry(1.0)
    random.seed(0)
    counts = Counter()
    for _ in range(4000):
        labels = step(_labels(image))
        element = _which(image, labels["img"])
        counts[element] += 1
        expected = transform_instances(_labels(image)["instances"], 16, 16, *element)
        assert np.allclose(labels["instances"].bboxes, expected.bboxes)
    assert set(counts) == set(ELEMENTS)
    assert all(400 < n < 600 for n in counts.values()), counts  # 500 each expected


def test_probability_and_non_square_images() -> None:
    square = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16)
    random.seed(1)
    untouched = sum(
        _which(square, RandomSquareSymmetry(0.5)(_labels(square))["img"]) == (False, None) for _ in range(800)
    )
    assert 400 < untouched < 600  # half skipped, plus an eighth of the rest drawing the identity: 450 expected
    wide = np.arange(8 * 24, dtype=np.uint8).reshape(8, 24)
    seen = {_which(wide, RandomSquareSymmetry(1.0)(_labels(wide))["img"]) for _ in range(200)}
    assert seen == {(False, None), (False, 0), (False, 1), (False, -1)}  # flips only: the shape must stay

"""The square's symmetries (flips, quarter turns, transposes) as one cheap step of the training transforms.

Surface textures have no "up", so every one of the square's eight symmetries is free data. Done by
albumentations, they cost about 1 ms per 640-px image: the bbox-aware Compose converts, checks and
filters the boxes around every spatial transform. Here one OpenCV call turns the image (about
0.3 ms) and the boxes move by a column swap and ultralytics' own flips. ``augment.symmetry`` is the
probability; a sample then gets one of the eight uniformly, identity included, as albumentations'
``SquareSymmetry`` does, so ``symmetry: 1`` gives each an equal share.

The step sits after ultralytics' flips and HSV, just before its ``Format``. Images that are not
square (rectangular training) only get flips, so every image of a batch keeps its shape.
Ultralytics' ``fliplr``/``flipud`` leave the image as a reversed NumPy view, which every later
reader (OpenCV, ``Format``'s copy) walks backwards at a fraction of the speed; the step folds such
a pending flip into its own single OpenCV call on the underlying contiguous image instead.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from pipeline.yolo_env import configure_ultralytics

configure_ultralytics()  # before ultralytics' first import: its settings file stays out of the user's home

from ultralytics.data.dataset import YOLODataset  # noqa: E402
from ultralytics.utils import LOGGER, colorstr  # noqa: E402
from ultralytics.utils.instance import Instances  # noqa: E402

from pipeline.augment.fast_transforms import transform_image  # noqa: E402

# cv2.flip codes: None (no flip), 0 vertical, 1 horizontal, -1 both; as (vertical, horizontal) bits.
_FLIP_CODES = (None, 0, 1, -1)
_FLIP_BITS = {None: (False, False), 0: (True, False), 1: (False, True), -1: (True, True)}
_FLIP_CODE = {bits: code for code, bits in _FLIP_BITS.items()}


def transform_instances(instances: Instances, width: int, height: int, transpose: bool, flip: int | None) -> Instances:
    """The boxes (and any segments or keypoints) moved as `transform_image` moves the pixels.

    ``width`` and ``height`` are the image's before the transform, in the instances' units (1 when
    they are normalised).
    """
    if transpose:  # x <-> y: in xywh, (x, y, w, h) becomes (y, x, h, w)
        instances.convert_bbox("xywh")
        keypoints = instances.keypoints
        if keypoints is not None:
            keypoints = keypoints[..., [1, 0, *range(2, keypoints.shape[-1])]]
        instances = Instances(
            instances.bboxes[:, [1, 0, 3, 2]],
            segments=instances.segments[..., [1, 0]],
            keypoints=keypoints,
            bbox_format="xywh",
            normalized=instances.normalized,
        )
        width, height = height, width
    if flip in (0, -1):
        instances.flipud(height)
    if flip in (1, -1):
        instances.fliplr(width)
    return instances


def unflipped(img: np.ndarray) -> tuple[np.ndarray, int | None]:
    """``img`` as (a contiguous array, the flip code that turns it into ``img``).

    A reversed view (what ``np.flipud``/``np.fliplr`` return) gives back the array it views.
    """
    vertical, horizontal = img.strides[0] < 0, img.ndim > 1 and img.strides[1] < 0
    if not (vertical or horizontal):
        return img, None
    base = img[:: -1 if vertical else 1, :: -1 if horizontal else 1]
    if not base.flags.c_contiguous:
        return img, None
    return base, _FLIP_CODE[(vertical, horizontal)]


def after_flip(flip: int | None, transpose: bool, then: int | None) -> int | None:
    """The one flip to do after the (optional) transpose that does what ``flip`` before it and ``then``
    after it do together: ``then(T(flip(x))) == result(T(x))``.

    A transpose turns a vertical flip before it into a horizontal one after it, and back.
    """
    vertical, horizontal = _FLIP_BITS[flip]
    if transpose:
        vertical, horizontal = horizontal, vertical
    then_vertical, then_horizontal = _FLIP_BITS[then]
    return _FLIP_CODE[(vertical != then_vertical, horizontal != then_horizontal)]


class RandomSquareSymmetry:
    """Ultralytics-style transform: with probability ``p``, one of the square's 8 symmetries, uniformly."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if self.p <= 0 or random.random() >= self.p:
            return labels
        img = labels["img"]
        height, width = img.shape[:2]
        transpose = height == width and random.random() < 0.5
        flip = random.choice(_FLIP_CODES)
        base, pending = unflipped(img)
        if transpose or flip is not None:  # the identity comes one time in eight
            instances = labels.pop("instances")
            if instances.normalized:
                width = height = 1
            labels["instances"] = transform_instances(instances, width, height, transpose, flip)
        labels["img"] = transform_image(base, transpose, after_flip(pending, transpose, flip))
        return labels

    def __repr__(self) -> str:
        return f"RandomSquareSymmetry(p={self.p})"


class SquareSymmetryDataset(YOLODataset):
    """A YOLODataset whose training transforms end with `RandomSquareSymmetry` (before ``Format``).

    Ultralytics builds the dataset itself (``build_yolo_dataset`` picks the class); `add_symmetry`
    turns the instance it built into this class, keeping every argument as ultralytics set it, so
    that the rebuild of the transforms when mosaic closes keeps the step too.
    """

    symmetry: float = 0.0

    def build_transforms(self, hyp: Any = None) -> Any:
        transforms = super().build_transforms(hyp)
        if self.augment and self.symmetry > 0:
            transforms.insert(len(transforms.transforms) - 1, RandomSquareSymmetry(self.symmetry))
        return transforms


def add_symmetry(dataset: Any, p: float, hyp: Any) -> Any:
    """``dataset`` (a training YOLODataset) with the symmetry step at probability ``p``; unchanged when 0."""
    if p <= 0 or not dataset.augment:
        return dataset
    if type(dataset) not in (YOLODataset, SquareSymmetryDataset):
        raise TypeError(f"augment.symmetry needs a detection dataset, got {type(dataset).__name__}")
    dataset.__class__ = SquareSymmetryDataset
    dataset.symmetry = p
    dataset.transforms = dataset.build_transforms(hyp)
    # Beside ultralytics' own "albumentations: ..." line, so a log shows the whole training pipeline.
    LOGGER.info(f"{colorstr('symmetry: ')}{RandomSquareSymmetry(p)!r}: the square's 8 flips and quarter turns")
    return dataset

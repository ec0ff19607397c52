"""Albumentations transforms that do the same job with cheaper OpenCV calls.

The training loader runs the albumentations block on every image on the CPU, so a transform's cost
is paid per sample. ``RandomRotate90`` and ``SquareSymmetry`` (alias ``D4``) here give exactly
albumentations' pixels and boxes (same parameters, same random draws) but turn and mirror the image
with ``cv2.rotate``, ``cv2.flip`` and ``cv2.transpose``. Albumentations returns NumPy's reversed and
transposed views, which every later step then reads at a fraction of the speed: in ultralytics'
training step at 640 px, ``RandomRotate90(p=0.5)`` costs about a third as much here.
`pipeline.augment.spec` uses these in place of albumentations' classes of the same name.

``FastGaussNoise`` adds zero-mean Gaussian noise, the same for every channel (sensor noise), cut
from a bank drawn once per process: about 1 ms per 640-px image, where ``GaussNoise`` takes 8.

The classes register with albumentations' serializer under ``pipeline.fast_transforms.<name>`` when
this module is imported; the trainer imports it, so ``A.from_dict`` finds them in a resumed or
multi-GPU training too. That name is fixed (it is where this module used to live), not read from the
module's path, so checkpoints written before or after a move of this file load alike.
"""

from __future__ import annotations

import os
from typing import Any, Literal

# albumentations asks PyPI for a newer version when it is imported, unless this is set. Here at import,
# as the classes below subclass its transforms; `pipeline.augment.spec` takes albumentations from here.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from pydantic import Field  # noqa: E402

_CV2_CHANNELS = 4  # cv2.rotate handles up to 4 channels; more go to albumentations' own rotation
# A transpose followed by one flip is a quarter turn, which cv2.rotate does in one pass.
_QUARTER_TURNS = {0: cv2.ROTATE_90_COUNTERCLOCKWISE, 1: cv2.ROTATE_90_CLOCKWISE}


def transform_image(img: np.ndarray, transpose: bool, flip: int | None) -> np.ndarray:
    """``img`` mirrored across its main diagonal (``transpose``) and then flipped (cv2 code ``flip``: 0
    vertical, 1 horizontal, -1 both): any of the square's eight symmetries in at most two OpenCV calls."""
    if transpose and flip in _QUARTER_TURNS:
        out = cv2.rotate(img, _QUARTER_TURNS[flip])
    else:
        out = cv2.transpose(img) if transpose else img
        if flip is not None:
            out = cv2.flip(out, flip)
    return out[..., None] if img.ndim == 3 and out.ndim == 2 else out  # cv2 drops a single channel's axis


# Albumentations' names for the symmetries (``fgeometric.d4``, ``rot90`` factors) as (transpose, flip).
_D4_MEMBERS = {
    "e": (False, None),
    "r90": (True, 0),  # counterclockwise
    "r180": (False, -1),
    "r270": (True, 1),
    "v": (False, 0),
    "hvt": (True, -1),  # the anti-diagonal mirror
    "h": (False, 1),
    "t": (True, None),
}
_ROT90_FACTORS = {0: "e", 1: "r90", 2: "r180", 3: "r270"}

SERIALIZED_PREFIX = "pipeline.fast_transforms"  # the name stored in every checkpoint's augmentations


class _StableName:
    """Serialised as ``pipeline.fast_transforms.<class>`` wherever this module lives (checkpoints hold it)."""

    @classmethod
    def get_class_fullname(cls) -> str:
        return f"{SERIALIZED_PREFIX}.{cls.__name__}"


class RandomRotate90(_StableName, A.RandomRotate90):
    """``A.RandomRotate90`` with the image turned by OpenCV: the same result, faster."""

    def apply(self, img: np.ndarray, factor: Literal[0, 1, 2, 3], **params: Any) -> np.ndarray:
        if img.ndim == 3 and img.shape[2] > _CV2_CHANNELS:
            return super().apply(img, factor, **params)
        return transform_image(img, *_D4_MEMBERS[_ROT90_FACTORS[factor]])


class SquareSymmetry(_StableName, A.SquareSymmetry):
    """``A.SquareSymmetry`` (flips, 90-degree turns, transposes) done by OpenCV: the same result, faster."""

    def apply(self, img: np.ndarray, group_element: str, **params: Any) -> np.ndarray:
        if img.ndim == 3 and img.shape[2] > _CV2_CHANNELS:
            return super().apply(img, group_element, **params)
        return transform_image(img, *_D4_MEMBERS[group_element])


class D4(_StableName, A.D4):
    """``A.D4`` (the same eight symmetries as ``SquareSymmetry``) done by OpenCV."""

    def apply(self, img: np.ndarray, group_element: str, **params: Any) -> np.ndarray:
        if img.ndim == 3 and img.shape[2] > _CV2_CHANNELS:
            return super().apply(img, group_element, **params)
        return transform_image(img, *_D4_MEMBERS[group_element])


_BANK_SIDE = 2048
_BANK_STD = 64  # int16 noise of std 64: fine steps when scaled down to a few grey levels
_bank: np.ndarray | None = None


def _noise_bank() -> np.ndarray:
    """Standard Gaussian noise as int16 (std ``_BANK_STD``), drawn once per process."""
    global _bank
    if _bank is None:
        draw = np.random.default_rng(0).standard_normal((_BANK_SIDE, _BANK_SIDE), dtype=np.float32)
        _bank = np.clip(draw * _BANK_STD, -32767, 32767).astype(np.int16)
    return _bank


class FastGaussNoise(_StableName, A.ImageOnlyTransform):
    """Zero-mean Gaussian noise with a standard deviation drawn from ``std_range`` (fraction of 255).

    The same noise goes to every channel, like a camera's luminance noise. The noise field is a
    random window of a bank drawn once per process, so an image costs one multiply and one add;
    images larger than the bank get freshly drawn noise. Only uint8 images.
    """

    class InitSchema(A.ImageOnlyTransform.InitSchema):
        std_range: tuple[float, float] = Field((0.02, 0.06))

    def __init__(self, std_range: tuple[float, float] = (0.02, 0.06), p: float = 0.5):
        super().__init__(p=p)
        low, high = std_range
        if not 0 <= low <= high <= 1:
            raise ValueError(f"std_range must be 0 <= low <= high <= 1, got {std_range}")
        self.std_range = (low, high)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        rng = self.random_generator
        std = rng.uniform(*self.std_range) * 255
        if height > _BANK_SIDE or width > _BANK_SIDE:
            noise = (rng.standard_normal((height, width), dtype=np.float32) * _BANK_STD).astype(np.int16)
        else:
            top = int(rng.integers(0, _BANK_SIDE - height + 1))
            left = int(rng.integers(0, _BANK_SIDE - width + 1))
            noise = _noise_bank()[top : top + height, left : left + width]
        return {"noise": noise, "std": std}

    def apply(self, img: np.ndarray, noise: np.ndarray, std: float, **params: Any) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(f"FastGaussNoise takes uint8 images, got {img.dtype}")
        scaled = cv2.multiply(noise, std / _BANK_STD, dtype=cv2.CV_16S)
        channels = 1 if img.ndim == 2 else img.shape[2]
        if channels > 1:
            scaled = cv2.merge([scaled] * channels)
        noisy = cv2.add(img, scaled, dtype=cv2.CV_8U)  # saturating: clipped to 0..255
        return noisy.reshape(img.shape)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("std_range",)


# By the name a config uses; the first three stand in for albumentations' classes of the same name.
TRANSFORMS: dict[str, type] = {
    "RandomRotate90": RandomRotate90,
    "SquareSymmetry": SquareSymmetry,
    "D4": D4,
    "FastGaussNoise": FastGaussNoise,
}

"""The OpenCV transforms: the stand-ins give albumentations' exact pixels and boxes, and the noise is
the noise it says it is."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from pipeline.augment import fast_transforms
from pipeline.augment.spec import build_transforms, serialize
from pipeline.config import AugmentConfig, ConfigError

BOXES = np.array([[0.3, 0.25, 0.2, 0.1], [0.7, 0.6, 0.1, 0.3]])
SHAPES = [(64, 64, 3), (48, 64, 3), (48, 64), (48, 64, 1)]


def _compose(transform: object, seed: int) -> A.Compose:
    bboxes = A.BboxParams(format="yolo", label_fields=["class_labels"])
    return A.Compose([transform], bbox_params=bboxes, seed=seed)


@pytest.mark.parametrize("name", ["RandomRotate90", "SquareSymmetry", "D4"])
@pytest.mark.parametrize("shape", SHAPES)
def test_stand_ins_give_albumentations_exact_pixels_and_boxes(name: str, shape: tuple[int, ...]) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, np.uint8)
    for seed in range(8):
        ours = _compose(fast_transforms.TRANSFORMS[name](p=1.0), seed)(image=image, bboxes=BOXES, class_labels=[1, 2])
        theirs = _compose(getattr(A, name)(p=1.0), seed)(image=image, bboxes=BOXES, class_labels=[1, 2])
        assert ours["image"].shape == theirs["image"].shape
        assert np.array_equal(ours["image"], theirs["image"])
        assert ours["image"].flags.c_contiguous  # a real array, not a reversed view
        assert np.allclose(ours["bboxes"], theirs["bboxes"], atol=1e-7)


def test_config_names_resolve_to_the_stand_ins_and_survive_serialisation() -> None:
    config = AugmentConfig(albumentations=[{"transform": "RandomRotate90", "p": 0.5}, {"transform": "D4"}])
    built = build_transforms(config)
    assert [type(t) for t in built] == [fast_transforms.RandomRotate90, fast_transforms.D4]
    serialised = serialize(config)
    assert serialised[0]["transform"]["__class_fullname__"] == "pipeline.fast_transforms.RandomRotate90"
    restored = [A.from_dict(d) for d in serialised]  # what ultralytics does with the trainer's `augmentations`
    assert [type(t) for t in restored] == [fast_transforms.RandomRotate90, fast_transforms.D4]
    assert [t.p for t in restored] == [0.5, 0.5]  # a spec without p gets 0.5


def _noise(image: np.ndarray, std_range: tuple[float, float], seed: int = 0) -> np.ndarray:
    return A.Compose([fast_transforms.FastGaussNoise(std_range=std_range, p=1.0)], seed=seed)(image=image)["image"]


def test_noise_has_the_asked_spread_no_bias_and_is_the_same_on_every_channel() -> None:
    grey = np.full((256, 320, 3), 128, np.uint8)
    noisy = _noise(grey, (0.04, 0.04))
    assert noisy.shape == grey.shape and noisy.dtype == np.uint8
    delta = noisy.astype(np.int16) - 128
    assert abs(delta.std() - 0.04 * 255) < 0.05 * 0.04 * 255
    assert abs(delta.mean()) < 0.2
    assert np.array_equal(noisy[..., 0], noisy[..., 1]) and np.array_equal(noisy[..., 1], noisy[..., 2])


def test_noise_saturates_instead_of_wrapping_around() -> None:
    bright = np.full((128, 128, 3), 250, np.uint8)
    noisy = _noise(bright, (0.06, 0.06))
    assert noisy.min() > 150 and noisy.max() == 255  # wrapping around would put some near 0 (std 15)


@pytest.mark.parametrize("shape", [(40, 50), (40, 50, 1), (2100, 12, 3)])  # grey, one channel, larger than the bank
def test_noise_keeps_the_shape_of_any_image(shape: tuple[int, ...]) -> None:
    image = np.full(shape, 100, np.uint8)
    noisy = _noise(image, (0.05, 0.05))
    assert noisy.shape == shape and 3 < (noisy.astype(float) - 100).std() < 20


def test_noise_follows_the_seed() -> None:
    image = np.full((64, 64, 3), 128, np.uint8)
    assert np.array_equal(_noise(image, (0.02, 0.06), seed=3), _noise(image, (0.02, 0.06), seed=3))
    assert not np.array_equal(_noise(image, (0.02, 0.06), seed=3), _noise(image, (0.02, 0.06), seed=4))


def test_bad_noise_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"augment.albumentations\[0\]: FastGaussNoise: std_range must be"):
        build_transforms(AugmentConfig(albumentations=[{"transform": "FastGaussNoise", "std_range": [0.5, 0.1]}]))
    with pytest.raises(TypeError, match="uint8"):
        _noise(np.zeros((8, 8, 3), np.float32), (0.1, 0.1))

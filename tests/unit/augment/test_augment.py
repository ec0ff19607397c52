"""The albumentations pipeline: boxes move exactly with the pixels, configs are checked, and the training
dataset runs the configured transforms instead of ultralytics' default block."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from ultralytics.cfg import get_cfg

from pipeline.augment.presets import PRESETS
from pipeline.augment.spec import build_transforms, compose, describe, serialize
from pipeline.config import AugmentConfig, ConfigError, build_config
from pipeline.data.training_data import prepare_training_data
from pipeline.training.loader import STOCK, albumentations_block, training_dataset
from pipeline.training.symmetry import RandomSquareSymmetry


def marked_image(box: tuple[int, int, int, int], shape: tuple[int, int] = (48, 64)) -> np.ndarray:
    image = np.zeros((*shape, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = 255
    return image


def white_extent(image: np.ndarray) -> tuple[float, float, float, float]:
    """The YOLO box (cx, cy, w, h) of the white pixels."""
    ys, xs = np.nonzero(image[..., 0] > 127)
    h, w = image.shape[:2]
    x1, x2, y1, y2 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    return ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)


@pytest.mark.parametrize("transform", ["HorizontalFlip", "VerticalFlip", "RandomRotate90", "Transpose"])
@pytest.mark.parametrize("seed", range(4))
def test_spatial_transforms_move_boxes_exactly_with_the_pixels(transform: str, seed: int) -> None:
    pipeline = compose(AugmentConfig(albumentations=[{"transform": transform, "p": 1.0}]))
    pipeline.set_random_seed(seed)
    pixels = (8, 4, 28, 14)  # x1 y1 x2 y2 on a 64x48 image
    box = ((8 + 28) / 2 / 64, (4 + 14) / 2 / 48, 20 / 64, 10 / 48)
    out = pipeline(image=marked_image(pixels), bboxes=np.array([box]), class_labels=np.array([3]))
    (moved,) = out["bboxes"]
    assert np.allclose(moved, white_extent(out["image"]), atol=1e-6)
    assert list(out["class_labels"]) == [3]


def test_horizontal_flip_mirrors_the_centre() -> None:
    pipeline = compose(AugmentConfig(albumentations=[{"transform": "HorizontalFlip", "p": 1.0}]))
    out = pipeline(
        image=marked_image((8, 4, 28, 14)), bboxes=np.array([[0.28125, 0.1875, 0.3125, 0.2083333]]), class_labels=[0]
    )
    assert np.allclose(out["bboxes"][0], [1 - 0.28125, 0.1875, 0.3125, 0.2083333], atol=1e-6)


def test_rotate_90_turns_the_box_with_the_image() -> None:
    pipeline = compose(AugmentConfig(albumentations=[{"transform": "RandomRotate90", "p": 1.0}]))
    seen = set()
    for seed in range(12):
        pipeline.set_random_seed(seed)
        out = pipeline(
            image=marked_image((8, 4, 28, 14)),
            bboxes=np.array([[0.28125, 0.1875, 0.3125, 0.2083333]]),
            class_labels=[0],
        )
        turns = next(k for k in range(4) if np.array_equal(np.rot90(marked_image((8, 4, 28, 14)), k), out["image"]))
        seen.add(turns)
        w, h = out["bboxes"][0][2:] * out["image"].shape[1::-1]  # in pixels: 20 x 10, turned or not
        assert np.allclose((w, h), (20, 10) if turns % 2 == 0 else (10, 20), atol=1e-4)
        assert np.allclose(out["bboxes"][0], white_extent(out["image"]), atol=1e-6)
    assert seen == {0, 1, 2, 3}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_builds_and_survives_serialisation(preset: str) -> None:
    config = AugmentConfig(preset=preset)
    built = build_transforms(config)
    assert [type(t).__name__ for t in built] == [t["transform"] for t in PRESETS[preset].albumentations]
    restored = [A.from_dict(d) for d in serialize(config)]  # what ultralytics does with its `augmentations`
    assert [type(t).__name__ for t in restored] == [type(t).__name__ for t in built]
    assert [t.p for t in restored] == [t["p"] for t in PRESETS[preset].albumentations]


def test_a_preset_fills_only_the_keys_the_config_leaves_unset() -> None:
    surface = AugmentConfig(preset="surface")
    assert (surface.symmetry, surface.degrees) == (1.0, 5.0)
    assert "symmetry" not in surface.ultralytics_hyp() and surface.ultralytics_hyp()["degrees"] == 5.0
    assert AugmentConfig(preset="surface", degrees=0).degrees == 0  # the config's own value wins
    overridden = build_config({"augment": {"preset": "none"}}, overrides=["augment.preset=surface"])
    assert overridden.augment.symmetry == 1.0
    assert (AugmentConfig(preset="none").symmetry, AugmentConfig().degrees) == (0.0, 0.0)


def test_the_config_list_follows_the_preset() -> None:
    config = AugmentConfig(preset="surface-light", albumentations=[{"transform": "CLAHE", "p": 0.1, "clip_limit": 2.0}])
    assert [t["transform"] for t in describe(config)][-1] == "CLAHE"
    assert describe(config)[-1] == {"transform": "CLAHE", "p": 0.1, "clip_limit": 2.0}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {"transform": "RandomFlipp"},
            "augment.albumentations[0]: transform: 'RandomFlipp' is not an albumentations transform",
        ),
        ({"transform": "GaussNoise", "sigma": 3}, "augment.albumentations[0]: GaussNoise: unknown parameter 'sigma'"),
        ({"transform": "GaussNoise", "std_range": [3, 1]}, "augment.albumentations[0]: GaussNoise: std_range: "),
        ({"transform": "Compose"}, "augment.albumentations[0]: transform: 'Compose' is not an albumentations"),
    ],
)
def test_bad_transforms_stop_with_the_config_field(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_transforms(AugmentConfig(albumentations=[spec]))
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_bad_probability_and_preset_are_config_errors() -> None:
    with pytest.raises(ConfigError, match=r"augment.albumentations.0.p: must be <= 1, got 2"):
        build_config({"augment": {"albumentations": [{"transform": "VerticalFlip", "p": 2}]}})
    with pytest.raises(ConfigError, match="^x.yaml: augment.preset: must be one of none, surface"):
        build_config({"augment": {"preset": "metal"}}, "x.yaml")


def _quiet_dataset(synth_data: Path, tmp_path: Path, augment: dict, augmentations: object = "config"):
    """The training dataset with every ultralytics augmentation off, so only the albumentations block changes pixels."""
    still = {"mosaic": 0.0, "translate": 0.0, "scale": 0.0, "fliplr": 0.0, "hsv_h": 0.0, "hsv_s": 0.0, "hsv_v": 0.0}
    config = build_config(
        {"data": {"path": str(synth_data)}, "train": {"imgsz": 64, "batch": 4}, "augment": {**still, **augment}}
    )
    data = prepare_training_data(config.data, tmp_path)
    chosen = serialize(config.augment) if augmentations == "config" else augmentations
    return training_dataset(config, data.dataset.data_yaml, chosen, tmp_path)


def test_the_training_dataset_runs_the_configured_transforms_not_the_default_block(
    synth_data: Path, tmp_path: Path
) -> None:
    ours = albumentations_block(_quiet_dataset(synth_data, tmp_path, {"preset": "surface"}))
    expected = [t["transform"] for t in PRESETS["surface"].albumentations]
    assert [type(t).__name__ for t in ours.transform.transforms] == expected
    stock = albumentations_block(_quiet_dataset(synth_data, tmp_path, {}, augmentations=STOCK))
    assert [type(t).__name__ for t in stock.transform.transforms][:4] == ["Blur", "MedianBlur", "ToGray", "CLAHE"]
    nothing = albumentations_block(_quiet_dataset(synth_data, tmp_path, {"preset": "none"}))
    assert list(nothing.transform.transforms) == []  # "none" means none, not ultralytics' default


def test_the_training_dataset_really_flips_images_and_boxes(synth_data: Path, tmp_path: Path) -> None:
    plain = _quiet_dataset(synth_data, tmp_path, {"preset": "none"})
    flipped = _quiet_dataset(synth_data, tmp_path, {"albumentations": [{"transform": "VerticalFlip", "p": 1.0}]})
    torch.manual_seed(0)
    before, after = plain[0], flipped[0]
    assert torch.equal(after["img"], before["img"].flip(1))  # CHW: dimension 1 is the height
    expected = before["bboxes"].clone()
    expected[:, 1] = 1 - expected[:, 1]
    assert torch.allclose(after["bboxes"], expected, atol=1e-5)
    assert torch.equal(after["cls"], before["cls"])


def test_the_symmetry_step_runs_last_before_format_and_outlives_close_mosaic(synth_data: Path, tmp_path: Path) -> None:
    dataset = _quiet_dataset(synth_data, tmp_path, {"symmetry": 1.0})
    names = [type(t).__name__ for t in dataset.transforms.transforms]
    assert names[-2:] == ["RandomSquareSymmetry", "Format"]
    dataset.close_mosaic(get_cfg())  # what the trainer does for the last close_mosaic epochs
    assert [type(t).__name__ for t in dataset.transforms.transforms][-2:] == ["RandomSquareSymmetry", "Format"]
    off = _quiet_dataset(synth_data, tmp_path, {"symmetry": 0.0})
    stock = _quiet_dataset(synth_data, tmp_path, {"symmetry": 1.0}, augmentations=STOCK)
    for other in (off, stock):
        assert not any(isinstance(t, RandomSquareSymmetry) for t in other.transforms.transforms)


def test_the_training_dataset_really_turns_images_and_boxes(synth_data: Path, tmp_path: Path) -> None:
    plain = _quiet_dataset(synth_data, tmp_path, {"preset": "none"})
    turned = _quiet_dataset(synth_data, tmp_path, {"preset": "none", "symmetry": 1.0})
    seen = set()
    for i in range(12):
        before, after = plain[i], turned[i]
        image = before["img"].permute(1, 2, 0).numpy()  # CHW tensors back to HWC
        candidates = [
            (t, f)
            for t in (False, True)
            for f in (None, 0, 1, -1)
            if np.array_equal(_turn(image, t, f), after["img"].permute(1, 2, 0).numpy())
        ]
        assert candidates, f"sample {i}: not a symmetry of the untouched image"
        seen.add(candidates[0])
        boxes = before["bboxes"].numpy()  # normalised centre x, y, w, h
        expected = [_turn_box(b, *candidates[0]) for b in boxes]
        assert np.allclose(sorted(map(tuple, after["bboxes"].numpy())), sorted(expected), atol=1e-5)
    assert len(seen) > 3


def _turn(image: np.ndarray, transpose: bool, flip: int | None) -> np.ndarray:
    out = image.transpose(1, 0, 2) if transpose else image
    out = out[::-1] if flip in (0, -1) else out
    return out[:, ::-1] if flip in (1, -1) else out


def _turn_box(box: np.ndarray, transpose: bool, flip: int | None) -> tuple[float, ...]:
    x, y, w, h = box
    if transpose:
        x, y, w, h = y, x, h, w
    y = 1 - y if flip in (0, -1) else y
    x = 1 - x if flip in (1, -1) else x
    return (x, y, w, h)

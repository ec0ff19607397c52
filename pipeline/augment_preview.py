"""`augment preview`: a grid of augmented training samples with their boxes, as the model will see them.

The samples come out of the real training dataset (mosaic, affine, the configured albumentations
block, HSV, flips), so a box that a transform moved wrongly, or a preset too strong for the data,
shows up here before any GPU time is spent.
"""

from __future__ import annotations

import math
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pipeline.augment import serialize
from pipeline.config import Config
from pipeline.data.training_data import prepare_training_data

_COLOURS = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207), (10, 249, 72)]


@dataclass(frozen=True)
class Preview:
    out: Path
    samples: int
    boxes: int
    transforms: int


def draw_sample(image: np.ndarray, boxes_xywhn: np.ndarray, classes: np.ndarray, names: dict[int, str]) -> np.ndarray:
    """One RGB sample with its boxes (normalised centre x, y, width, height) drawn on a BGR copy."""
    canvas = np.ascontiguousarray(image[..., ::-1])
    h, w = canvas.shape[:2]
    for (cx, cy, bw, bh), cls in zip(boxes_xywhn, classes):
        colour = _COLOURS[int(cls) % len(_COLOURS)]
        x1, y1 = int(round((cx - bw / 2) * w)), int(round((cy - bh / 2) * h))
        x2, y2 = int(round((cx + bw / 2) * w)), int(round((cy + bh / 2) * h))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, 1)
        cv2.putText(canvas, names.get(int(cls), str(int(cls))), (x1 + 2, max(y1 - 3, 9)), 0, 0.35, colour, 1)
    return canvas


def grid(tiles: list[np.ndarray], columns: int, gap: int = 4) -> np.ndarray:
    size = max(max(t.shape[:2]) for t in tiles)
    rows = math.ceil(len(tiles) / columns)
    canvas = np.full((rows * (size + gap) + gap, columns * (size + gap) + gap, 3), 40, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = gap + r * (size + gap), gap + c * (size + gap)
        canvas[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return canvas


def preview(config: Config, out: str | Path, samples: int = 16, seed: int = 0) -> Preview:
    """Draw ``samples`` augmented training images of the config's dataset into ``out`` (PNG)."""
    from pipeline.train.loader import training_dataset

    augmentations = serialize(config.augment)
    with tempfile.TemporaryDirectory(prefix="augment-preview-") as tmp:
        data = prepare_training_data(config.data, Path(tmp))
        dataset = training_dataset(config, data.dataset.data_yaml, augmentations, Path(tmp))
        random.seed(seed)  # ultralytics' transforms draw from the global generators
        np.random.seed(seed)
        torch.manual_seed(seed)  # albumentations is seeded from torch's initial seed
        indices = random.Random(seed).sample(range(len(dataset)), min(samples, len(dataset)))
        tiles, boxes = [], 0
        for index in indices:
            item = dataset[index]
            image = item["img"].permute(1, 2, 0).numpy()
            tiles.append(draw_sample(image, item["bboxes"].numpy(), item["cls"].numpy().ravel(), data.dataset.names))
            boxes += len(item["cls"])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), grid(tiles, columns=math.ceil(math.sqrt(len(tiles))))):
        raise OSError(f"{out}: could not write the preview image")
    return Preview(out, len(tiles), boxes, len(augmentations))

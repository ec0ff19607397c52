"""`augment preview`: a grid of augmented training samples with their boxes, as the model will see them.

The samples come out of the real training dataset (mosaic, affine, the configured albumentations
block, HSV, flips), so a box that a transform moved wrongly, or a preset too strong for the data,
shows up here before any GPU time is spent.

The PNG carries a text chunk (``Software``) saying this command made it: an existing ``--out`` file is
overwritten only when it carries that chunk, so a mistyped path never replaces someone's image.
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

from pipeline.augment.spec import serialize
from pipeline.config import Config
from pipeline.data.palette import class_colour
from pipeline.data.training_data import prepare_training_data
from pipeline.destinations import DestinationError
from pipeline.files import replaced_whole

SOFTWARE = "yolo-pipeline augment preview"  # the PNG text chunk that marks a preview as this tool's


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
        colour = class_colour(int(cls))
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
    from pipeline.training.loader import training_dataset

    out = check_preview_path(out)
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
    write_png(grid(tiles, columns=math.ceil(math.sqrt(len(tiles)))), out)
    return Preview(out, len(tiles), boxes, len(augmentations))


def made_here(path: Path) -> bool:
    """Whether ``path`` is a PNG whose ``Software`` text chunk says this command wrote it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.text.get("Software") == SOFTWARE
    except (OSError, ValueError, SyntaxError):  # not an image, truncated, or a broken chunk
        return False


def check_preview_path(out: str | Path) -> Path:
    """``out`` if a preview may be written there: a new .png file, or one an earlier preview wrote."""
    out = Path(out).expanduser()
    if out.suffix.lower() != ".png":
        raise DestinationError(f"--out {out}: a preview is a PNG file; give a name ending in .png")
    if out.is_dir():
        raise DestinationError(f"--out {out}: is a folder; give a .png file name, e.g. {out / 'preview.png'}")
    if out.exists() and not made_here(out):
        raise DestinationError(
            f"--out {out}: exists and was not made by yolo-pipeline augment preview; choose another --out "
            "or remove it yourself"
        )
    return out


def write_png(image_bgr: np.ndarray, out: Path) -> Path:
    """Write the PNG with its ``Software`` chunk under a temporary name, then rename it over ``out``."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with replaced_whole(out) as tmp:
            Image.fromarray(np.ascontiguousarray(image_bgr[..., ::-1])).save(tmp, format="PNG", pnginfo=info)
    except OSError as exc:
        raise DestinationError(f"--out {out}: could not write the preview ({exc.strerror or exc})") from None
    return out

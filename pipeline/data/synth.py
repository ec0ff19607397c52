"""Synthetic surface-defect images with exact boxes, in YOLO layout.

Each image is a textured metal-like surface with a few defects drawn on it: scratches (thin long
lines), pits (small dark craters with a bright rim) and patches (irregular stains). Every defect is
drawn into its own mask first, so its box is the tight extent of the pixels it really changed.
Image ``i`` depends only on ``(seed, i)``, so a set is reproducible and can be grown without
changing the images it already has.

``backgrounds`` makes that share of the images defect-free: the same surface image ``i`` would have,
without its defects, and an empty label file (the good parts a screen must pass). Which images they
are is drawn from ``seed`` apart from the images' own draws, spread over train and val in proportion.

``defect_px=(lo, hi)`` draws large boards instead, as an inspection camera sees them: each defect at an
absolute size, its box's long side log-uniform in ``[lo, hi]`` pixels (as many small defects as large
ones per octave, the way real defect sizes spread), whatever the image size; a board has a Poisson
number of defects, on average one per 256 x 256 px (16 on a 1,024-px board, 64 on a 2,048-px one),
placed where they do not overlap. Without it every image is drawn exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import yaml

from pipeline.destinations import build_then_swap

CLASS_NAMES: tuple[str, ...] = ("scratch", "pit", "patch")
KIND = "synthetic"  # the marker's kind: a rerun into its own folder replaces it, any other folder is refused


@dataclass(frozen=True)
class Box:
    """A defect's class and its tight pixel box (inclusive corners)."""

    cls: int
    x0: int
    y0: int
    x1: int
    y1: int

    def to_yolo(self, width: int, height: int) -> str:
        """The box as a YOLO label line: class, centre and size normalised to the image."""
        w, h = self.x1 - self.x0 + 1, self.y1 - self.y0 + 1
        cx, cy = self.x0 + w / 2, self.y0 + h / 2
        return f"{self.cls} {cx / width:.6f} {cy / height:.6f} {w / width:.6f} {h / height:.6f}"


@dataclass(frozen=True)
class SynthSummary:
    """What `synthesize` wrote."""

    out: Path
    data_yaml: Path
    images: dict[str, int]
    boxes: dict[str, int]
    backgrounds: dict[str, int] = field(default_factory=dict)  # images without a defect (empty label), per split
    surface_only: int = 0  # how many of them ``backgrounds`` asked for (the rest drew no defect by chance)


def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """A grey surface: a brightness gradient, low-frequency mottling, fine grain and rolling streaks."""
    base = rng.uniform(90, 150)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gradient = rng.uniform(-20, 20) * xx + rng.uniform(-20, 20) * yy
    mottling = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), size / 12)
    mottling *= 12 / (mottling.std() + 1e-6)
    grain = rng.normal(0, 4, (size, size)).astype(np.float32)
    streaks = np.repeat(rng.normal(0, 3, (size, 1)).astype(np.float32), size, axis=1)
    return base + gradient + mottling + grain + streaks


def _scratch_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    length = rng.uniform(0.35, 0.7) * size
    angle = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    p0 = (int(round(cx - dx)), int(round(cy - dy)))
    p1 = (int(round(cx + dx)), int(round(cy + dy)))
    cv2.line(mask, p0, p1, 255, thickness=max(2, size // 32), lineType=cv2.LINE_8)
    return mask


def _pit_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    radius = rng.uniform(0.06, 0.1) * size
    centre = (int(rng.uniform(0.1, 0.9) * size), int(rng.uniform(0.1, 0.9) * size))
    axes = (max(2, int(radius)), max(2, int(radius * rng.uniform(0.7, 1.0))))
    cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, thickness=-1)
    return mask


def _patch_mask(rng: np.random.Generator, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    radius = rng.uniform(0.12, 0.22) * size
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
    radii = radius * rng.uniform(0.6, 1.0, 9)
    points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(mask, [points.round().astype(np.int32)], 255)
    return mask


_MASKS = (_scratch_mask, _pit_mask, _patch_mask)


def _apply(surface: np.ndarray, mask: np.ndarray, cls: int, rng: np.random.Generator) -> np.ndarray:
    """Paint one defect into the surface where its mask is set; returns the mask of every pixel it changed."""
    on = mask > 0
    if cls == 0:  # scratch: a bright or dark line
        surface[on] += rng.choice([-1.0, 1.0]) * rng.uniform(55, 80)
    elif cls == 1:  # pit: a dark crater with a bright rim
        rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0
        surface[rim & ~on] += 45
        surface[on] -= rng.uniform(70, 95)
        return rim
    else:  # patch: a darker stain with its own texture
        stain = rng.normal(0, 6, surface.shape).astype(np.float32)
        surface[on] = surface[on] * rng.uniform(0.45, 0.65) + stain[on]
    return on


def _box_of(mask: np.ndarray, cls: int) -> Box | None:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    return Box(cls, int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))


def render(
    seed: int, index: int, size: int = 128, defects: bool = True, defect_px: tuple[int, int] | None = None
) -> tuple[np.ndarray, list[Box]]:
    """Draw image ``index`` of the set made with ``seed``: a BGR image and its defect boxes (``defects`` False:
    the same surface without any; ``defect_px``: a large board with defects of absolute sizes, see the module doc)."""
    rng = np.random.default_rng([seed, index])
    if defect_px is not None:
        return _render_board(rng, size, defects, defect_px)
    surface = _surface(rng, size)
    boxes: list[Box] = []
    n_defects = int(rng.choice([0, 1, 2, 3], p=[0.05, 0.4, 0.35, 0.2])) if defects else 0
    for _ in range(n_defects):
        cls = int(rng.integers(len(CLASS_NAMES)))
        mask = _MASKS[cls](rng, size)
        changed = _apply(surface, mask, cls, rng)
        if (box := _box_of(changed, cls)) is not None:
            boxes.append(box)
    image = np.clip(surface, 0, 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), boxes


# ---- large boards: defects at absolute sizes -----------------------------------------------------------

BOARD_AREA_PER_DEFECT = 256 * 256  # a board's mean defect count is its area over this
_MARGIN = 2  # around a defect's own canvas: the pit's rim and a gap to its neighbours


def _board_surface(rng: np.random.Generator, size: int) -> np.ndarray:
    """`_surface` for a large board: the same kinds of texture, the mottling drawn on an eighth-size grid and
    enlarged (a blur of sigma size/12 at full size costs seconds per 2,048-px board, for the same smooth field)."""
    small = max(16, size // 8)
    base = rng.uniform(90, 150)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    gradient = rng.uniform(-20, 20) * xx + rng.uniform(-20, 20) * yy
    coarse = cv2.GaussianBlur(rng.normal(0, 1, (small, small)).astype(np.float32), (0, 0), small / 12)
    mottling = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    mottling *= 12 / (mottling.std() + 1e-6)
    grain = rng.normal(0, 4, (size, size)).astype(np.float32)
    streaks = np.repeat(rng.normal(0, 3, (size, 1)).astype(np.float32), size, axis=1)
    return base + gradient + mottling + grain + streaks


def _board_mask(rng: np.random.Generator, cls: int, side: int) -> np.ndarray:
    """One defect of class ``cls`` whose box's long side is about ``side`` px, centred on its own canvas."""
    canvas = side + 2 * _MARGIN
    mask = np.zeros((canvas, canvas), np.uint8)
    c = canvas / 2
    if cls == 0:  # scratch: a line of length ``side``, 2-3 px thick
        angle = rng.uniform(0, np.pi)
        half = max(1.0, (side - 2) / 2)
        dx, dy = np.cos(angle) * half, np.sin(angle) * half
        thickness = max(2, round(side / 16))
        p0, p1 = (round(c - dx - 0.5), round(c - dy - 0.5)), (round(c + dx - 0.5), round(c + dy - 0.5))
        cv2.line(mask, p0, p1, 255, thickness=thickness, lineType=cv2.LINE_8)
    elif cls == 1:  # pit: an ellipse of diameter ``side`` (the rim adds a pixel on each side)
        radius = max(1, round(side / 2) - 1)
        axes = (radius, max(1, round(radius * rng.uniform(0.7, 1.0))))
        cv2.ellipse(mask, (int(c), int(c)), axes, float(rng.uniform(0, 180)), 0, 360, 255, thickness=-1)
    else:  # patch: an irregular stain of diameter about ``side``
        angles = np.sort(rng.uniform(0, 2 * np.pi, 9))
        radii = side / 2 * rng.uniform(0.6, 1.0, 9)
        points = np.stack([c + radii * np.cos(angles), c + radii * np.sin(angles)], axis=1)
        cv2.fillPoly(mask, [points.round().astype(np.int32)], 255)
    return mask


def _render_board(
    rng: np.random.Generator, size: int, defects: bool, defect_px: tuple[int, int]
) -> tuple[np.ndarray, list[Box]]:
    surface = _board_surface(rng, size)
    boxes: list[Box] = []
    taken: list[tuple[int, int, int, int]] = []  # canvases placed so far (x0, y0, x1, y1), exclusive ends
    lo, hi = defect_px
    n_defects = int(rng.poisson(size * size / BOARD_AREA_PER_DEFECT)) if defects else 0
    for _ in range(n_defects):
        cls = int(rng.integers(len(CLASS_NAMES)))
        side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))  # log-uniform: each octave equally often
        mask = _board_mask(rng, cls, side)
        canvas = mask.shape[0]
        for _attempt in range(20):  # a free place; a board too crowded for this one leaves it out
            x0, y0 = (int(v) for v in rng.integers(0, size - canvas + 1, 2))
            if not any(
                x0 < bx1 and bx0 < x0 + canvas and y0 < by1 and by0 < y0 + canvas for bx0, by0, bx1, by1 in taken
            ):
                break
        else:
            continue
        taken.append((x0, y0, x0 + canvas, y0 + canvas))
        window = surface[y0 : y0 + canvas, x0 : x0 + canvas]  # a view: the painting lands on the board
        changed = _apply(window, mask, cls, rng)
        if (box := _box_of(changed, cls)) is not None:
            boxes.append(Box(cls, box.x0 + x0, box.y0 + y0, box.x1 + x0, box.y1 + y0))
    image = np.clip(surface, 0, 255).astype(np.uint8)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), boxes


def check_defect_px(defect_px: tuple[int, int] | None, size: int) -> tuple[int, int] | None:
    """``defect_px`` as (lo, hi) ints, or a one-line ValueError naming what is wrong."""
    if defect_px is None:
        return None
    try:
        lo, hi = (int(v) for v in defect_px)
    except (TypeError, ValueError):
        raise ValueError(f"defect_px: expected (min, max) pixels such as (8, 40), got {defect_px!r}") from None
    if not 2 <= lo <= hi:
        raise ValueError(f"defect_px: need 2 <= min <= max pixels, got {lo}-{hi}")
    if hi > size // 4:
        raise ValueError(f"defect_px: the largest defect ({hi} px) must be at most a quarter of the size ({size} px)")
    return lo, hi


def synthesize(
    out: str | Path,
    images: int = 200,
    seed: int = 0,
    size: int = 128,
    val_fraction: float = 0.2,
    backgrounds: float = 0.0,
    defect_px: tuple[int, int] | None = None,
) -> SynthSummary:
    """Write ``images`` synthetic defect images in YOLO layout under ``out``, with a ``data.yaml``; the share
    ``backgrounds`` of them (0 <= F < 1) without defects; ``defect_px=(lo, hi)``: large boards with defects of
    absolute sizes (see the module doc).

    ``out`` may exist only when empty or made by an earlier synthesis; it is replaced once the new set is whole."""
    if images < 2:
        raise ValueError(f"images: need at least 2 (one train, one val), got {images}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction: must be between 0 and 1, got {val_fraction}")
    if size < 32:
        raise ValueError(f"size: must be >= 32 pixels, got {size}")
    if not 0 <= backgrounds < 1:
        raise ValueError(f"backgrounds: must be a fraction, 0 <= F < 1, got {backgrounds}")
    defect_px = check_defect_px(defect_px, size)
    out = Path(out)
    surface_only = _surface_only(images, seed, _val_count(images, val_fraction), backgrounds)
    marked: dict[str, object] = {"backgrounds": backgrounds} if backgrounds else {}  # a set without: marker as it was
    if defect_px is not None:
        marked["defect_px"] = list(defect_px)
    with build_then_swap(out, KIND, "--out", images=images, seed=seed, size=size, **marked) as staging:
        counts, box_counts, empty = _draw_set(staging, images, seed, size, val_fraction, surface_only, defect_px)
        # No `path` key: ultralytics then resolves the splits against this file's folder, wherever it moves.
        spec = {"train": "images/train", "val": "images/val", "names": dict(enumerate(CLASS_NAMES))}
        (staging / "data.yaml").write_text(
            "# Synthetic surface defects; paths are relative to this file's folder.\n"
            + yaml.safe_dump(spec, sort_keys=False)
        )
    return SynthSummary(out, out / "data.yaml", counts, box_counts, empty, len(surface_only))


def _val_count(images: int, val_fraction: float) -> int:
    return max(1, round(images * val_fraction))


def _surface_only(images: int, seed: int, n_val: int, fraction: float) -> set[int]:
    """The indices drawn defect-free: ``fraction`` of each split (rounded), picked by a generator of their own,
    so the images' draws are those of a set without backgrounds."""
    if not fraction:
        return set()
    rng = np.random.default_rng([seed, images, 0xB6])
    train, val = np.arange(images - n_val), np.arange(images - n_val, images)
    picked = [rng.choice(split, round(len(split) * fraction), replace=False) for split in (train, val)]
    return {int(i) for i in np.concatenate(picked)}


def _draw_set(
    out: Path,
    images: int,
    seed: int,
    size: int,
    val_fraction: float,
    surface_only: set[int],
    defect_px: tuple[int, int] | None = None,
) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """Draw every image and label into ``out``; (images per split, boxes per class, empty labels per split)."""
    n_val = _val_count(images, val_fraction)
    counts = {"train": 0, "val": 0}
    empty = {"train": 0, "val": 0}
    box_counts = dict.fromkeys(CLASS_NAMES, 0)
    for index in range(images):
        split = "val" if index >= images - n_val else "train"
        image, boxes = render(seed, index, size, defects=index not in surface_only, defect_px=defect_px)
        stem = f"synth_{seed}_{index:06d}"
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(out / "images" / split / f"{stem}.png"), image):
            raise OSError(f"{out}: could not write image {stem}.png")
        lines = [box.to_yolo(size, size) for box in boxes]
        (out / "labels" / split / f"{stem}.txt").write_text("".join(f"{line}\n" for line in lines))
        counts[split] += 1
        empty[split] += not boxes
        for box in boxes:
            box_counts[CLASS_NAMES[box.cls]] += 1
    return counts, box_counts, empty

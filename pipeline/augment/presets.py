"""Named augmentation recipes: an albumentations list plus defaults for the ``augment`` section's other keys.

A preset's defaults (``degrees``, ``symmetry`` and the like) apply only to keys the config leaves
unset, so ``augment: {preset: surface, degrees: 0}`` still means no small rotation. Kept apart from
`pipeline.augment.spec` so the config can read it without importing albumentations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    albumentations: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)


PRESETS: dict[str, Preset] = {
    "none": Preset([]),
    # Surface defects have no "up": the eight flips and quarter turns of the square are free data,
    # done by the cheap `symmetry` step (pipeline/training/symmetry.py) rather than albumentations'
    # SquareSymmetry, whose box handling costs three times as much. Lighting, sensor noise, focus and
    # small placement errors are what changes between line-scan frames. The small rotation goes to
    # ultralytics' own random affine, which warps every image anyway, so it costs nothing; an
    # albumentations Affine would warp each image a second time.
    "surface": Preset(
        [
            {"transform": "RandomBrightnessContrast", "p": 0.5, "brightness_limit": 0.2, "contrast_limit": 0.2},
            {"transform": "RandomGamma", "p": 0.3, "gamma_limit": [80, 120]},
            {"transform": "FastGaussNoise", "p": 0.2, "std_range": [0.02, 0.06]},
            {"transform": "GaussianBlur", "p": 0.1, "blur_limit": [3, 5]},
        ],
        settings={"symmetry": 1.0, "degrees": 5.0},
    ),
    # Photometric only, for parts whose orientation means something.
    "surface-light": Preset(
        [
            {"transform": "RandomBrightnessContrast", "p": 0.5, "brightness_limit": 0.15, "contrast_limit": 0.15},
            {"transform": "RandomGamma", "p": 0.3, "gamma_limit": [85, 115]},
            {"transform": "FastGaussNoise", "p": 0.2, "std_range": [0.01, 0.04]},
        ]
    ),
    # Ultralytics' own default block, to compare against.
    "ultralytics": Preset(
        [
            {"transform": "Blur", "p": 0.01},
            {"transform": "MedianBlur", "p": 0.01},
            {"transform": "ToGray", "p": 0.01},
            {"transform": "CLAHE", "p": 0.01},
            {"transform": "RandomBrightnessContrast", "p": 0.0},
            {"transform": "RandomGamma", "p": 0.0},
            {"transform": "ImageCompression", "p": 0.0, "quality_range": [75, 100]},
        ]
    ),
}


def with_preset_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """The raw ``augment`` section with its preset's defaults filled in where unset."""
    preset = PRESETS.get(raw.get("preset", ""))
    if preset is None or not preset.settings:
        return raw
    return {**preset.settings, **raw}

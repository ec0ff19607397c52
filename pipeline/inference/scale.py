"""The size a prediction runs the network at, chosen so objects appear at the scale the model learned.

A training at ``imgsz`` shrinks its images, of typical long side ``side``, by ``imgsz / side``: that
is the scale its objects have for the model. A whole image of that side letterboxed to ``imgsz``
keeps it. A tile does not: a 320-px tile of a model trained at 320 px on 640-px images, run at
320 px, shows every defect twice as large as in training, and recall falls. So tiles run at
``tile x imgsz / side`` by default, from the side the checkpoint records
(`pipeline.checkpoints.training_image_side`). ``--imgsz`` still decides; when it changes the scale
the model learned, or when the scale is not known, one line says so. Whole images (and images no
larger than the tile, which are not cut) run at the training size, and one line says so when the
images (judged by the first) are of another size enough to change the scale by half or more.
"""

from __future__ import annotations

from dataclasses import dataclass

OVERLAP = 0.2  # tiles' overlap when neither --overlap nor the model's training tiles say

_SAME = 0.05  # scales within 5% of each other are the same scale
_UNASKED = 1.5  # whole images at the default size: a line only when the scale is off by this factor


@dataclass(frozen=True)
class InferenceScale:
    size: int  # the network's input size (the letterbox's long side)
    line: str  # what the user is told about the scale ("" when nothing needs saying)


def inference_scale(asked: int, tile: int, trained: int, side: int | None, first_side: int = 0) -> InferenceScale:
    """The input size for ``--imgsz asked`` (0: not given) and ``--tile tile`` (0: whole images), for a model
    trained at ``trained`` px on images of typical long side ``side`` (None: not recorded); ``first_side``:
    the long side of the first image to predict (0: unknown)."""
    if not tile or 0 < first_side <= tile:  # an image no larger than the tile is not cut: it runs whole
        return _whole_images(asked, trained, side, first_side)
    learned = trained / side if side else None
    origin = f"trained at {trained} px on images of {side} px"
    if asked:
        if learned is None:
            return InferenceScale(asked, f"{tile}-px tiles run at {asked} px ({asked / tile:.2f}x), as --imgsz asks")
        if _same(asked / tile, learned):
            return InferenceScale(asked, f"{tile}-px tiles run at {asked} px: the scale the model learned ({origin})")
        return InferenceScale(
            asked,
            f"--imgsz {asked}: {tile}-px tiles run at {asked / tile:.2f}x, not the {learned:.2f}x the model learned "
            f"({origin}); objects look {_ratio(asked / tile / learned)}",
        )
    if learned is None:
        return InferenceScale(
            trained,
            f"{tile}-px tiles run at {trained} px, the model's training size: its checkpoint records no training image "
            "size, so the scale it learned is unknown (--imgsz sets the tiles' size)",
        )
    size = max(32, round(tile * learned))
    return InferenceScale(
        size,
        f"{tile}-px tiles run at {size} px: the scale the model learned, {learned:.2f}x ({origin}); --imgsz overrides",
    )


def _whole_images(asked: int, trained: int, side: int | None, first_side: int) -> InferenceScale:
    size = asked or trained
    if not side or not first_side:
        return InferenceScale(size, "")
    learned, actual = trained / side, size / first_side
    off = actual / learned
    if _same(actual, learned) or (not asked and 1 / _UNASKED < off < _UNASKED):
        return InferenceScale(size, "")
    keep = max(32, round(first_side * learned))
    tile_hint = f" or --tile {side}" if first_side > side else ""
    why = f"--imgsz {asked}: " if asked else ""
    return InferenceScale(
        size,
        f"{why}images of {first_side} px (the first one) run at {size} px, {actual:.2f}x: objects look "
        f"{_ratio(off)} (trained at {trained} px on images of {side} px); --imgsz {keep}{tile_hint} keeps the scale",
    )


def _same(a: float, b: float) -> bool:
    return abs(a / b - 1) <= _SAME


def _ratio(factor: float) -> str:
    """How much larger (or smaller) objects look than in training, in words."""
    return f"{factor:.2f}x as large as in training" if factor >= 1 else f"{1 / factor:.2f}x smaller than in training"


@dataclass(frozen=True)
class TileChoice:
    size: int  # 0: whole images
    overlap: float
    line: str  # what the user is told about it ("" when nothing needs saying)


def tile_choice(asked: int | None, overlap: float | None, trained: tuple[int, float] | None) -> TileChoice:
    """The tiles for ``--tile asked`` (None: not given; 0: whole images) and ``--overlap``, for a model trained on
    ``trained`` (size, overlap) tiles, or on whole images (None): unasked, a tile-trained model's images are cut as
    its training data was, and one line says so."""
    if asked is None and trained is not None:
        size, learned = trained
        chosen = learned if overlap is None else overlap
        line = f"{size}-px tiles (overlap {chosen:g}), as the model was trained (data.tile); --tile 0: whole images"
        return TileChoice(size, chosen, line)
    return TileChoice(asked or 0, OVERLAP if overlap is None else overlap, "")

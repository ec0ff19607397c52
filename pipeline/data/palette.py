"""The colours boxes are drawn in, one per class id, so a class looks the same in every picture this tool draws."""

from __future__ import annotations

Colour = tuple[int, int, int]

# BGR, as OpenCV draws: the first six colours of YOLOv5's palette.
PALETTE: tuple[Colour, ...] = (
    (56, 56, 255),
    (151, 157, 255),
    (31, 112, 255),
    (29, 178, 255),
    (49, 210, 207),
    (10, 249, 72),
)


def class_colour(class_id: int) -> Colour:
    return PALETTE[class_id % len(PALETTE)]

"""The in-memory form every dataset format is read into and written from.

Boxes are in pixels (``x1 y1 x2 y2``, corners as the source gives them), so YOLO, COCO and VOC convert
through one representation and a round trip only loses float rounding. A problem found while reading
or validating is a `Problem`: the file, the line where there is one, the reason and what was done.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.dataset import printable, split_rank
from pipeline.data.images import ImageInfo

# What happened to the input because of a problem. Errors lose something (an image, a box); notes do not.
SKIPPED_IMAGE = "skipped image"
DROPPED_BOX = "dropped box"
DROPPED_LINE = "dropped line"
IGNORED_FILE = "ignored file"
CONVERTED = "converted"
COUNTED = "counted"
NOTE = "note"  # something the user should know that loses nothing (e.g. val is the train folder)
RENAMED = "renamed"  # written under a safe file name (the source's is not UTF-8)
ERROR_ACTIONS = {SKIPPED_IMAGE, DROPPED_BOX, DROPPED_LINE, IGNORED_FILE}


@dataclass(frozen=True)
class Problem:
    file: Path
    reason: str
    action: str
    line: int | None = None

    @property
    def is_error(self) -> bool:
        return self.action in ERROR_ACTIONS

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else str(self.file)

    def __str__(self) -> str:  # printable: a file name may hold bytes that are not UTF-8
        return printable(f"{self.location}: {self.reason} ({self.action})")

    def to_dict(self) -> dict[str, object]:
        file, reason = printable(str(self.file)), printable(self.reason)
        return {"file": file, "line": self.line, "reason": reason, "action": self.action}


def short(value: float) -> str:
    """A number for a message: one decimal for ordinary sizes, 4 significant digits for huge or tiny ones."""
    if not math.isfinite(value) or abs(value) >= 1e6:
        return f"{value:.4g}"
    return f"{value:.1f}"


@dataclass(frozen=True)
class Box:
    cls: int
    x1: float
    y1: float
    x2: float
    y2: float
    line: int | None = field(default=None, compare=False)  # where in the label file, for reports
    ref: str = field(default="", compare=False)  # e.g. "annotation 17", "object 3" when there are no lines

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1

    def to_yolo_line(self, image_width: int, image_height: int) -> str:
        cx, cy = (self.x1 + self.x2) / 2 / image_width, (self.y1 + self.y2) / 2 / image_height
        return f"{self.cls} {cx:.6f} {cy:.6f} {self.width / image_width:.6f} {self.height / image_height:.6f}"


@dataclass
class Sample:
    """One image and its boxes. ``width``/``height`` are 0 until the image has been inspected."""

    image: Path
    boxes: list[Box] = field(default_factory=list)
    split: str = "train"
    width: int = 0
    height: int = 0
    label: Path | None = None  # the annotation file the boxes came from, for reports
    labelled: bool = True  # False: no annotation file at all (a background image, counted as such)
    convert: str = ""  # how the image must be converted to 8-bit RGB/grey before training ("" = as is)
    digest: str = ""  # SHA-1 of the image bytes, to find the same image in two splits
    image_problem: str = ""  # why the image file cannot be used ("" = it can)
    mode: str = ""  # PIL's mode of the file: L, RGB, I;16, RGBA, P, ...

    def take_info(self, info: ImageInfo) -> None:
        """Adopt what inspecting the image file found."""
        self.width, self.height, self.mode = info.width, info.height, info.mode
        self.digest, self.convert, self.image_problem = info.digest, info.convert, info.problem


@dataclass
class Collection:
    """A dataset read from any format: class names in source order, samples, and what reading found."""

    names: list[str]
    samples: list[Sample]
    problems: list[Problem] = field(default_factory=list)

    def splits(self) -> list[str]:
        return sorted({s.split for s in self.samples}, key=lambda s: (split_rank(s), s))

    def box_counts(self) -> Counter[int]:
        return Counter(box.cls for sample in self.samples for box in sample.boxes)

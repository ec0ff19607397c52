"""Check a dataset read from any format and decide, per problem, what is kept.

Every problem is reported with its file (and line, where there is one) and what was done about it.
Policy ``skip`` drops what cannot be used and goes on; ``fail`` stops at the first report with one
line naming the first problem. Nothing is dropped without a `Problem` saying so.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pipeline.data.annotations import (
    CONVERTED,
    COUNTED,
    DROPPED_BOX,
    DROPPED_LINE,
    IGNORED_FILE,
    NOTE,
    RENAMED,
    SKIPPED_IMAGE,
    Box,
    Collection,
    Problem,
    Sample,
    short,
)
from pipeline.data.dataset import DatasetError, safe_name, split_rank
from pipeline.files import write_atomic

Policy = Literal["skip", "fail"]
TOLERANCE_PX = 1.0  # label writers round; a box this close to the border is clipped, not reported


@dataclass
class ValidationReport:
    collection: Collection  # what is left to train on
    problems: list[Problem]
    images: Counter[str] = field(default_factory=Counter)  # usable images per split
    backgrounds: Counter[str] = field(default_factory=Counter)  # images with no box (no or an empty label file)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def notes(self) -> list[Problem]:
        """What the user should know though nothing was lost: a split that is another's folder, a renamed file."""
        return [p for p in self.problems if p.action in {NOTE, RENAMED}]

    @property
    def converted(self) -> int:
        return sum(p.action == CONVERTED for p in self.problems)

    def counts(self) -> dict[str, int]:
        actions = Counter(p.action for p in self.problems)
        return {
            "images": sum(self.images.values()),
            "boxes": sum(len(s.boxes) for s in self.collection.samples),
            "backgrounds": sum(self.backgrounds.values()),
            "skipped_images": actions[SKIPPED_IMAGE],
            "dropped_boxes": actions[DROPPED_BOX],
            "dropped_lines": actions[DROPPED_LINE],
            "ignored_files": actions[IGNORED_FILE],
            "converted_images": actions[CONVERTED],
        }

    def summary(self) -> str:
        c = self.counts()
        parts = [f"{c['images']} images", f"{c['boxes']} boxes", f"{c['backgrounds']} backgrounds"]
        lost = [
            f"{c[key]} {label}"
            for key, label in (
                ("skipped_images", "images skipped"),
                ("dropped_boxes", "boxes dropped"),
                ("dropped_lines", "malformed lines dropped"),
                ("ignored_files", "files ignored"),
                ("converted_images", "images converted"),
            )
            if c[key]
        ]
        return ", ".join(parts) + (f"; {', '.join(lost)}" if lost else "; no problems")

    def to_dict(self) -> dict[str, object]:
        return {"counts": self.counts(), "problems": [p.to_dict() for p in self.problems]}

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(self.to_dict(), indent=1))
        return path


def _where(box: Box) -> str:
    return f"{box.ref}: " if box.ref else ""


def _check_box(box: Box, sample: Sample, class_count: int) -> tuple[Box | None, str]:
    """The box as it will be trained on (clipped within tolerance), or None and the reason it cannot be."""
    if not 0 <= box.cls < class_count:
        return None, f"{_where(box)}class id {box.cls} is out of range (the dataset has classes 0..{class_count - 1})"
    w, h = sample.width, sample.height
    corners = (box.x1, box.y1, box.x2, box.y2)
    shown = ", ".join(short(v) for v in corners)
    if not all(math.isfinite(v) for v in corners):  # whatever the reader: NaN passes every comparison below
        return None, f"{_where(box)}box ({shown}) has a coordinate that is not a finite number"
    if box.width < 0 or box.height < 0:
        return None, f"{_where(box)}negative-size box ({short(box.width)} x {short(box.height)} px)"
    outside = box.x1 < -TOLERANCE_PX or box.y1 < -TOLERANCE_PX or box.x2 > w + TOLERANCE_PX or box.y2 > h + TOLERANCE_PX
    if outside:  # before the area: far out, float rounding can make a box's size 0
        return None, f"{_where(box)}box ({shown}) lies outside the {w}x{h} image"
    if box.width == 0 or box.height == 0:
        return None, f"{_where(box)}zero-area box ({short(box.width)} x {short(box.height)} px)"
    clipped = Box(box.cls, max(box.x1, 0.0), max(box.y1, 0.0), min(box.x2, w), min(box.y2, h), box.line, box.ref)
    if clipped.width <= 0 or clipped.height <= 0:  # it lay just beyond an edge, within the tolerance
        return None, f"{_where(box)}box ({shown}) has no area inside the {w}x{h} image"
    return clipped, ""


def _check_boxes(sample: Sample, class_count: int) -> list[Problem]:
    label = sample.label or sample.image
    kept: list[Box] = []
    first_line: dict[tuple, Box] = {}
    problems = []
    for box in sample.boxes:
        checked, reason = _check_box(box, sample, class_count)
        if checked is None:
            problems.append(Problem(label, reason, DROPPED_BOX, box.line))
            continue
        key = (checked.cls, *(round(v, 1) for v in (checked.x1, checked.y1, checked.x2, checked.y2)))
        if key in first_line:
            original = first_line[key]
            same = f"line {original.line}" if original.line is not None else original.ref or "another box"
            problems.append(Problem(label, f"{_where(box)}duplicate box (same as {same})", DROPPED_BOX, box.line))
            continue
        first_line[key] = checked
        kept.append(checked)
    sample.boxes = kept
    return problems


def _shared_note(split: str, other: str, files: list[str], total: int) -> Problem:
    """One note for the files ``split`` shares with ``other``: kept in both, and what that means for scores."""
    folder = Path(os.path.commonpath(files)) if len(files) > 1 else Path(files[0])
    scored = "validation will score training images" if other == "train" else f"{split} repeats {other} images"
    if len(files) == total:
        reason = f"{split} is the {other} folder ({total} images, the same files): kept in both; {scored}"
    else:
        reason = f"{len(files)} of {total} {split} images are the same files as in {other}: kept in both; {scored}"
    return Problem(folder, reason, NOTE)


def _cross_split(samples: list[Sample]) -> tuple[list[Problem], set[int]]:
    """Problems and the samples (by id) to leave out for images in two splits.

    The same bytes in two files leak evaluation data into training: the earliest split's copy is kept. The
    same file reached by the same path in two splits (val: the train folder) is one image: kept in both.
    """
    seen: dict[str, tuple[Sample, set[str]]] = {}  # digest -> first sample, real paths of every kept file
    problems: list[Problem] = []
    dropped: set[int] = set()
    shared: dict[tuple[str, str], list[str]] = {}
    for sample in sorted(samples, key=lambda s: split_rank(s.split)):
        if not sample.digest:
            continue
        real = os.path.realpath(sample.image)
        kept, files = seen.setdefault(sample.digest, (sample, set()))
        if kept.split == sample.split:
            files.add(real)
        elif real in files:
            shared.setdefault((sample.split, kept.split), []).append(real)
        else:
            reason = f"same image as {kept.image} in {kept.split}; kept there only"
            problems.append(Problem(sample.image, reason, SKIPPED_IMAGE))
            dropped.add(id(sample))
    for (split, other), files in shared.items():
        problems.append(_shared_note(split, other, files, sum(s.split == split for s in samples)))
    return problems, dropped


def validate(collection: Collection, policy: Policy = "skip") -> ValidationReport:
    """Check every image and box; return what is usable and what was found, or raise under ``fail``."""
    problems = list(collection.problems)
    usable: list[Sample] = []
    for sample in collection.samples:
        if sample.image_problem:
            problems.append(Problem(sample.image, sample.image_problem, SKIPPED_IMAGE))
            continue
        if sample.convert:
            problems.append(Problem(sample.image, sample.convert, CONVERTED))
        if not sample.labelled:
            problems.append(Problem(sample.image, "image without a label file: a background image", COUNTED))
        if (name := safe_name(sample.image.name)) != sample.image.name:
            problems.append(Problem(sample.image, f"file name is not UTF-8: written as {name}", RENAMED))
        problems += _check_boxes(sample, len(collection.names))
        usable.append(sample)
    duplicates, dropped = _cross_split(usable)
    usable = [s for s in usable if id(s) not in dropped]
    problems += duplicates
    report = ValidationReport(
        Collection(collection.names, usable),
        list(dict.fromkeys(problems)),  # a file in two splits is checked twice, reported once
        images=Counter(s.split for s in usable),
        backgrounds=Counter(s.split for s in usable if not s.boxes),  # as ultralytics counts them
    )
    if policy == "fail" and report.errors:
        first, more = report.errors[0], len(report.errors) - 1
        raise DatasetError(
            f"{first.location}: {first.reason}{f' (and {more} more problems)' if more else ''}; data.policy is fail"
        )
    return report

"""The YOLO layout: read it into a `Collection`, and write a `Collection` out as one.

Layout: ``images/<split>/<name>.<ext>``, ``labels/<split>/<name>.txt`` with one
``class cx cy w h`` line per box (normalised to the image), and a ``data.yaml`` with the class names.
Reading keeps every line's number, so a problem found later names ``file:line``.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import replace
from pathlib import Path

import yaml

from pipeline.data.annotations import DROPPED_LINE, IGNORED_FILE, Box, Collection, Problem, Sample
from pipeline.data.dataset import DatasetError, images_in, label_for, read_data_yaml, safe_name
from pipeline.data.images import inspect_images, save_8bit

MAX_CLASS_ID = 1_000_000  # far above any real class count; bigger "ids" are garbage, not classes


def _class_id(text: str) -> int | str:
    """The class id a YOLO line's first field names, or why it is none (``1.0`` is 1; nan, inf, 1.5 are not)."""
    try:
        value = float(text)
    except ValueError:
        return f"class id {text[:20]!r} is not a number"
    if not math.isfinite(value) or value != int(value):
        return f"class id {text[:20]} is not an integer"
    if abs(value) > MAX_CLASS_ID:  # validate names ids out of the class range; this keeps the message short
        return f"class id {text[:20]} is out of range"
    return int(value)


def parse_label_line(text: str, number: int, label: Path, width: int, height: int) -> Box | Problem | None:
    """One YOLO label line as a pixel box, a problem (malformed), or None (blank)."""
    fields = text.split()
    if not fields:
        return None
    if len(fields) != 5:
        reason = f"malformed line: expected 'class cx cy w h', got {len(fields)} fields"
        return Problem(label, reason, DROPPED_LINE, number)
    try:
        values = [float(v) for v in fields[1:]]
    except ValueError:
        return Problem(label, f"malformed line: not numbers: {text.strip()[:60]!r}", DROPPED_LINE, number)
    cls = _class_id(fields[0])
    if isinstance(cls, str):
        return Problem(label, f"malformed line: {cls}", DROPPED_LINE, number)
    if not all(math.isfinite(v) for v in values):  # NaN compares false with every bound: stop it here
        shown = " ".join(fields[1:])[:60]
        return Problem(label, f"malformed line: coordinates must be finite numbers, got {shown}", DROPPED_LINE, number)
    cx, cy, w, h = values
    return Box(
        cls,
        (cx - w / 2) * width,
        (cy - h / 2) * height,
        (cx + w / 2) * width,
        (cy + h / 2) * height,
        line=number,
    )


def _decode_labels(data: bytes, label: Path) -> tuple[str, list[Problem]]:
    """A label file's text (a UTF-8 or UTF-16 BOM is honoured) and a problem per line that is not UTF-8."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), []
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    lines, problems = [], []
    for number, raw in enumerate(data.removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:  # this line's boxes are unknown: report it, keep the readable lines
            lines.append("")
            reason = f"malformed line: not UTF-8 text (byte 0x{raw[exc.start]:02x})"
            problems.append(Problem(label, reason, DROPPED_LINE, number))
    return "\n".join(lines), problems


def _read_labels(sample: Sample) -> list[Problem]:
    """Fill ``sample.boxes`` from its label file; malformed lines come back as problems."""
    if sample.label is None or not sample.label.is_file():
        sample.labelled = False
        return []
    try:
        data = sample.label.read_bytes()
    except OSError as exc:  # its boxes are unknown, so it is not a background either: leave the image out
        sample.image_problem = f"label file {sample.label.name} unreadable ({exc.strerror or exc})"
        return []
    text, problems = _decode_labels(data, sample.label)
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = parse_label_line(line, number, sample.label, sample.width or 1, sample.height or 1)
        if isinstance(parsed, Box):
            sample.boxes.append(parsed)
        elif isinstance(parsed, Problem):
            problems.append(parsed)
    return problems


def _orphan_labels(split_folder: Path, samples: list[Sample]) -> list[Problem]:
    labels_folder = label_for(split_folder / "x.jpg").parent
    if labels_folder == split_folder or not labels_folder.is_dir():
        return []
    used = {s.label for s in samples}
    return [
        Problem(label, "label file without an image", IGNORED_FILE)
        for label in sorted(labels_folder.rglob("*.txt"))
        if label not in used
    ]


def read_yolo(path: str | Path, workers: int = 8) -> Collection:
    """A YOLO-layout dataset (a data.yaml or its folder) with every image inspected and every label read."""
    spec = read_data_yaml(path, require=())
    if not spec.splits:
        raise DatasetError(f"{spec.source}: names no split folders (train, val, test)")
    ids = sorted(spec.names)
    if ids != list(range(len(ids))):
        raise DatasetError(f"{spec.source}: names: class ids must be 0..{len(ids) - 1} without gaps, got {ids}")
    samples: list[Sample] = []
    problems: list[Problem] = []
    for split, folder in spec.splits.items():
        found = [Sample(image, split=split, label=label_for(image)) for image in images_in(folder)]
        problems += _orphan_labels(folder, found)
        samples += found
    first: dict[str, Sample] = {}
    for sample in samples:
        first.setdefault(os.path.realpath(sample.image), sample)
    unique = list(first.values())
    for sample, info in zip(unique, inspect_images([s.image for s in unique], workers)):
        sample.take_info(info)
        if not info.problem:
            problems += _read_labels(sample)
    # A file in two splits (val: the train folder) is read once, so its problems are told once.
    samples = [_in_split(first[os.path.realpath(s.image)], s) for s in samples]
    return Collection([spec.names[i] for i in ids], samples, problems)


def _in_split(read: Sample, listed: Sample) -> Sample:
    """``listed`` with what reading the same file as ``read`` found (itself when it is that sample)."""
    if read is listed:
        return listed
    return replace(read, image=listed.image, split=listed.split, label=listed.label, boxes=list(read.boxes))


def _place_image(sample: Sample, target_dir: Path, stem: str, link: bool) -> None:
    """Put the image into the layout as ``stem``: a converted PNG, a symlink, or a copy."""
    if sample.convert:
        save_8bit(sample.image, target_dir / f"{stem}.png")
        return
    target = target_dir / f"{stem}{sample.image.suffix}"
    if link:
        target.unlink(missing_ok=True)
        os.symlink(sample.image.resolve(), target)
    else:
        shutil.copy2(sample.image, target)


def unique_names(samples: list[Sample]) -> dict[int, str]:
    """A file stem per sample, unique within its split (sources with sub-folders can repeat a name), and valid
    UTF-8 (`safe_name`: a name's undecodable bytes would break every tool that prints or stores it)."""
    used: set[tuple[str, str]] = set()
    stems = {}
    for index, sample in enumerate(samples):
        base = safe_name(sample.image.stem)
        stem, count = base, 1
        while (sample.split, stem) in used:
            stem, count = f"{base}_{count}", count + 1
        used.add((sample.split, stem))
        stems[index] = stem
    return stems


def write_yolo(collection: Collection, out: str | Path, link: bool = False) -> Path:
    """Write images, labels and data.yaml under ``out``; ``link`` symlinks unconverted images instead of copying."""
    out = Path(out)
    stems = unique_names(collection.samples)
    for split in collection.splits():
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
    for index, sample in enumerate(collection.samples):
        _place_image(sample, out / "images" / sample.split, stems[index], link)
        if sample.labelled:
            lines = [box.to_yolo_line(sample.width, sample.height) for box in sample.boxes]
            label = out / "labels" / sample.split / f"{stems[index]}.txt"
            label.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    data_yaml = out / "data.yaml"
    spec = {"path": ".", **{split: f"images/{split}" for split in collection.splits()}}
    spec["names"] = dict(enumerate(collection.names))
    data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return data_yaml

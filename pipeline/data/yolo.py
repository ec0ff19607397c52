"""The YOLO layout: read it into a `Collection`, and write a `Collection` out as one.

Layout: ``images/<split>/<name>.<ext>``, ``labels/<split>/<name>.txt`` with one
``class cx cy w h`` line per box (normalised to the image), and a ``data.yaml`` with the class names.
Reading keeps every line's number, so a problem found later names ``file:line``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

from pipeline.data.annotations import DROPPED_LINE, IGNORED_FILE, Box, Collection, Problem, Sample
from pipeline.data.dataset import DatasetError, images_in, label_for, read_data_yaml
from pipeline.data.images import inspect_images, save_8bit


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
        cls = float(fields[0])
    except ValueError:
        return Problem(label, f"malformed line: not numbers: {text.strip()[:60]!r}", DROPPED_LINE, number)
    if cls != int(cls):
        return Problem(label, f"malformed line: class id {fields[0]} is not an integer", DROPPED_LINE, number)
    cx, cy, w, h = values
    return Box(
        int(cls),
        (cx - w / 2) * width,
        (cy - h / 2) * height,
        (cx + w / 2) * width,
        (cy + h / 2) * height,
        line=number,
    )


def _read_labels(sample: Sample) -> list[Problem]:
    """Fill ``sample.boxes`` from its label file; malformed lines come back as problems."""
    if sample.label is None or not sample.label.is_file():
        sample.labelled = False
        return []
    problems = []
    try:
        text = sample.label.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        sample.labelled = False
        return [Problem(sample.label, f"unreadable label file ({exc})", IGNORED_FILE)]
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
    for sample, info in zip(samples, inspect_images([s.image for s in samples], workers)):
        sample.take_info(info)
        if not info.problem:
            problems += _read_labels(sample)
    return Collection([spec.names[i] for i in ids], samples, problems)


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
    """A file stem per sample, unique within its split (sources with sub-folders can repeat a name)."""
    seen: dict[tuple[str, str], int] = {}
    stems = {}
    for index, sample in enumerate(samples):
        key = (sample.split, sample.image.stem)
        count = seen.get(key, 0)
        seen[key] = count + 1
        stems[index] = sample.image.stem if count == 0 else f"{sample.image.stem}_{count}"
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

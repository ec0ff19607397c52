"""Pascal VOC: read a VOC-layout folder into a `Collection`, and write a `Collection` out as one.

Layout: ``Annotations/<id>.xml`` (``filename``, ``size`` and one ``object`` with ``name`` and
``bndbox`` per box, in pixels), ``JPEGImages/<file>`` and optionally ``ImageSets/Main/<split>.txt``
listing ids. NEU-DET's archive spells the folders ``ANNOTATIONS`` and ``IMAGES`` and writes some
``filename`` values without or with a wrong extension, so folders match without case and an image
is also found by the XML's own name. Coordinates are used as written, without VOC's 1-based shift.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from pipeline.data.annotations import (
    CONVERTED,
    DROPPED_BOX,
    IGNORED_FILE,
    NOTE,
    Box,
    Collection,
    Problem,
    Sample,
)
from pipeline.data.dataset import IMAGE_SUFFIXES, SPLITS, DatasetError, safe_name
from pipeline.data.images import ImageInfo, inspect_images

_ANNOTATION_FOLDERS = ("Annotations", "ANNOTATIONS", "annotations")
_IMAGE_FOLDERS = ("JPEGImages", "IMAGES", "images", "Images")
_CORNERS = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class _Record:
    """What one XML says, before class ids are known (without a class list they come from all files)."""

    xml: Path
    image: Path
    width: float | None
    height: float | None
    objects: list[tuple[str, str, tuple[float, float, float, float]]] = field(default_factory=list)  # ref, name, box


def _subfolder(root: Path, candidates: tuple[str, ...]) -> Path | None:
    """The first candidate that exists, spelled exactly, else one that matches without case."""
    for name in candidates:
        if (root / name).is_dir():
            return root / name
    folders = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir()}
    return next((folders[n.lower()] for n in candidates if n.lower() in folders), None)


def _number(element: ET.Element | None, tag: str) -> float | None:
    """A finite number, or None: missing, not a number, nan or inf (NaN would pass every range check)."""
    text = element.findtext(tag) if element is not None else None
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def _bndbox(obj: ET.Element) -> tuple[float, float, float, float] | str:
    """The box's corners, or what is wrong with them."""
    bndbox = obj.find("bndbox")
    if bndbox is None:
        return "no bndbox element"
    values = [_number(bndbox, tag) for tag in _CORNERS]
    bad = [tag for tag, value in zip(_CORNERS, values) if value is None]
    if bad:
        return f"{', '.join(bad)} missing or not a number"
    xmin, ymin, xmax, ymax = values
    return xmin, ymin, xmax, ymax


def _find_image(filename: str, xml: Path, by_stem: dict[str, list[Path]], image_dir: Path) -> Path | None:
    """The image an XML means: its ``filename`` in the image folder, else one with the XML's or filename's stem."""
    if filename and _inside(image_dir / filename, image_dir) and (image_dir / filename).is_file():
        return Path(os.path.normpath(image_dir / filename))
    for stem in dict.fromkeys([xml.stem, Path(filename).stem if filename else xml.stem]):
        if by_stem.get(stem):
            return by_stem[stem][0]
    return None


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` as written (``..`` applied) stays in ``folder``: a ``<filename>`` must not lead out."""
    return Path(os.path.normpath(path)).is_relative_to(os.path.normpath(folder))


def _parse(xml: Path, by_stem: dict[str, list[Path]], image_dir: Path) -> tuple[_Record | None, list[Problem]]:
    """One annotation file as a record with its boxes, and the problems found in it."""
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        message = re.sub(r": line \d+, column \d+$", "", str(exc))
        return None, [Problem(xml, f"unreadable XML (line {exc.position[0]}: {message})", IGNORED_FILE)]
    except OSError as exc:
        return None, [Problem(xml, f"unreadable XML ({exc.strerror})", IGNORED_FILE)]
    filename = (root.findtext("filename") or "").strip()
    problems = []
    if filename and not _inside(image_dir / filename, image_dir):
        reason = f"filename {filename!r} points outside {image_dir}: refused; looking for {xml.stem}.* instead"
        problems.append(Problem(xml, reason, NOTE))
        filename = ""
    image = _find_image(filename, xml, by_stem, image_dir)
    if image is None:
        looked = f"{image_dir / filename} and " if filename else ""
        reason = f"annotation without an image (looked for {looked}{image_dir / xml.stem}.*)"
        return None, [*problems, Problem(xml, reason, IGNORED_FILE)]
    size = root.find("size")
    record = _Record(xml, image, _number(size, "width"), _number(size, "height"))
    for k, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        corners = _bndbox(obj)
        if not name:
            problems.append(Problem(xml, f"object {k}: no class name", DROPPED_BOX))
        elif isinstance(corners, str):
            problems.append(Problem(xml, f"object {k}: malformed bndbox ({corners})", DROPPED_BOX))
        else:
            record.objects.append((f"object {k}", name, corners))
    return record, problems


def _read_ids(listing: Path) -> list[str]:
    """An ImageSets list's lines, decoded as the file system decodes names, so a non-UTF-8 file stem matches."""
    try:
        data = listing.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{listing}: unreadable ({exc.strerror or exc})") from None
    return data.removeprefix(b"\xef\xbb\xbf").decode("utf-8", "surrogateescape").splitlines()


def _split_lists(root: Path) -> dict[str, str] | None:
    """Id -> split from ``ImageSets/Main``; None when there are no split files (everything is train)."""
    main = root / "ImageSets" / "Main"
    if not any((main / f"{name}.txt").is_file() for name in (*SPLITS, "trainval")):
        return None
    splits: dict[str, str] = {}
    for split in SPLITS:  # trainval adds nothing: its ids are train unless val lists them
        listing = main / f"{split}.txt"
        if listing.is_file():
            for line in _read_ids(listing):
                if line.split():
                    splits[line.split()[0]] = split
    return splits


def _folders(root: Path) -> tuple[Path, Path]:
    """The annotation and image folders of a VOC layout."""
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder (expected Pascal VOC layout)")
    annotation_dir = _subfolder(root, _ANNOTATION_FOLDERS)
    image_dir = _subfolder(root, _IMAGE_FOLDERS)
    if annotation_dir is None or image_dir is None:
        missing = "Annotations" if annotation_dir is None else "JPEGImages"
        raise DatasetError(f"{root}: no {missing} folder (expected Pascal VOC layout)")
    return annotation_dir, image_dir


def _sample(record: _Record, classes: dict[str, int], split: str) -> tuple[Sample, list[Problem]]:
    sample = Sample(record.image, split=split, label=record.xml)
    problems = []
    for ref, name, corners in record.objects:
        if name in classes:
            sample.boxes.append(Box(classes[name], *corners, ref=ref))
        else:
            reason = f"{ref}: class {name!r} is not in the class list"
            problems.append(Problem(record.xml, reason, DROPPED_BOX))
    return sample, problems


def _one_record_per_image(records: list[_Record]) -> tuple[list[_Record], list[Problem]]:
    """XMLs naming the same image become one record with every object, so the image is not split into copies
    that each teach the other's boxes as background."""
    first: dict[Path, _Record] = {}
    problems = []
    for record in records:
        kept = first.setdefault(record.image, record)
        if kept is not record:
            kept.objects += [(f"{record.xml.name} {ref}", name, box) for ref, name, box in record.objects]
            reason = f"names the same image {record.image.name} as {kept.xml.name}: one image with the objects of both"
            problems.append(Problem(record.xml, reason, NOTE))
    return list(first.values()), problems


def _size_note(sample: Sample, record: _Record | None, info: ImageInfo) -> Problem | None:
    """A note when the XML's size is not the file's (0 means unknown in many VOC exports)."""
    if record is None or not record.width or not record.height:
        return None
    if (record.width, record.height) == (info.width, info.height):
        return None
    reason = (
        f"image {sample.image.name}: size in the XML {record.width:g}x{record.height:g} differs from the "
        f"file's {info.width}x{info.height}; the file's size is used"
    )
    return Problem(record.xml, reason, CONVERTED)


def read_voc(path: str | Path, names: list[str] | None = None, workers: int = 8) -> Collection:
    """A Pascal VOC folder with every image inspected; ``names`` fixes the class order."""
    root = Path(path).expanduser().resolve()
    annotation_dir, image_dir = _folders(root)
    image_files = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    by_stem: dict[str, list[Path]] = {}
    for image in image_files:
        by_stem.setdefault(image.stem, []).append(image)
    xmls = sorted(annotation_dir.glob("*.xml"))
    records: list[_Record] = []
    problems: list[Problem] = []
    for xml in xmls:
        record, found = _parse(xml, by_stem, image_dir)
        problems += found
        records += [record] if record is not None else []
    records, merged = _one_record_per_image(records)
    problems += merged
    # VOC has no class order: without a class list, sorted names at least make it reproducible.
    names = list(names) if names is not None else sorted({name for r in records for _, name, _ in r.objects})
    classes = {name: index for index, name in enumerate(names)}
    splits = _split_lists(root) or {}
    samples: list[Sample] = []
    for record in records:
        sample, found = _sample(record, classes, splits.get(record.xml.stem, "train"))
        samples.append(sample)
        problems += found
    # An image whose XML exists but could not be used is not known to be background: it is left out (the XML's
    # problem names it: same stem).
    claimed = {r.image for r in records} | {p for xml in xmls for p in by_stem.get(xml.stem, [])}
    for image in (p for p in image_files if p not in claimed):
        samples.append(Sample(image, split=splits.get(image.stem, "train"), labelled=False))
    padded = [*records, *[None] * (len(samples) - len(records))]  # background images have no record
    for sample, record, info in zip(samples, padded, inspect_images([s.image for s in samples], workers)):
        sample.take_info(info)
        if not info.problem and (note := _size_note(sample, record, info)):
            problems.append(note)
    return Collection(names, samples, problems)


def _xml(sample: Sample, file_name: str, names: list[str]) -> str:
    objects = "".join(
        f"  <object><name>{escape(names[box.cls])}</name><bndbox>"
        + "".join(f"<{tag}>{round(v, 3)}</{tag}>" for tag, v in zip(_CORNERS, (box.x1, box.y1, box.x2, box.y2)))
        + "</bndbox></object>\n"
        for box in sample.boxes
    )
    size = f"<width>{sample.width}</width><height>{sample.height}</height><depth>3</depth>"
    return f"<annotation>\n  <filename>{escape(file_name)}</filename>\n  <size>{size}</size>\n{objects}</annotation>\n"


def write_voc(collection: Collection, out_dir: str | Path) -> Path:
    """``Annotations``, ``JPEGImages`` and ``ImageSets/Main`` under ``out_dir``; unusable images are left out."""
    out = Path(out_dir)
    for folder in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    ids: dict[str, list[str]] = {}
    used: set[str] = set()
    for sample in (s for s in collection.samples if not s.image_problem):
        base = safe_name(sample.image.stem)
        stem, count = base, 1
        while stem in used:  # VOC ids are unique across splits, YOLO names only within one
            stem, count = f"{base}_{count}", count + 1
        used.add(stem)
        file_name = f"{stem}{sample.image.suffix}"
        shutil.copy2(sample.image, out / "JPEGImages" / file_name)
        if sample.labelled:
            xml = _xml(sample, file_name, collection.names)
            (out / "Annotations" / f"{stem}.xml").write_text(xml, encoding="utf-8")
        ids.setdefault(sample.split, []).append(stem)
    for split, listed in ids.items():
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in listed), encoding="utf-8")
    return out

"""COCO detection JSON: read it into a `Collection`, and write a `Collection` out as one.

A COCO file lists ``images`` (id, file_name, width, height), ``annotations`` (id, image_id,
category_id, ``bbox`` as ``[x, y, w, h]`` in pixels) and ``categories`` (id, name). One file holds one
split, named in its file name (``instances_train2017.json``). Every image is listed, so an image with
no annotations is a background image that is still labelled, unlike a YOLO image without a label file.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

from pipeline.data.annotations import (
    CONVERTED,
    DROPPED_BOX,
    IGNORED_FILE,
    NOTE,
    SKIPPED_IMAGE,
    Box,
    Collection,
    Problem,
    Sample,
)
from pipeline.data.dataset import SPLITS, DatasetError, read_text
from pipeline.data.images import ImageInfo, inspect_images
from pipeline.data.yolo import unique_names

_REQUIRED = ("images", "annotations", "categories")


def _split_of(json_path: Path, single: bool) -> str:
    name = json_path.name.lower()
    for split in SPLITS:  # "train" first: "trainval" is training data
        if split in name:
            return split
    if not single:
        raise DatasetError(f"{json_path}: cannot tell the split from the file name (train, val or test)")
    return "train"


def _json_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DatasetError(f"{path}: no such file or folder")
    files = sorted(path.glob("*.json")) + sorted((path / "annotations").glob("*.json"))
    if not files:
        raise DatasetError(f"{path}: no COCO JSON files in the folder or its annotations/ folder")
    return files


def _load(json_path: Path) -> dict[str, Any]:
    """The parsed file, with the three lists COCO detection needs checked to be there."""
    text = read_text(json_path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{json_path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit number, arrays nested thousands deep
        raise DatasetError(f"{json_path}: unreadable JSON ({str(exc)[:80]})") from None
    for key in _REQUIRED:
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: {key}: missing or not a list (not a COCO detection file?)")
    return data


def _categories(data: dict[str, Any], json_path: Path) -> list[tuple[int, str]]:
    """``(id, name)`` sorted by id: COCO writers number categories in their source order."""
    entries = data["categories"]
    if not all(isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str) for c in entries):
        raise DatasetError(f"{json_path}: categories: every entry needs an integer id and a name")
    pairs = [(c["id"], c["name"]) for c in entries]
    if len({i for i, _ in pairs}) != len(pairs):
        raise DatasetError(f"{json_path}: categories: repeated category id")
    return sorted(pairs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON's true is not the id 1


def _is_number(value: Any) -> bool:
    """A finite JSON number: not a bool, not NaN or Infinity (Python's json reads those literals)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def _is_id(value: Any) -> bool:
    return _is_int(value) or (isinstance(value, str) and value != "")


def dataset_root(json_path: Path) -> Path:
    """The folder a COCO file's images must be under: its own, or its parent's for ``annotations/x.json``."""
    folder = json_path.parent
    return folder.parent if folder.name.lower() == "annotations" else folder


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path``, read as written (``..`` applied), stays under ``root``."""
    return Path(os.path.normpath(path)).is_relative_to(os.path.normpath(root))


def find_image(file_name: str, json_dir: Path, split: str, root: Path | None = None) -> Path | str:
    """The image a ``file_name`` means, looked for under ``root`` where COCO exports usually put images, or why
    there is none. Nothing outside ``root`` is used: a ``../`` or absolute name leading out is refused."""
    root = dataset_root(json_dir / "x.json") if root is None else root
    names = dict.fromkeys([file_name, os.path.basename(file_name)])  # ordered, without repeats
    for name in names:
        for base in (
            json_dir,
            json_dir / "images",
            json_dir / "images" / split,
            json_dir.parent / "images",
            json_dir.parent / "images" / split,
            json_dir.parent,
        ):
            candidate = Path(os.path.normpath(base / name))  # an absolute file_name stays as it is
            if _inside(candidate, root) and candidate.is_file():
                return candidate
    if not _inside(json_dir / file_name, root):
        return f"points outside the dataset folder {root}; refused"
    return "not found"


def _box(ann: Any, index: int, images: set[Any], classes: dict[int, int]) -> tuple[Any, Box | str | None]:
    """The annotation's image id and its box, or the reason it is dropped (None: its image is not used)."""
    if not isinstance(ann, dict):
        return None, f"annotation at index {index}: not an object"
    ref = f"annotation {str(ann.get('id', f'at index {index}'))[:40]}"
    if "image_id" not in ann:
        return None, f"{ref}: no image_id"
    image_id = ann["image_id"]
    if not _is_id(image_id) or image_id not in images:
        return image_id, f"{ref}: image id {image_id} is not in images"
    category = ann.get("category_id")
    if not _is_int(category):
        return image_id, f"{ref}: category id {json.dumps(category)[:30]} is not an integer"
    if category not in classes:
        return image_id, f"{ref}: category id {category} is not in categories"
    bbox = ann.get("bbox")
    numbers = isinstance(bbox, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
    if not numbers or len(bbox) != 4:
        return image_id, f"{ref}: malformed bbox {json.dumps(bbox)[:60]} (expected [x, y, w, h] numbers)"
    if not all(_is_number(v) for v in bbox):
        return image_id, f"{ref}: bbox {json.dumps(bbox)[:60]} holds a number that is not finite"
    x, y, w, h = (float(v) for v in bbox)
    return image_id, Box(classes[category], x, y, x + w, y + h, ref=ref)  # iscrowd boxes are kept as boxes


_Entry = tuple[int, dict[str, Any], Path | None]  # index in images, the entry, the image file found (None: not)


def _entry_problem(index: int, entry: Any) -> str:
    named = entry.get("file_name") if isinstance(entry, dict) else None
    named = f" ({named})" if isinstance(named, str) else ""
    return f"image entry at index {index}{named}: needs an id (an integer or a string) and a file_name"


def _entries(json_path: Path, data: dict[str, Any], split: str) -> tuple[dict[Any, list[_Entry]], list[Problem]]:
    """The image entries grouped by id, each with its file looked up; malformed, missing and refused ones named."""
    root = dataset_root(json_path)
    by_id: dict[Any, list[_Entry]] = {}
    problems: list[Problem] = []
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or not _is_id(entry.get("id")) or not isinstance(entry.get("file_name"), str):
            problems.append(Problem(json_path, _entry_problem(index, entry), IGNORED_FILE))
            continue
        found = find_image(entry["file_name"], json_path.parent, split, root) if entry["file_name"] else "no file_name"
        if isinstance(found, str):
            reason = f"image {entry['file_name']} (id {entry['id']}) {found}"
            problems.append(Problem(json_path, reason, IGNORED_FILE))
        by_id.setdefault(entry["id"], []).append((index, entry, found if isinstance(found, Path) else None))
    return by_id, problems


def _one_file(image_id: Any, entries: list[_Entry], json_path: Path) -> tuple[Path | None, list[Problem]]:
    """The one file an image id names; an id used by entries naming different files names none (and says so)."""
    files = {image for _, _, image in entries}
    if len(entries) == 1 or (len(files) == 1 and None not in files):
        note = []
        if len(entries) > 1:
            where = ", ".join(str(index) for index, _, _ in entries)
            reason = (
                f"image id {image_id} is listed {len(entries)} times (at index {where}) for the same file: one image"
            )
            note = [Problem(json_path, reason, NOTE)]
        return entries[0][2], note
    listed = " and ".join(f"{index} ({entry['file_name']})" for index, entry, _ in entries)
    problems = [
        Problem(
            json_path,
            f"image id {image_id} is used by the entries at index {listed}: its annotations cannot be assigned "
            f"to one image; image {entry['file_name']} left out under this id",
            SKIPPED_IMAGE,
        )
        for _, entry, image in entries
        if image is not None
    ]
    return None, problems


def _read_file(
    json_path: Path, data: dict[str, Any], split: str, names: list[tuple[int, str]]
) -> tuple[list[tuple[Sample, dict[str, Any]]], list[Problem]]:
    """Samples (each with its JSON image entry) and problems of one COCO file.

    One file is one sample: ids that name the same file share it and its boxes, so the image is not split
    into copies that each teach the other's boxes as background.
    """
    classes = {category: index for index, (category, _) in enumerate(names)}
    by_id, problems = _entries(json_path, data, split)
    by_file: dict[Path, tuple[Sample, dict[str, Any]]] = {}
    ids_of: dict[Path, list[Any]] = {}
    sample_of: dict[Any, Sample] = {}
    for image_id, entries in by_id.items():
        image, found = _one_file(image_id, entries, json_path)
        problems += found
        if image is None:
            continue
        image = image.resolve()
        sample, _ = by_file.setdefault(image, (Sample(image, split=split, label=json_path), entries[0][1]))
        sample_of[image_id] = sample
        ids_of.setdefault(image, []).append(image_id)
    for image, ids in ids_of.items():
        if len(ids) > 1:
            reason = f"image {by_file[image][1]['file_name']} is listed under ids {', '.join(map(str, ids))}: one image with the annotations of all"
            problems.append(Problem(json_path, reason, NOTE))
    for index, ann in enumerate(data["annotations"]):
        image_id, box = _box(ann, index, set(by_id), classes)
        if isinstance(box, str):
            problems.append(Problem(json_path, box, DROPPED_BOX))
        elif box is not None and image_id in sample_of:  # else its image was not found or left out, reported above
            sample_of[image_id].boxes.append(box)
    return list(by_file.values()), problems


def _size_note(entry: dict[str, Any], info: ImageInfo, json_path: Path) -> Problem | None:
    """A note when the JSON's size is not the file's: boxes stay as written, the file's size wins."""
    width, height = entry.get("width"), entry.get("height")
    if not (_is_number(width) and _is_number(height)) or (width, height) == (info.width, info.height):
        return None
    reason = (
        f"image {entry['file_name']}: size in the JSON {width}x{height} differs from the file's "
        f"{info.width}x{info.height}; the file's size is used"
    )
    return Problem(json_path, reason, CONVERTED)


def read_coco(path: str | Path, workers: int = 8) -> Collection:
    """A COCO JSON file, or a folder of them (one per split), with every image inspected."""
    files = _json_files(Path(path).expanduser().resolve())
    first: tuple[Path, list[str]] | None = None
    found: list[tuple[Sample, dict[str, Any]]] = []
    problems: list[Problem] = []
    for json_path in files:
        data = _load(json_path)
        categories = _categories(data, json_path)
        names = [name for _, name in categories]
        # Ids may be numbered differently per file; what must agree is the classes and their order.
        if first is None:
            first = (json_path, names)
        elif names != first[1]:
            raise DatasetError(f"{json_path}: categories {names} differ from {first[1]} in {first[0]}")
        split = _split_of(json_path, single=len(files) == 1)
        samples, file_problems = _read_file(json_path, data, split, categories)
        found += samples
        problems += file_problems
    for (sample, entry), info in zip(found, inspect_images([sample.image for sample, _ in found], workers)):
        sample.take_info(info)
        if not info.problem and (note := _size_note(entry, info, sample.label or sample.image)):
            problems.append(note)
    return Collection(first[1] if first else [], [s for s, _ in found], problems)


def _file_name(sample: Sample, stem: str, out_dir: Path) -> str:
    """The image relative to the JSON's folder; one from elsewhere is copied into ``images/<split>/`` first, as
    readers refuse names outside the JSON's folder (and the set moves as one)."""
    image = sample.image.resolve()
    if not image.is_relative_to(out_dir):
        target, count = out_dir / "images" / sample.split / f"{stem}{image.suffix}", 1
        while target.exists():  # never over another image already there
            target, count = target.with_name(f"{stem}_c{count}{image.suffix}"), count + 1
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, target)
        image = target
    return image.relative_to(out_dir).as_posix()


def write_coco(collection: Collection, out_dir: str | Path) -> dict[str, Path]:
    """One ``instances_<split>.json`` per split under ``out_dir``; images that cannot be used are left out."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(collection.names)]
    usable = [s for s in collection.samples if not s.image_problem]
    stems = unique_names(usable)
    written: dict[str, Path] = {}
    for split in Collection(collection.names, usable).splits():
        images, annotations = [], []
        for index, sample in ((i, s) for i, s in enumerate(usable) if s.split == split):
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": _file_name(sample, stems[index], out_dir),
                    "width": sample.width,
                    "height": sample.height,
                }
            )
            for box in sample.boxes:
                x, y, w, h = (round(v, 3) for v in (box.x1, box.y1, box.width, box.height))
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": box.cls + 1,
                        "bbox": [x, y, w, h],
                        "area": round(w * h, 3),
                        "iscrowd": 0,
                    }
                )
        path = out_dir / f"instances_{split}.json"
        spec = {"images": images, "annotations": annotations, "categories": categories}
        path.write_text(json.dumps(spec), encoding="utf-8")
        written[split] = path
    return written

"""COCO detection JSON: read it into a `Collection`, and write a `Collection` out as one.

A COCO file lists ``images`` (id, file_name, width, height), ``annotations`` (id, image_id,
category_id, ``bbox`` as ``[x, y, w, h]`` in pixels) and ``categories`` (id, name). One file holds one
split, named in its file name (``instances_train2017.json``). Every image is listed, so an image with
no annotations is a background image that is still labelled, unlike a YOLO image without a label file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipeline.data.annotations import CONVERTED, DROPPED_BOX, IGNORED_FILE, Box, Collection, Problem, Sample
from pipeline.data.dataset import DatasetError
from pipeline.data.images import ImageInfo, inspect_images

_REQUIRED = ("images", "annotations", "categories")


def _split_of(json_path: Path, single: bool) -> str:
    name = json_path.name.lower()
    for split in ("train", "val", "test"):  # "train" first: "trainval" is training data
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
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{json_path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{json_path}: unreadable ({exc})") from None
    for key in _REQUIRED:
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetError(f"{json_path}: {key}: missing or not a list (not a COCO detection file?)")
    return data


def _categories(data: dict[str, Any], json_path: Path) -> list[tuple[int, str]]:
    """``(id, name)`` sorted by id: COCO writers number categories in their source order."""
    try:
        pairs = [(int(c["id"]), str(c["name"])) for c in data["categories"]]
    except (KeyError, TypeError, ValueError):
        raise DatasetError(f"{json_path}: categories: every entry needs an integer id and a name") from None
    if len({i for i, _ in pairs}) != len(pairs):
        raise DatasetError(f"{json_path}: categories: repeated category id")
    return sorted(pairs)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def find_image(file_name: str, json_dir: Path, split: str) -> Path | None:
    """The image a ``file_name`` means, looked for where COCO exports usually put images."""
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
            candidate = base / name  # an absolute file_name stays as it is
            if candidate.is_file():
                return candidate
    return None


def _box(ann: Any, index: int, images: set[Any], classes: dict[int, int]) -> tuple[Any, Box | str | None]:
    """The annotation's image id and its box, or the reason it is dropped (None: its image is not used)."""
    if not isinstance(ann, dict):
        return None, f"annotation at index {index}: not an object"
    ref = f"annotation {ann.get('id', f'at index {index}')}"
    if "image_id" not in ann:
        return None, f"{ref}: no image_id"
    image_id = ann["image_id"]
    if not isinstance(image_id, (int, str)) or image_id not in images:
        return image_id, f"{ref}: image id {image_id} is not in images"
    category = ann.get("category_id")
    if not isinstance(category, int) or category not in classes:
        return image_id, f"{ref}: category id {category} is not in categories"
    bbox = ann.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
        return image_id, f"{ref}: malformed bbox {json.dumps(bbox)[:60]} (expected [x, y, w, h] numbers)"
    x, y, w, h = (float(v) for v in bbox)
    return image_id, Box(classes[category], x, y, x + w, y + h, ref=ref)  # iscrowd boxes are kept as boxes


def _read_file(
    json_path: Path, data: dict[str, Any], split: str, names: list[tuple[int, str]]
) -> tuple[list[tuple[Sample, dict[str, Any]]], list[Problem]]:
    """Samples (each with its JSON image entry) and problems of one COCO file."""
    classes = {category: index for index, (category, _) in enumerate(names)}
    problems: list[Problem] = []
    samples: dict[Any, tuple[Sample, dict[str, Any]]] = {}
    listed: set[Any] = set()
    for index, entry in enumerate(data["images"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), (int, str)) or not entry.get("file_name"):
            reason = f"image entry at index {index}: needs an id and a file_name"
            problems.append(Problem(json_path, reason, IGNORED_FILE))
            continue
        listed.add(entry["id"])
        image = find_image(str(entry["file_name"]), json_path.parent, split)
        if image is None:
            reason = f"image {entry['file_name']} (id {entry['id']}) not found"
            problems.append(Problem(json_path, reason, IGNORED_FILE))
            continue
        sample = Sample(image.resolve(), split=split, label=json_path, labelled=True)
        samples[entry["id"]] = (sample, entry)
    for index, ann in enumerate(data["annotations"]):
        image_id, box = _box(ann, index, listed, classes)
        if isinstance(box, str):
            problems.append(Problem(json_path, box, DROPPED_BOX))
        elif box is not None and image_id in samples:  # else its image was not found, reported above
            samples[image_id][0].boxes.append(box)
    return list(samples.values()), problems


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


def _file_name(image: Path, out_dir: Path) -> str:
    """Relative to the JSON's folder when the image is under it (the set moves as one), else absolute."""
    image = image.resolve()
    return image.relative_to(out_dir).as_posix() if image.is_relative_to(out_dir) else str(image)


def write_coco(collection: Collection, out_dir: str | Path) -> dict[str, Path]:
    """One ``instances_<split>.json`` per split under ``out_dir``; images that cannot be used are left out."""
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    categories = [{"id": i + 1, "name": name, "supercategory": "defect"} for i, name in enumerate(collection.names)]
    usable = [s for s in collection.samples if not s.image_problem]
    written: dict[str, Path] = {}
    for split in Collection(collection.names, usable).splits():
        images, annotations = [], []
        for sample in (s for s in usable if s.split == split):
            image_id = len(images) + 1
            images.append(
                {
                    "id": image_id,
                    "file_name": _file_name(sample.image, out_dir),
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

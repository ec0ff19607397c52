"""Find a YOLO-layout dataset from ``data.path`` and pin it down for one training.

``data.path`` may be a ``data.yaml`` or a folder holding one. The splits are resolved to absolute
paths (relative ones against the yaml's own folder, as NEU-DET's README and our synthetic sets
write them) and a resolved copy is written into the training folder, so ultralytics never guesses
against its global datasets folder. The content hash covers every image and label file, so two runs
on the same bytes share a hash whatever the folder is called.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.messages import UserError

# Shared by the data formats and by predict's sources.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLITS = ("train", "val", "test")  # in this order wherever splits are listed
TRAINING_SPLITS = SPLITS[:2]  # what a training needs; test is optional


def split_rank(name: str) -> int:
    """Where a split sorts: in the order of `SPLITS`, any other name after them."""
    return SPLITS.index(name) if name in SPLITS else len(SPLITS)


class DatasetError(UserError, ValueError):
    """A dataset that cannot be used; the message is one line naming the file and the reason."""

    def __str__(self) -> str:  # file names with undecodable bytes must not crash the print of the message
        return printable(super().__str__())


# Lone surrogates: os.fsdecode's escapes for a file name's non-UTF-8 bytes (U+DC80..U+DCFF), or JSON's "\\ud800".
_SURROGATE = re.compile("[\ud800-\udfff]")


def _escape(char: str, prefix: str) -> str:
    code = ord(char)
    return f"{prefix}x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"{prefix}u{code:04x}"


def printable(text: str) -> str:
    """``text`` safe to print or write as UTF-8: a file name's undecodable bytes shown as ``\\xff``."""
    return _SURROGATE.sub(lambda m: _escape(m.group(), "\\"), text)


def safe_name(name: str) -> str:
    """A file name that is valid UTF-8: each undecodable byte becomes ``_xff``."""
    return _SURROGATE.sub(lambda m: _escape(m.group(), "_"), name)


def decode_error(data: bytes, exc: UnicodeDecodeError) -> str:
    """Where a file stops being UTF-8, for a message: ``line 3: byte 0xff is not UTF-8``."""
    line = data[: exc.start].count(b"\n") + 1
    return f"line {line}: byte 0x{data[exc.start]:02x} is not UTF-8"


def read_text(path: Path) -> str:
    """A text file as UTF-8 (a BOM is dropped); unreadable or not UTF-8 is a one-line DatasetError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: unreadable ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: {decode_error(data, exc)} (save it as UTF-8)") from None


@dataclass(frozen=True)
class Dataset:
    name: str
    data_yaml: Path  # the resolved copy ultralytics trains on
    splits: dict[str, Path]
    names: dict[int, str]
    content_hash: str
    images: dict[str, int]


def _find_yaml(path: Path) -> Path:
    if path.is_file():
        if path.suffix not in {".yaml", ".yml"}:
            raise DatasetError(f"data.path: {path}: expected a data.yaml or a dataset folder")
        return path
    if path.is_dir():
        for candidate in ("data.yaml", "data.yml", "dataset.yaml"):
            if (path / candidate).is_file():
                return path / candidate
        raise DatasetError(f"data.path: {path}: folder has no data.yaml (class names are needed)")
    raise DatasetError(f"data.path: {path}: no such file or folder")


def load_yaml(path: Path) -> Any:
    """A YAML file's content; invalid YAML is a one-line DatasetError naming the file and line."""
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise DatasetError(f"{path}:{f' line {mark.line + 1}:' if mark else ''} invalid YAML") from None


def _names(spec: dict[str, Any], source: Path) -> dict[int, str]:
    names = spec.get("names")
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not names:
        raise DatasetError(f"{source}: names: expected a list or mapping of class names")
    try:
        return {int(k): str(v) for k, v in sorted(names.items(), key=lambda kv: int(kv[0]))}
    except (TypeError, ValueError):
        raise DatasetError(f"{source}: names: class ids must be integers") from None


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def label_for(image: Path) -> Path:
    """YOLO's rule: the last ``images`` folder in the path becomes ``labels``, the suffix ``.txt``."""
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if index is not None:
        parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def content_hash(splits: dict[str, Path]) -> str:
    """SHA-256 over every image and label file (split, name and bytes), in a fixed order."""
    digest = hashlib.sha256()
    for split, folder in sorted(splits.items()):
        for image in images_in(folder):
            name = image.relative_to(folder).as_posix()
            for kind, file in (("image", image), ("label", label_for(image))):
                if file.is_file():
                    digest.update(os.fsencode(f"{split}/{kind}/{name}\0"))  # a name's raw bytes, UTF-8 or not
                    digest.update(file.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class DataYaml:
    """What a data.yaml says: its own path, the dataset root, the split folders and the class names."""

    source: Path
    root: Path
    splits: dict[str, Path]
    names: dict[int, str]


def read_data_yaml(path: str | Path, require: tuple[str, ...] = TRAINING_SPLITS) -> DataYaml:
    """Find and read a data.yaml (or the one in a folder), with every split resolved to an existing folder."""
    if not str(path).strip():
        raise DatasetError("data.path: empty; give a data.yaml or a folder in YOLO layout")
    source = _find_yaml(Path(path).expanduser().resolve())
    spec = load_yaml(source) or {}
    if not isinstance(spec, dict):
        raise DatasetError(f"{source}: expected a mapping with train, val and names")
    if not isinstance(spec.get("path") or ".", str):
        raise DatasetError(f"{source}: path: expected one folder path")
    root = Path(spec.get("path") or ".")
    root = root if root.is_absolute() else (source.parent / root).resolve()
    splits: dict[str, Path] = {}
    for split in SPLITS:
        if not spec.get(split):
            continue
        if not isinstance(spec[split], str):
            raise DatasetError(f"{source}: {split}: expected one folder path (lists are not supported)")
        folder = Path(spec[split])
        folder = Path(os.path.normpath(folder if folder.is_absolute() else root / folder))  # one spelling per folder
        if not folder.is_dir():
            raise DatasetError(f"{source}: {split}: folder {folder} does not exist")
        splits[split] = folder
    for required in require:
        if required not in splits:
            raise DatasetError(f"{source}: {required}: missing (a training needs train and val splits)")
    return DataYaml(source, root, splits, _names(spec, source))


def resolve_dataset(path: str | Path, out_dir: str | Path, name: str = "") -> Dataset:
    """Validate the layout, write ``out_dir/data.yaml`` with absolute paths and return its description."""
    data_yaml = read_data_yaml(path)
    source, root, splits, names = data_yaml.source, data_yaml.root, data_yaml.splits, data_yaml.names
    images = {split: len(images_in(folder)) for split, folder in splits.items()}
    for split, count in images.items():
        if count == 0:
            raise DatasetError(f"{source}: {split}: no images in {splits[split]}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    resolved = out_dir / "data.yaml"
    resolved.write_text(
        yaml.safe_dump({"path": str(root), **{s: str(p) for s, p in splits.items()}, "names": names}, sort_keys=False),
        encoding="utf-8",
    )
    return Dataset(
        name=name or source.parent.name,
        data_yaml=resolved,
        splits=splits,
        names=names,
        content_hash=content_hash(splits),
        images=images,
    )

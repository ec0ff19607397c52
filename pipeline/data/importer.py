"""Import YOLO, COCO or Pascal VOC data into the YOLO layout ultralytics trains on, with a dataset card.

read (any format) -> validate (skip or fail) -> split (the source's, or seeded stratified fractions)
-> write the YOLO layout into a temporary folder -> swap it in -> card and validation report.
A failed import leaves the previous one untouched.
"""

from __future__ import annotations

import os
import random
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.data.annotations import Collection
from pipeline.data.card import build_card, write_card
from pipeline.data.dataset import DatasetError, content_hash, read_data_yaml
from pipeline.data.manifest import Manifest, fetch
from pipeline.data.split import split_collection
from pipeline.data.validate import Policy, ValidationReport, validate
from pipeline.data.yolo import read_yolo, write_yolo

DEFAULT_SPLIT = {"train": 0.8, "val": 0.2}
REPORT_FILE = "validation.json"


@dataclass
class ImportResult:
    out: Path
    data_yaml: Path
    card: dict
    card_files: tuple[Path, Path]
    report: ValidationReport
    report_file: Path
    notes: list[str] = field(default_factory=list)


def detect_format(src: Path) -> str:
    """yolo (a data.yaml), voc (a folder of XML annotations) or coco (JSON annotations)."""
    if src.is_file():
        return "coco" if src.suffix == ".json" else "yolo"
    if any(src.glob("*.yaml")) or any(src.glob("*.yml")):
        return "yolo"
    for child in src.iterdir() if src.is_dir() else ():
        if child.is_dir() and child.name.lower() == "annotations":
            return "coco" if any(child.glob("*.json")) else "voc"
    if any(src.glob("*.json")):
        return "coco"
    raise DatasetError(f"{src}: cannot tell the format (no data.yaml, Annotations/ or *.json); pass --format")


def read_source(src: str | Path, fmt: str, classes: list[str] | None = None) -> Collection:
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{src}: no such file or folder")
    fmt = detect_format(src) if fmt == "auto" else fmt
    if fmt == "yolo":
        return read_yolo(src)
    if fmt == "coco":
        from pipeline.data.coco import read_coco

        return read_coco(src)
    if fmt == "voc":
        from pipeline.data.voc import read_voc

        return read_voc(src, names=classes or None)
    raise DatasetError(f"format {fmt!r}: must be yolo, coco or voc")


def _in_class_order(collection: Collection, classes: list[str], src: Path) -> tuple[Collection, list[str]]:
    """Renumber to the manifest's class order; the same names in another order are fine, other names are not."""
    if not classes or collection.names == classes:
        return collection, []
    if sorted(collection.names) != sorted(classes):
        raise DatasetError(f"{src}: classes {collection.names} do not match the manifest's classes {classes}")
    new_id = {i: classes.index(name) for i, name in enumerate(collection.names)}
    for sample in collection.samples:
        sample.boxes = [replace(box, cls=new_id.get(box.cls, box.cls + len(classes))) for box in sample.boxes]
    return Collection(classes, collection.samples, collection.problems), [
        "class ids renumbered to the manifest's order"
    ]


def subset(collection: Collection, images: int, seed: int) -> Collection:
    """A class-stratified, seeded subset of ``images`` images; each keeps its own split."""
    total = len(collection.samples)
    if images <= 0 or images >= total:
        return collection
    fraction = images / total
    chosen = split_collection(collection, {"train": fraction, "val": 1 - fraction}, seed).samples
    # The stratified pick is close to ``images``; trim or top it up at random so the count is exact.
    picked, rest = [s.image for s in chosen if s.split == "train"], [s.image for s in chosen if s.split == "val"]
    rng = random.Random(seed)
    rng.shuffle(picked)
    rng.shuffle(rest)
    keep = set((picked + rest)[:images])
    return Collection(collection.names, [s for s in collection.samples if s.image in keep], collection.problems)


def _replace_folder(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)


def import_dataset(
    src: str | Path,
    name: str,
    out: str | Path,
    fmt: str = "auto",
    classes: list[str] | None = None,
    splits: str | dict[str, float] = "source",
    seed: int = 0,
    policy: Policy = "skip",
    images: int = 0,
) -> ImportResult:
    """Convert ``src`` into a YOLO layout at ``out`` and write its card and validation report there."""
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if out == src or out in src.parents or src in out.parents:
        raise DatasetError(f"{out}: the import folder must not contain or be inside the source {src}")
    fmt = detect_format(src) if fmt == "auto" and src.exists() else fmt
    collection = read_source(src, fmt, classes)
    collection, notes = _in_class_order(collection, classes or [], src)
    collection = subset(collection, images, seed)
    report = validate(collection, policy)
    usable = report.collection
    if splits == "source" and len(usable.splits()) < 2:
        splits = DEFAULT_SPLIT
        notes.append(
            f"the source has one split; split {', '.join(f'{k} {v:g}' for k, v in splits.items())} (seed {seed})"
        )
    if isinstance(splits, dict):
        usable = split_collection(usable, splits, seed)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        write_yolo(usable, staging)
        report.write(staging / REPORT_FILE)
        _replace_folder(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    data_yaml = out / "data.yaml"
    layout = read_data_yaml(data_yaml, require=())
    card = build_card(
        usable, name, content_hash(layout.splits), source=str(src), format=fmt, validation=report.counts()
    )
    card_files = write_card(card, out)
    return ImportResult(out, data_yaml, card, card_files, report, out / REPORT_FILE, notes)


def import_manifest(
    manifest: Manifest, src: str | Path | None = None, policy: Policy = "skip", images: int = 0
) -> ImportResult:
    """Import the data a manifest describes (or ``src`` in its place) into ``datasets/<name>/``."""
    source = Path(src) if src else fetch(manifest)
    return import_dataset(
        source,
        manifest.name,
        manifest.out_dir,
        fmt=manifest.format,
        classes=manifest.classes,
        splits=manifest.splits,
        seed=manifest.seed,
        policy=policy,
        images=images,
    )

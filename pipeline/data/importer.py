"""Import YOLO, COCO, Pascal VOC or Label Studio data into the YOLO layout ultralytics trains on, with a dataset card.

read (any format) -> validate (skip or fail) -> split (the source's, or seeded stratified fractions)
-> write the YOLO layout, validation report and card into a hidden sibling folder -> swap it in.
The destination is replaced only when this tool made it (`pipeline.destinations`), and only once the
new import is complete: a failed import leaves the previous one untouched.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from pipeline.data.annotations import Collection
from pipeline.data.card import build_card, write_card
from pipeline.data.dataset import DatasetError, content_hash, read_data_yaml
from pipeline.data.formats import FORMATS
from pipeline.data.manifest import Manifest, download_sha256, fetch
from pipeline.data.split import split_collection
from pipeline.data.validate import Policy, ValidationReport, validate
from pipeline.data.yolo import read_yolo, write_yolo
from pipeline.destinations import MARKER, build_then_swap, reserve

DEFAULT_SPLIT = {"train": 0.8, "val": 0.2}
REPORT_FILE = "validation.json"
KIND = "dataset"  # the marker's kind for import and split: either may replace the other's folder


@dataclass
class ImportResult:
    out: Path
    data_yaml: Path
    card: dict
    card_files: tuple[Path, Path]
    report: ValidationReport
    report_file: Path
    notes: list[str] = field(default_factory=list)


def _is_json_list(path: Path) -> bool:
    """Whether a JSON file holds a list (a Label Studio export) rather than an object (COCO): its first byte."""
    try:
        with path.open("rb") as file:
            head = file.read(4096)
    except OSError:
        return False
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"[")


def detect_format(src: Path) -> str:
    """yolo (a data.yaml), voc (a folder of XML annotations), coco (JSON annotations) or labelstudio (a JSON
    file holding a list of tasks)."""
    if src.is_file():
        if src.suffix == ".json":
            return "labelstudio" if _is_json_list(src) else "coco"
        return "yolo"
    if any(src.glob("*.yaml")) or any(src.glob("*.yml")):
        return "yolo"
    for child in src.iterdir() if src.is_dir() else ():
        if child.is_dir() and child.name.lower() == "annotations":
            return "coco" if any(child.glob("*.json")) else "voc"
    if any(p.name != MARKER for p in src.glob("*.json")):
        return "coco"
    raise DatasetError(f"{src}: cannot tell the format (no data.yaml, Annotations/ or *.json); pass --format")


def read_source(
    src: str | Path, fmt: str, classes: list[str] | None = None, image_folder: str | Path | None = None
) -> Collection:
    """``src`` read in format ``fmt`` (auto: detected); ``image_folder`` is where a Label Studio export's
    images are (`pipeline.data.labelstudio`), and goes with that format only."""
    src = Path(src)
    if not src.exists():
        raise DatasetError(f"{src}: no such file or folder")
    fmt = detect_format(src) if fmt == "auto" else fmt
    if image_folder is not None and fmt != "labelstudio":
        raise DatasetError(
            f"--images {image_folder}: a folder of images goes with --format labelstudio, not {fmt} "
            "(a number of images is a subset size)"
        )
    if fmt == "labelstudio":
        from pipeline.data.labelstudio import read_labelstudio

        return read_labelstudio(src, names=classes or None, images=image_folder)
    if fmt == "yolo":
        return read_yolo(src)
    if fmt == "coco":
        from pipeline.data.coco import read_coco

        return read_coco(src)
    if fmt == "voc":
        from pipeline.data.voc import read_voc

        return read_voc(src, names=classes or None)
    raise DatasetError(f"format {fmt!r}: must be {', '.join(FORMATS[:-1])} or {FORMATS[-1]}")


def parse_classes(text: str, option: str = "--classes") -> list[str]:
    """``scratch,pit,patch`` -> the class names in training order; empty or repeated names are errors."""
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise DatasetError(f"{option}: {text!r}: an empty class name; expected names separated by commas")
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise DatasetError(f"{option}: {', '.join(repeated)} given twice")
    return names


def _in_class_order(collection: Collection, classes: list[str], src: Path, given: str) -> tuple[Collection, list[str]]:
    """Renumber to the given class order; the same names in another order are fine, other names are not."""
    if not classes or collection.names == classes:
        return collection, []
    if sorted(collection.names) != sorted(classes):
        raise DatasetError(f"{src}: classes {collection.names} do not match {given} {classes}")
    new_id = {i: classes.index(name) for i, name in enumerate(collection.names)}
    for sample in collection.samples:
        sample.boxes = [replace(box, cls=new_id.get(box.cls, box.cls + len(classes))) for box in sample.boxes]
    return Collection(classes, collection.samples, collection.problems), [
        f"class ids renumbered to the order of {given}"
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
    option: str = "--out",
    command: str = "data import",
    classes_from: str = "--classes",
    image_folder: str | Path | None = None,
) -> ImportResult:
    """Convert ``src`` into a YOLO layout at ``out`` and write its card and validation report there.

    ``classes`` fixes the class order (VOC has none of its own; another format's names are renumbered);
    ``classes_from`` names where it came from in messages. ``out`` may exist only when empty or made by an
    earlier import or split (``option`` names it in the error); it is replaced only once the new import,
    card and report are all written. ``image_folder``: where a Label Studio export's images are."""
    src = Path(src).expanduser().resolve()
    # One writer per dataset folder, from the first read of the source to the swap: a second import or split
    # into it stops at once (or waits, --wait) instead of doing the work twice and racing for the swap.
    with reserve(out, KIND, option, replace=True, command=command) as out:
        if out == src or out in src.parents or src in out.parents:
            raise DatasetError(f"{out}: the import folder must not contain or be inside the source {src}")
        fmt = detect_format(src) if fmt == "auto" and src.exists() else fmt
        collection = read_source(src, fmt, classes, image_folder)
        collection, notes = _in_class_order(collection, classes or [], src, classes_from)
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
        with build_then_swap(out, KIND, option, command=command, source=str(src), format=fmt) as staging:
            write_yolo(usable, staging)
            report.write(staging / REPORT_FILE)
            layout = read_data_yaml(staging / "data.yaml", require=())  # relative paths: valid after the swap
            card = build_card(
                usable, name, content_hash(layout.splits), source=str(src), format=fmt, validation=report.counts()
            )
            card_files = tuple(out / path.name for path in write_card(card, staging))
        return ImportResult(out, out / "data.yaml", card, card_files, report, out / REPORT_FILE, notes)


def import_manifest(
    manifest: Manifest, src: str | Path | None = None, policy: Policy = "skip", images: int = 0
) -> ImportResult:
    """Import the data a manifest describes (or ``src`` in its place) into ``datasets/<name>/``."""
    with reserve(manifest.out_dir, KIND, "name", replace=True, command="data import"):  # before a download
        return _import_manifest(manifest, src, policy, images)


def _import_manifest(manifest: Manifest, src: str | Path | None, policy: Policy, images: int) -> ImportResult:
    source = Path(src) if src else fetch(manifest)
    result = import_dataset(
        source,
        manifest.name,
        manifest.out_dir,
        fmt=manifest.format,
        classes=manifest.classes,
        splits=manifest.splits,
        seed=manifest.seed,
        policy=policy,
        images=images,
        option="name",
        classes_from="the manifest's classes",
    )
    if not src and not manifest.sha256 and (digest := download_sha256(source)):
        result.notes.append(f"to check later downloads, add to {manifest.file.name}: sha256: {digest}")
    return result

"""The data one training uses: find it, validate it, and pin down exactly what is trained on.

``data.path`` may be a manifest (imported on first use into ``datasets/<name>/``), a data.yaml or a
YOLO folder. Every training validates the data first. Clean data is used where it is. When something
must be left out (a broken image, a bad box, an image in two splits) or converted (16-bit), a cleaned
view is written into the training folder: symlinks to the good images, rewritten labels, converted
copies. The source is never changed, and the report says what was left out and why. With ``data.tile``
the train split is replaced by its tiles at the native resolution (`pipeline.data.tiles`, cached once
per content hash and settings); val stays whole.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import DataConfig, TileConfig
from pipeline.data.annotations import DROPPED_BOX, DROPPED_LINE, RENAMED, SKIPPED_IMAGE
from pipeline.data.card import build_card, write_card
from pipeline.data.dataset import (
    TRAINING_SPLITS,
    Dataset,
    DatasetError,
    DataYaml,
    images_in,
    read_data_yaml,
    resolve_dataset,
)
from pipeline.data.images import needs_copy
from pipeline.data.manifest import is_manifest, load_manifest
from pipeline.data.tiles import cached_tiles
from pipeline.data.validate import ValidationReport, validate
from pipeline.data.yolo import read_yolo, write_yolo

LOG = logging.getLogger("pipeline.data")
DATA_FOLDER = "data"  # inside the training folder: card, validation report, and the cleaned view if one is needed


@dataclass
class TrainingData:
    dataset: Dataset
    report: ValidationReport
    card: dict[str, Any]
    folder: Path  # card.json, card.md, validation.json
    source: Path  # the data.yaml the user's data.path led to
    cleaned: bool  # trained on a cleaned view instead of the source
    notes: list[str] = field(default_factory=list)


def _locate(config: DataConfig) -> tuple[Path, str, list[str]]:
    """The data.yaml to train on and the dataset's name; a manifest's data is imported the first time."""
    path = Path(config.path).expanduser()
    if not is_manifest(path):
        return path, config.name, []
    manifest = load_manifest(path)
    data_yaml = manifest.out_dir / "data.yaml"
    notes = []
    if not data_yaml.is_file():
        from pipeline.data.importer import import_manifest

        LOG.info("data: importing %s into %s", manifest.name, manifest.out_dir)
        result = import_manifest(manifest, policy=config.policy)
        notes.append(f"imported {manifest.name} into {result.out} ({result.report.summary()})")
    return data_yaml, config.name or manifest.name, notes


def _must_clean(report: ValidationReport) -> bool:
    """Whether the source cannot be trained on as it is: something left out, a 16-bit image, a file renamed."""
    lost = any(p.action in {SKIPPED_IMAGE, DROPPED_BOX, DROPPED_LINE, RENAMED} for p in report.problems)
    return lost or any(needs_copy(s.mode) for s in report.collection.samples)


def _check_splits_left(report: ValidationReport, spec: DataYaml) -> None:
    """Train and val must keep images after validation; say why not, instead of ultralytics' missing-file error."""
    for split in TRAINING_SPLITS:
        if report.images[split]:
            continue
        lost = [p for p in report.errors if p.action == SKIPPED_IMAGE]
        why = f"; first: {lost[0]}" if lost else ""
        raise DatasetError(
            f"{spec.source}: {split}: no usable images in {spec.splits[split]} after validation "
            f"({len(lost)} images left out{why})"
        )


def _train_on_tiles(
    report: ValidationReport, dataset: Dataset, tile: TileConfig, card: dict[str, Any], notes: list[str]
) -> Dataset:
    """The dataset with its train split replaced by its tiles (cached, `pipeline.data.tiles`); val stays whole.

    The card gets the tiles' counts and their typical side, which the checkpoint records as the side of
    the training images: predict's tiles then run at the scale the model learned. The content hash stays
    the data's own: the tiles follow from it and the settings, which the config records."""
    tiled = cached_tiles(report.collection, dataset.content_hash, tile, dataset.name)
    splits = {**dataset.splits, "train": tiled.folder / "images" / "train"}
    spec = {"path": str(tiled.folder), **{s: str(p) for s, p in splits.items()}, "names": dataset.names}
    dataset.data_yaml.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    card["tiles"] = {**tiled.card["tiles"], "folder": str(tiled.folder)}
    card["train_image_side"] = tiled.card["train_image_side"]
    notes.append(f"data.tile: {tiled.line('train')}; {'made' if tiled.made else 'reused'} in {tiled.folder}")
    return replace(dataset, splits=splits, images={**dataset.images, "train": len(images_in(splits["train"]))})


def prepare_training_data(config: DataConfig, save_dir: Path) -> TrainingData:
    """Validate the data under ``config.policy`` and write what the training will use into ``save_dir``."""
    source, name, notes = _locate(config)
    spec = read_data_yaml(source)  # train and val must exist before anything is read
    report = validate(read_yolo(source), config.policy)
    _check_splits_left(report, spec)
    folder = save_dir / DATA_FOLDER
    cleaned = _must_clean(report)
    train_from = write_yolo(report.collection, folder, link=True) if cleaned else source
    dataset = resolve_dataset(train_from, save_dir, name or spec.source.parent.name)
    report.write(folder / "validation.json")
    card = build_card(
        report.collection, dataset.name, dataset.content_hash, source=str(source), validation=report.counts()
    )
    if config.tile is not None:
        dataset = _train_on_tiles(report, dataset, config.tile, card, notes)
    write_card(card, folder)
    if report.errors:
        notes.append(
            f"data: {report.summary()}; trained on a cleaned view in {folder} (details: {folder / 'validation.json'})"
        )
    for problem in report.notes:
        notes.append(f"data: {problem}")
    for problem in report.errors[:5]:
        LOG.warning("data: %s", problem)
    if len(report.errors) > 5:
        LOG.warning("data: ... and %d more problems, listed in %s", len(report.errors) - 5, folder / "validation.json")
    return TrainingData(dataset, report, card, folder, spec.source, cleaned, notes)

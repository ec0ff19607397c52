"""Training data cut into tiles at the images' native resolution, made once per dataset and settings.

A 20-px defect on a 2,000-px image shrinks to a few pixels when the image is resized to the training
size; cut into 640-px tiles it keeps its size. Each image larger than the tile is cut where predict's
tiled inference cuts it (`tile_windows`, one code path for where tiles lie), so the model learns
tiles as it will see them. A box is kept in a tile, clipped to it, when at least ``min_visible`` of
its area is inside. A smaller part must not stay in the tile unlabelled, since it would teach that a
defect is background: ``cut_boxes: mask`` fills it (`mask_boxes`); ``cut_boxes: ignore`` keeps the
pixels and writes the part to ``ignore/<split>/<tile>.txt`` (YOLO lines, `ignore_file`), which the
training's loss leaves out of its background (`pipeline.training.callbacks.ignore_regions`). Of the
tiles without a box, a seeded draw keeps ``backgrounds`` of the split's cut tiles. Images not larger
than the tile are used whole (a hard link to the source, else a symbolic link, else a copy: the
source is never changed).

A training with ``data.tile`` trains on a tiled train split kept in the cache
(``$YOLO_PIPELINE_CACHE/tiles/``), one folder per dataset content hash and tile settings, made by
one process at a time (the others wait for it) and reused from then on; ``data tile SRC --out DIR``
writes every split the same way. The card counts the tiles and what became of the boxes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from pydantic import ValidationError

from pipeline.config import TileConfig, option_error
from pipeline.data.annotations import Box, Collection, Sample
from pipeline.data.card import build_card, write_card
from pipeline.data.dataset import DatasetError, content_hash, read_data_yaml
from pipeline.data.images import save_8bit, to_8bit
from pipeline.data.yolo import unique_names
from pipeline.destinations import build_then_swap, check_replaceable, marker_of, writer_lock
from pipeline.files import cache_dir

KIND = "data tile"  # the marker's kind, of the cache's folders and of `data tile --out`
VERSION = 1  # part of the cache key: a change to how tiles are cut makes new sets, never reuses old ones
CACHE_FOLDER = "tiles"  # under cache_dir()
IMAGES, IGNORE = "images", "ignore"  # a tile set's folders of images and of regions the loss ignores, per split
TRAINING_SEED = 0  # a training's background draw: fixed, so trainings with other train.seed share the cached set

Window = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, x2 and y2 exclusive


def tile_starts(length: int, size: int, overlap: float) -> list[int]:
    """Where tiles of ``size`` start along a side of ``length`` so they cover it with ``overlap``."""
    if length <= size:
        return [0]
    step = max(1, int(size * (1 - overlap)))
    starts = list(range(0, length - size, step))
    return [*starts, length - size]  # the last tile ends at the border, not past it


def tile_grid(width: int, height: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Tiles (x1, y1, x2, y2) covering a ``width`` x ``height`` image, row by row."""
    return [
        (x, y, min(x + size, width), min(y + size, height))
        for y in tile_starts(height, size, overlap)
        for x in tile_starts(width, size, overlap)
    ]


def tile_windows(width: int, height: int, size: int, overlap: float) -> list[Window]:
    """Where a ``width`` x ``height`` image is cut: the image itself when ``size`` is 0 or its long side is not
    larger, else `tile_grid`'s tiles. Predict's tiled inference and the tiled training data both cut here."""
    if size and max(width, height) > size:
        return tile_grid(width, height, size, overlap)
    return [(0, 0, width, height)]


@dataclass(frozen=True)
class TileBoxes:
    """What becomes of an image's boxes in one of its tiles."""

    window: Window
    kept: list[Box]  # in the tile's pixels, clipped to it
    clipped: int  # how many of the kept ones the tile's border cuts
    cut: list[Box]  # the visible parts (in the tile, clipped) of boxes cut below min_visible: masked or ignored
    sources: frozenset[int]  # which of the image's boxes are kept here (by index)


def boxes_in_tile(boxes: Sequence[Box], window: Window, min_visible: float) -> TileBoxes:
    """The boxes of an image seen through ``window``: kept (clipped) when at least ``min_visible`` of a box's area
    is inside, else, when any of it is, its visible part as cut."""
    x0, y0, x1, y1 = window
    kept: list[Box] = []
    cut: list[Box] = []
    sources: set[int] = set()
    clipped = 0
    for index, box in enumerate(boxes):
        left, top, right, bottom = max(box.x1, x0), max(box.y1, y0), min(box.x2, x1), min(box.y2, y1)
        if right <= left or bottom <= top:
            continue
        area = box.width * box.height
        visible = (right - left) * (bottom - top) / area if area > 0 else 1.0
        if visible >= min_visible - 1e-9:  # float rounding must not turn an exact 0.5 into a masked box
            kept.append(Box(box.cls, left - x0, top - y0, right - x0, bottom - y0))
            clipped += visible < 1 - 1e-9
            sources.add(index)
        else:
            cut.append(Box(box.cls, left - x0, top - y0, right - x0, bottom - y0))
    return TileBoxes(window, kept, clipped, cut, frozenset(sources))


def pixels_of(box: Box) -> Window:
    """Every pixel ``box`` touches, as a window."""
    return math.floor(box.x1), math.floor(box.y1), math.ceil(box.x2), math.ceil(box.y2)


def mask_boxes(tile: np.ndarray, cut: Sequence[Box], kept: Sequence[Box] = ()) -> np.ndarray:
    """``tile`` with every pixel each ``cut`` box touches filled with the mean colour of the tile's other pixels (a
    new array when anything is filled); the pixels of ``kept`` boxes are never filled.

    A flat fill rather than a blur: a blurred defect is still a darker or brighter blob where the defect
    was, and unlabelled it would teach that a faint defect is background, the very thing masking is for.
    A flat patch at the tile's own brightness holds no edge or texture a defect could be learned from."""
    if not cut:
        return tile
    region = np.zeros(tile.shape[:2], bool)
    for x1, y1, x2, y2 in map(pixels_of, cut):
        region[max(y1, 0) : y2, max(x1, 0) : x2] = True
    for x1, y1, x2, y2 in map(pixels_of, kept):  # a kept defect overlapping the masked piece keeps its pixels
        region[y1:y2, x1:x2] = False
    if not region.any():
        return tile
    rest = tile[~region] if (~region).any() else tile.reshape(-1, *tile.shape[2:])
    filled = tile.copy()
    filled[region] = np.round(rest.mean(axis=0)).astype(tile.dtype)
    return filled


@dataclass
class SplitCounts:
    """What tiling made of one split."""

    images: int = 0  # source images
    cut: int = 0  # of them cut into tiles
    whole: int = 0  # of them not larger than the tile: used whole
    tiles: int = 0  # tiles written (cut ones; whole images are not counted)
    boxes_kept: int = 0  # boxes in the tiled split (whole images' too); a box in two overlapping tiles counts twice
    clipped: int = 0  # kept boxes cut by a tile's border
    masked: int = 0  # box parts below min_visible masked out of a tile (cut_boxes: mask)
    ignored: int = 0  # box parts below min_visible written as regions the loss ignores (cut_boxes: ignore)
    background_tiles: int = 0  # cut tiles without a box, kept
    backgrounds_left_out: int = 0  # cut tiles without a box, not drawn
    boxes_in_no_tile: int = 0  # source boxes kept in none of their image's tiles (too large for min_visible)
    unreadable: int = 0  # images that could not be decoded: left out

    def add(self, other: SplitCounts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass(frozen=True)
class _Tile:
    boxes: TileBoxes
    background: bool  # no box kept in it
    stem: str  # its file name, without the suffix


@dataclass
class _Planned:
    """One source image and what to write of it: itself (``whole``), or the tiles drawn from it."""

    sample: Sample
    stem: str
    whole: bool
    tiles: list[_Tile] = field(default_factory=list)
    lost: int = 0  # boxes kept in none of its tiles
    left_out: int = 0  # defect-free tiles not drawn


def _background_quota(objects: int, available: int, share: float) -> int:
    """How many of ``available`` defect-free tiles to keep beside ``objects`` tiles with boxes, so that they
    make up at most ``share`` of the tiles kept."""
    if share >= 1:
        return available
    return min(available, math.floor(share * objects / (1 - share) + 1e-9))


def _unique(stem: str, used: set[str]) -> str:
    """``stem``, or with ``_`` added until no other file of the split has it (a tile's ``_X_Y`` can meet a name)."""
    while stem in used:
        stem += "_"
    used.add(stem)
    return stem


def _plan_split(samples: list[Sample], tile: TileConfig, seed: int, split: str) -> list[_Planned]:
    """Every image of a split with the tiles it gives; the defect-free tiles drawn (seeded) up to the share."""
    stems = unique_names(samples)
    used: set[str] = set()
    planned: list[_Planned] = []
    candidates: list[tuple[int, int]] = []  # (image, tile) of each defect-free tile, in a fixed order
    objects = 0
    for index, sample in enumerate(samples):
        windows = tile_windows(sample.width, sample.height, tile.size, tile.overlap)
        if len(windows) == 1:  # not larger than the tile
            planned.append(_Planned(sample, _unique(stems[index], used), whole=True))
            continue
        plan = _Planned(sample, stems[index], whole=False)
        found: set[int] = set()
        for window in windows:
            boxes = boxes_in_tile(sample.boxes, window, tile.min_visible)
            found |= boxes.sources
            objects += bool(boxes.kept)
            if not boxes.kept:
                candidates.append((len(planned), len(plan.tiles)))
            stem = _unique(f"{stems[index]}_{window[0]}_{window[1]}", used)
            plan.tiles.append(_Tile(boxes, not boxes.kept, stem))
        plan.lost = len(sample.boxes) - len(found)
        planned.append(plan)
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])
    quota = _background_quota(objects, len(candidates), tile.backgrounds)
    drawn = {candidates[i] for i in rng.choice(len(candidates), quota, replace=False)} if quota else set()
    for i, plan in enumerate(planned):
        kept = [t for k, t in enumerate(plan.tiles) if not t.background or (i, k) in drawn]
        plan.left_out, plan.tiles = len(plan.tiles) - len(kept), kept
    return planned


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source``'s file, else a symbolic link to it, else a copy."""
    real = os.path.realpath(source)
    for make in (os.link, os.symlink):
        try:
            make(real, target)
            return
        except OSError:
            continue
    shutil.copy2(real, target)


def _write_png(path: Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(".png", image)  # PNG: lossless, a JPEG source is not compressed twice
    if not ok:
        raise OSError(f"{path}: could not encode the tile")
    path.write_bytes(data)


def _write_labels(path: Path, boxes: Sequence[Box], width: int, height: int) -> None:
    path.write_text("".join(box.to_yolo_line(width, height) + "\n" for box in boxes), encoding="utf-8")


def ignore_folder(images: str | Path) -> Path | None:
    """Where a split's regions for the loss to ignore are kept: ``.../images/<split>`` -> ``.../ignore/<split>``
    (beside ``labels/``, as ultralytics finds those); None for a folder outside an ``images/`` one (it has none)."""
    images_part, ignore_part = f"{os.sep}{IMAGES}{os.sep}", f"{os.sep}{IGNORE}{os.sep}"
    text = f"{Path(images)}{os.sep}"
    if images_part not in text:
        return None
    return Path(ignore_part.join(text.rsplit(images_part, 1)))  # the last images/: a parent may be named so too


def ignore_file(image: str | Path) -> Path | None:
    """A tile's regions for the loss to ignore (YOLO lines): ``.../images/<split>/<stem>.png`` ->
    ``.../ignore/<split>/<stem>.txt``; None for an image outside an ``images/`` folder."""
    folder = ignore_folder(Path(image).parent)
    return folder / f"{Path(image).stem}.txt" if folder is not None else None


def _write_image(plan: _Planned, images: Path, labels: Path, cut_boxes: str) -> tuple[list[Sample], SplitCounts]:
    """One source image's tiles (or the image, whole) and labels written; the samples written and their counts."""
    sample, counts = plan.sample, SplitCounts(images=1)
    if plan.whole:
        if sample.convert:
            target = images / f"{plan.stem}.png"
            save_8bit(sample.image, target)
        else:
            target = images / f"{plan.stem}{sample.image.suffix}"
            _link_or_copy(sample.image, target)
        _write_labels(labels / f"{plan.stem}.txt", sample.boxes, sample.width, sample.height)
        counts.whole, counts.boxes_kept = 1, len(sample.boxes)
        return [Sample(target, list(sample.boxes), sample.split, sample.width, sample.height)], counts
    try:
        pixels = to_8bit(sample.image)  # as inspected: the card's sizes and the boxes are PIL's, unrotated
    except Exception:  # noqa: BLE001 - a decoder can fail in many ways on a damaged file; it is one image
        return [], SplitCounts(images=1, unreadable=1)
    if pixels.ndim == 3:
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    counts.cut, counts.boxes_in_no_tile, counts.backgrounds_left_out = 1, plan.lost, plan.left_out
    written = []
    for one in plan.tiles:
        boxes = one.boxes
        x1, y1, x2, y2 = boxes.window
        target = images / f"{one.stem}.png"
        if cut_boxes == "ignore":
            _write_png(target, pixels[y1:y2, x1:x2])
            if boxes.cut:
                _write_labels(ignore_folder(images) / f"{one.stem}.txt", boxes.cut, x2 - x1, y2 - y1)
            counts.ignored += len(boxes.cut)
        else:
            _write_png(target, mask_boxes(pixels[y1:y2, x1:x2], boxes.cut, boxes.kept))
            counts.masked += len(boxes.cut)
        _write_labels(labels / f"{one.stem}.txt", boxes.kept, x2 - x1, y2 - y1)
        written.append(Sample(target, list(boxes.kept), sample.split, x2 - x1, y2 - y1))
        counts.tiles += 1
        counts.boxes_kept += len(boxes.kept)
        counts.clipped += boxes.clipped
        counts.background_tiles += one.background
    return written, counts


def tile_collection(
    collection: Collection, out: Path, tile: TileConfig, seed: int = 0, splits: Iterable[str] | None = None
) -> tuple[Collection, dict[str, SplitCounts]]:
    """Write the tiles of ``splits`` (default: all) of ``collection`` into ``out`` in YOLO layout (images/<split>,
    labels/<split>); the tiled collection and the counts per split."""
    wanted = [s for s in collection.splits() if splits is None or s in set(splits)]
    tiled: list[Sample] = []
    counts: dict[str, SplitCounts] = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoding and PNG coding free the GIL
        for split in wanted:  # in the collection's order of splits
            samples = [s for s in collection.samples if s.split == split]
            images, labels = out / IMAGES / split, out / "labels" / split
            for folder in (images, labels, *([ignore_folder(images)] if tile.cut_boxes == "ignore" else [])):
                folder.mkdir(parents=True, exist_ok=True)
            counts[split] = SplitCounts()
            plans = _plan_split(samples, tile, seed, split)
            for written, found in pool.map(_write_image, plans, repeat(images), repeat(labels), repeat(tile.cut_boxes)):
                tiled += written
                counts[split].add(found)
    return Collection(list(collection.names), tiled), counts


@dataclass
class TiledSet:
    """A tiled dataset on disk: its folder (data.yaml, images, labels, card) and its card."""

    folder: Path
    card: dict[str, Any]
    made: bool  # made now, not reused from the cache

    def counts(self, split: str) -> SplitCounts:
        return SplitCounts(**self.card["tiles"]["splits"].get(split, {}))

    def line(self, split: str = "train") -> str:
        """One line on what tiling made of ``split``, e.g. for a training's notes."""
        return summary_line(self.counts(split), TileConfig(**self.card["tiles"]["settings"]))


def summary_line(counts: SplitCounts, tile: TileConfig) -> str:
    """``1,204 tiles of 640 px from 96 images (overlap 0.2): 1,530 boxes kept (212 clipped), 37 masked, 120
    background tiles``, with what else happened when it did."""
    whole = f"; {counts.whole:,} images not larger, used whole" if counts.whole else ""
    cut = f"{counts.ignored:,} ignored in the loss" if tile.cut_boxes == "ignore" else f"{counts.masked:,} masked"
    text = (
        f"{counts.tiles:,} tiles of {tile.size} px from {counts.cut:,} images (overlap {tile.overlap:g}{whole}): "
        f"{counts.boxes_kept:,} boxes kept ({counts.clipped:,} clipped), {cut}, "
        f"{counts.background_tiles:,} background tiles"
    )
    if counts.boxes_in_no_tile:
        text += f"; {counts.boxes_in_no_tile:,} boxes in no tile (too large to be {tile.min_visible:g} inside one)"
    if counts.unreadable:
        text += f"; {counts.unreadable:,} images could not be decoded, left out"
    return text


def _settings(tile: TileConfig, seed: int) -> dict[str, Any]:
    return {**tile.model_dump(), "seed": seed}


def cache_key(source_hash: str, tile: TileConfig, seed: int, splits: Iterable[str]) -> str:
    """What a cached tile set is made from: the data's content hash, the settings, the splits, this code's version."""
    what = {"version": VERSION, "source_hash": source_hash, **_settings(tile, seed), "splits": sorted(splits)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def write_tiles(
    collection: Collection,
    out: str | Path,
    tile: TileConfig,
    *,
    seed: int = 0,
    splits: Iterable[str] | None = None,
    name: str = "",
    source: str = "",
    source_hash: str = "",
    option: str = "--out",
) -> TiledSet:
    """The tiled set of ``collection`` at ``out``: built beside it (data.yaml, images, labels, card) and swapped in
    whole; ``out`` may be new, empty, or an earlier tile set (`pipeline.destinations`)."""
    chosen = list(collection.splits()) if splits is None else [s for s in collection.splits() if s in set(splits)]
    key = cache_key(source_hash, tile, seed, chosen)
    with build_then_swap(out, KIND, option, key=key, source=source, **_settings(tile, seed)) as staging:
        tiled, counts = tile_collection(collection, staging, tile, seed, chosen)
        spec = {**{s: f"images/{s}" for s in counts}, "names": dict(enumerate(collection.names))}
        # No `path` key: the splits resolve against this file's folder, wherever the folder moves.
        (staging / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
        splits_hash = content_hash({s: staging / "images" / s for s in counts})
        card = build_card(
            tiled,
            name,
            splits_hash,
            source=source,
            tiles={
                "settings": tile.model_dump(),
                "seed": seed,
                "source_hash": source_hash,
                "splits": {s: vars(c) for s, c in counts.items()},
            },
        )
        write_card(card, staging)
    return TiledSet(Path(out).expanduser().resolve(), card, made=True)


def _reusable(folder: Path, key: str) -> dict[str, Any] | None:
    """The card of a finished tile set made from ``key`` at ``folder`` whose images are all still there, or None."""
    marker = marker_of(folder)
    if marker is None or marker.get("kind") != KIND or marker.get("key") != key:
        return None
    try:
        card = json.loads((folder / "card.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    # A whole image may be a symbolic link to the source: a moved source would leave it dangling.
    if not all(path.exists() for path in (folder / "images").rglob("*")):
        return None
    return card


def cached_tiles(
    collection: Collection, source_hash: str, tile: TileConfig, name: str = "", splits: Iterable[str] = ("train",)
) -> TiledSet:
    """The tiled ``splits`` of a dataset whose content hash is ``source_hash``, from the cache when they were made
    before with these settings, else made there now. One process makes a set; another asking for it waits."""
    chosen = [s for s in collection.splits() if s in set(splits)]
    key = cache_key(source_hash, tile, TRAINING_SEED, chosen)
    folder = cache_dir() / CACHE_FOLDER / f"{source_hash[:16]}-{key[:12]}"
    with writer_lock(folder, KIND, None, wait=True):  # a cache: wait for the process making it, never refuse
        if (card := _reusable(folder, key)) is not None:
            return TiledSet(folder.resolve(), card, made=False)
        return write_tiles(
            collection,
            folder,
            tile,
            seed=TRAINING_SEED,
            splits=chosen,
            name=name,
            source_hash=source_hash,
            option="the tile cache",
        )


def tile_settings(size: int, overlap: float, min_visible: float, backgrounds: float, cut_boxes: str) -> TileConfig:
    """Command-line values as settings, or one line naming the first bad option."""
    try:
        return TileConfig(
            size=size, overlap=overlap, min_visible=min_visible, backgrounds=backgrounds, cut_boxes=cut_boxes
        )
    except ValidationError as exc:
        raise option_error(exc) from None


def tile_dataset(src: str | Path, out: str | Path, tile: TileConfig, seed: int = 0) -> TiledSet:
    """``data tile``: every split of the YOLO dataset ``src`` (a data.yaml or its folder), validated (bad images
    and boxes left out, as a training does), tiled into ``out``."""
    from pipeline.data.validate import validate
    from pipeline.data.yolo import read_yolo

    check_replaceable(out, KIND)  # a refused --out costs no reading
    path = Path(src).expanduser()
    if not path.exists():
        raise DatasetError(f"{src}: no such file or folder")
    try:
        spec = read_data_yaml(path, require=())
    except DatasetError as exc:
        raise DatasetError(str(exc).removeprefix("data.path: ")) from None
    if not spec.splits:
        raise DatasetError(f"{spec.source}: names no split folders (train, val, test)")
    report = validate(read_yolo(spec.source), "skip")
    if not report.collection.samples:
        raise DatasetError(f"{spec.source}: no usable images")
    return write_tiles(
        report.collection,
        out,
        tile,
        seed=seed,
        name=spec.source.parent.name,
        source=str(spec.source),
        source_hash=content_hash(spec.splits),
    )

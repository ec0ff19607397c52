"""The dataset card: what is in a dataset, as JSON for programs and Markdown for people.

Images and boxes per class and split, image sizes, and the box size distribution, because defects
are often tiny (under 32x32 px, COCO's "small") or very elongated (scratches), and both change which
image size and anchors-free head settings work. The content hash identifies the exact bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data.annotations import Collection
from pipeline.data.dataset import printable
from pipeline.files import write_atomic

TINY_AREA_PX = 32 * 32
ELONGATED_ASPECT = 4.0
PERCENTILES = (5, 25, 50, 75, 95)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    points = np.percentile(np.asarray(values, dtype=np.float64), PERCENTILES)
    return {f"p{p}": round(float(v), 4) for p, v in zip(PERCENTILES, points)}


def _per_split(collection: Collection) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for split in collection.splits():
        samples = [s for s in collection.samples if s.split == split]
        boxes = Counter(box.cls for s in samples for box in s.boxes)
        images = Counter(c for s in samples for c in {box.cls for box in s.boxes})
        table[split] = {
            "images": len(samples),
            "backgrounds": sum(not s.boxes for s in samples),
            "boxes": sum(boxes.values()),
            "classes": {name: {"images": images[i], "boxes": boxes[i]} for i, name in enumerate(collection.names)},
        }
    return table


def _box_sizes(collection: Collection) -> dict[str, Any]:
    widths, heights, relative, aspects = [], [], [], []
    tiny = elongated = 0
    for sample in collection.samples:
        image_area = max(sample.width * sample.height, 1)
        for box in sample.boxes:
            w, h = box.width, box.height
            widths.append(w)
            heights.append(h)
            relative.append(w * h / image_area)
            aspects.append(max(w, h) / max(min(w, h), 1e-9))
            tiny += w * h < TINY_AREA_PX
            elongated += aspects[-1] >= ELONGATED_ASPECT
    return {
        "width_px": _percentiles(widths),
        "height_px": _percentiles(heights),
        "area_fraction_of_image": _percentiles(relative),
        "aspect_ratio": _percentiles(aspects),
        "tiny": tiny,
        "elongated": elongated,
    }


def typical_image_side(collection: Collection, split: str = "train") -> int:
    """The median long side (px) of the split's images (all images when the split has none): what a
    training at ``imgsz`` scales by ``imgsz / side``, so the scale its model learns."""
    samples = [s for s in collection.samples if s.split == split] or collection.samples
    return int(round(float(np.median([max(s.width, s.height) for s in samples])))) if samples else 0


def build_card(collection: Collection, name: str, content_hash: str, source: str = "", **extra: Any) -> dict[str, Any]:
    sizes = Counter(f"{s.width}x{s.height}" for s in collection.samples)
    boxes = collection.box_counts()
    return {
        "name": name,
        "source": source,
        "content_hash": content_hash,
        "classes": list(collection.names),
        "images": len(collection.samples),
        "boxes": sum(boxes.values()),
        "boxes_per_class": {n: boxes[i] for i, n in enumerate(collection.names)},
        "splits": _per_split(collection),
        "image_sizes": dict(sizes.most_common(10)),
        "distinct_image_sizes": len(sizes),
        "train_image_side": typical_image_side(collection),
        "box_sizes": _box_sizes(collection),
        **extra,
    }


def card_markdown(card: dict[str, Any]) -> str:
    splits = list(card["splits"])
    lines = [
        f"# Dataset card: {card['name']}",
        "",
        f"- Source: {card['source'] or '-'}",
        f"- Content hash (SHA-256): `{card['content_hash'] or '-'}`",
        f"- {card['images']} images, {card['boxes']} boxes, {len(card['classes'])} classes",
        f"- Image sizes: {', '.join(f'{k} ({v})' for k, v in card['image_sizes'].items())}"
        + (
            f" and {card['distinct_image_sizes'] - len(card['image_sizes'])} more"
            if card["distinct_image_sizes"] > 10
            else ""
        ),
        f"- Training images' typical long side: {card.get('train_image_side') or '-'} px (median; a model trained"
        " at imgsz learns objects at imgsz / this scale, and `predict --tile` keeps it)",
        "",
        "## Images / boxes per class and split",
        "",
        "| class | " + " | ".join(splits) + " | boxes |",
        "|---|" + "---|" * len(splits) + "---|",
    ]
    for name in card["classes"]:
        cells = [
            f"{card['splits'][s]['classes'][name]['images']} / {card['splits'][s]['classes'][name]['boxes']}"
            for s in splits
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {card['boxes_per_class'][name]} |")
    totals = [f"{card['splits'][s]['images']} / {card['splits'][s]['boxes']}" for s in splits]
    lines.append("| **all** | " + " | ".join(totals) + f" | {card['boxes']} |")
    backgrounds = {s: card["splits"][s]["backgrounds"] for s in splits}
    lines += ["", f"Background images (no boxes): {', '.join(f'{s} {n}' for s, n in backgrounds.items())}", ""]
    sizes = card["box_sizes"]
    lines += [
        "## Box sizes",
        "",
        "| | " + " | ".join(f"p{p}" for p in PERCENTILES) + " |",
        "|---|" + "---|" * len(PERCENTILES),
    ]
    for key, label in (
        ("width_px", "width (px)"),
        ("height_px", "height (px)"),
        ("area_fraction_of_image", "area / image area"),
        ("aspect_ratio", "long side / short side"),
    ):
        values = sizes[key]
        lines.append(
            f"| {label} | " + " | ".join(f"{values.get(f'p{p}', float('nan')):.4g}" for p in PERCENTILES) + " |"
        )
    lines += [
        "",
        f"Tiny boxes (under {TINY_AREA_PX} px², COCO small): {sizes['tiny']}; "
        f"elongated (long side at least {ELONGATED_ASPECT:g}x the short): {sizes['elongated']}",
    ]
    if tiles := card.get("tiles"):
        lines += ["", *_tiles_markdown(tiles)]
    if validation := card.get("validation"):
        lines += ["", "## Validation", "", ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in validation.items())]
    return printable("\n".join(lines) + "\n")  # a source path may hold bytes that are not UTF-8


_TILE_COLUMNS = (
    ("cut", "images cut"),
    ("whole", "used whole"),
    ("tiles", "tiles"),
    ("boxes_kept", "boxes kept"),
    ("clipped", "clipped"),
    ("masked", "masked"),
    ("ignored", "ignored in the loss"),
    ("background_tiles", "background tiles"),
    ("boxes_in_no_tile", "boxes in no tile"),
)


def _tiles_markdown(tiles: dict[str, Any]) -> list[str]:
    """The card's tiles section: the settings, and per split what the cutting made (`pipeline.data.tiles`)."""
    settings = tiles["settings"]
    ignored = settings.get("cut_boxes") == "ignore"  # else masked (a card from before the choice: masked)
    columns = [column for column in _TILE_COLUMNS if column[0] != ("masked" if ignored else "ignored")]
    lines = [
        "## Tiles",
        "",
        f"{settings['size']}-px tiles at the native resolution, overlap {settings['overlap']:g}; a box is kept in a "
        f"tile (clipped to it) when at least {settings['min_visible']:g} of its area is inside, a smaller part is "
        f"{'ignored in the loss' if ignored else 'masked'}; defect-free tiles up to {settings['backgrounds']:g} of "
        f"a split's cut tiles (seed {tiles['seed']}). "
        f"Cut from data `{(tiles.get('source_hash') or '-')[:16]}`"
        + (f" into {tiles['folder']}" if "folder" in tiles else "")
        + ".",
        "",
        "| split | " + " | ".join(title for _, title in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for split, counts in tiles["splits"].items():
        lines.append(f"| {split} | " + " | ".join(f"{counts.get(key, 0):,}" for key, _ in columns) + " |")
    return lines


def write_card(card: dict[str, Any], folder: str | Path) -> tuple[Path, Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "card.json", folder / "card.md"
    write_atomic(json_path, json.dumps(card, indent=1))
    write_atomic(md_path, card_markdown(card))
    return json_path, md_path

"""Deterministic, seeded, class-stratified splits that never put the same image in two splits.

Identical images (same bytes) form one group and move together. Groups are shuffled with the seed,
then placed rarest class first, each into the split that most lacks that class (iterative
stratification), so even a class with a handful of boxes lands in every split in proportion.
Background images fill whichever split is furthest below its share of images.
"""

from __future__ import annotations

import os
import random
from collections import Counter, defaultdict
from dataclasses import replace

from pipeline.data.annotations import Collection, Sample
from pipeline.data.dataset import SPLITS, DatasetError


def parse_ratios(text: str) -> dict[str, float]:
    """``train=0.8,val=0.2`` -> {'train': 0.8, 'val': 0.2}, checked."""
    ratios: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            ratios[name.strip()] = float(value) if sep else float("nan")
        except ValueError:
            raise DatasetError(f"split {part!r}: expected name=fraction, e.g. val=0.2") from None
    return check_ratios(ratios)


def check_ratios(ratios: dict[str, float]) -> dict[str, float]:
    for name, value in ratios.items():
        if name not in SPLITS:
            raise DatasetError(f"split {name!r}: must be one of {', '.join(SPLITS)}")
        if not 0 < value <= 1:
            raise DatasetError(f"split {name}={value}: must be a fraction in (0, 1]")
    if "train" not in ratios:
        raise DatasetError("splits: a train fraction is needed")
    if abs(sum(ratios.values()) - 1) > 1e-6:
        raise DatasetError(f"splits: fractions must add up to 1, got {sum(ratios.values()):g}")
    return ratios


def _groups(samples: list[Sample]) -> list[list[Sample]]:
    """Samples with the same bytes, each file once: a file the source listed in two splits (val is the train
    folder) gets one new split, not two copies in one."""
    by_content: dict[str, dict[str, Sample]] = defaultdict(dict)
    for sample in samples:
        by_content[sample.digest or str(sample.image)].setdefault(os.path.realpath(sample.image), sample)
    groups = [list(files.values()) for files in by_content.values()]
    return sorted(groups, key=lambda group: str(group[0].image))  # independent of input order


def split_collection(collection: Collection, ratios: dict[str, float], seed: int = 0) -> Collection:
    """The same samples with ``split`` reassigned by ``ratios`` (e.g. train 0.8, val 0.2)."""
    ratios = check_ratios(dict(ratios))
    groups = _groups(collection.samples)
    random.Random(seed).shuffle(groups)
    class_totals = collection.box_counts()
    total_images = sum(len(g) for g in groups)
    want_images = {s: r * total_images for s, r in ratios.items()}
    want_boxes = {s: {c: r * n for c, n in class_totals.items()} for s, r in ratios.items()}
    have_images: Counter[str] = Counter()
    have_boxes: dict[str, Counter[int]] = {s: Counter() for s in ratios}

    def rarest(group: list[Sample]) -> float:
        classes = {box.cls for sample in group for box in sample.boxes}
        return min((class_totals[c] for c in classes), default=float("inf"))

    order = list(ratios)
    placed: list[Sample] = []
    for group in sorted(groups, key=rarest):  # stable: the shuffle decides among equals
        counts = Counter(box.cls for sample in group for box in sample.boxes)
        if counts:
            target = min(counts, key=lambda c: class_totals[c])

            def need(split: str, target: int = target) -> tuple[float, int]:
                # Relative shortfalls, so a large split does not win every group: this class's boxes, and images.
                boxes = 1 - have_boxes[split][target] / want_boxes[split][target]
                images = 1 - have_images[split] / want_images[split]
                return (-(boxes + images), order.index(split))
        else:

            def need(split: str) -> tuple[float, int]:
                return (have_images[split] / want_images[split], order.index(split))

        split = min(ratios, key=need)
        have_images[split] += len(group)
        have_boxes[split].update(counts)
        placed += [replace(sample, split=split) for sample in group]
    return Collection(collection.names, placed, list(collection.problems))

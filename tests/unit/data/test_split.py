"""Splits are seeded, stratified by class, and never put the same image in two splits."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipeline.data.annotations import Box, Collection, Sample
from pipeline.data.dataset import DatasetError, split_rank
from pipeline.data.importer import subset
from pipeline.data.split import parse_ratios, split_collection


def collection(per_class: dict[int, int], duplicates: int = 0) -> Collection:
    """Images with one box each: ``per_class[c]`` images of class c, plus ``duplicates`` byte-identical pairs."""
    samples = []
    for cls, count in per_class.items():
        for i in range(count):
            samples.append(
                Sample(Path(f"/d/{cls}_{i}.jpg"), [Box(cls, 1, 1, 5, 5)], width=10, height=10, digest=f"{cls}-{i}")
            )
    for i in range(duplicates):
        for copy in range(2):
            samples.append(
                Sample(Path(f"/d/dup{i}_{copy}.jpg"), [Box(0, 1, 1, 5, 5)], width=10, height=10, digest=f"dup{i}")
            )
    return Collection(["common", "rare", "rarer"][: len(per_class)], samples)


def by_split(result: Collection) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for sample in result.samples:
        table.setdefault(sample.split, []).append(sample.image.name)
    return {k: sorted(v) for k, v in table.items()}


def test_the_same_seed_gives_the_same_split_and_another_seed_another() -> None:
    data = collection({0: 50, 1: 20})
    first = by_split(split_collection(data, {"train": 0.8, "val": 0.2}, seed=3))
    assert first == by_split(split_collection(data, {"train": 0.8, "val": 0.2}, seed=3))
    assert first != by_split(split_collection(data, {"train": 0.8, "val": 0.2}, seed=4))
    shuffled = Collection(data.names, list(reversed(data.samples)))
    assert first == by_split(
        split_collection(shuffled, {"train": 0.8, "val": 0.2}, seed=3)
    )  # input order is irrelevant


def test_every_class_is_split_in_proportion_even_a_rare_one() -> None:
    result = split_collection(collection({0: 200, 1: 30, 2: 5}), {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    boxes = {split: Counter() for split in ("train", "val", "test")}
    for sample in result.samples:
        boxes[sample.split].update(box.cls for box in sample.boxes)
    assert boxes["train"][0] == 120 and boxes["val"][0] == 40 and boxes["test"][0] == 40
    assert (boxes["train"][1], boxes["val"][1], boxes["test"][1]) == (18, 6, 6)
    assert all(boxes[split][2] >= 1 for split in boxes)  # 5 boxes: each split gets some
    assert len(result.samples) == 235


def test_identical_images_stay_in_one_split() -> None:
    result = split_collection(collection({0: 40, 1: 10}, duplicates=15), {"train": 0.5, "val": 0.5}, seed=1)
    where: dict[str, set[str]] = {}
    for sample in result.samples:
        where.setdefault(sample.digest, set()).add(sample.split)
    assert all(len(splits) == 1 for splits in where.values())


def test_background_images_are_spread_by_share() -> None:
    data = collection({0: 10})
    data.samples += [Sample(Path(f"/d/bg{i}.jpg"), [], width=10, height=10, digest=f"bg{i}") for i in range(20)]
    result = split_collection(data, {"train": 0.75, "val": 0.25}, seed=0)
    backgrounds = Counter(s.split for s in result.samples if not s.boxes)
    assert backgrounds == {"train": 15, "val": 5}


def test_a_subset_is_stratified_and_keeps_each_images_split() -> None:
    data = collection({0: 80, 1: 20})
    for i, sample in enumerate(data.samples):
        sample.split = "val" if i % 5 == 0 else "train"
    small = subset(data, 50, seed=0)
    assert len(small.samples) == 50
    assert Counter(b.cls for s in small.samples for b in s.boxes) == {0: 40, 1: 10}
    original = {s.image: s.split for s in data.samples}
    assert all(s.split == original[s.image] for s in small.samples)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("train=0.8,val=0.3", "must add up to 1"),
        ("train=0.8,dev=0.2", "must be one of train, val, test"),
        ("val=1.0", "a train fraction is needed"),
        ("train=x", "expected name=fraction"),
        ("train=1.5,val=-0.5", "must be a fraction in (0, 1]"),
    ],
)
def test_bad_ratios_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace("]", r"\]")):
        parse_ratios(text)
    assert parse_ratios("train=0.7, val=0.2, test=0.1") == {"train": 0.7, "val": 0.2, "test": 0.1}


def test_splits_sort_in_their_order_and_unknown_names_after() -> None:
    assert sorted(["extra", "test", "val", "train"], key=split_rank) == ["train", "val", "test", "extra"]

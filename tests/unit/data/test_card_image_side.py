"""The dataset card's typical training-image side: the median long side of the train split's images."""

from __future__ import annotations

from pathlib import Path

from pipeline.data.annotations import Collection, Sample
from pipeline.data.card import build_card, card_markdown, typical_image_side


def _sample(name: str, width: int, height: int, split: str = "train") -> Sample:
    return Sample(Path(f"{name}.png"), split=split, width=width, height=height)


def test_the_median_long_side_of_the_training_images() -> None:
    samples = [
        _sample("a", 640, 480),
        _sample("b", 300, 800),
        _sample("c", 1024, 1024),
        _sample("v", 4000, 4000, "val"),
    ]
    collection = Collection(["scratch"], samples)
    assert typical_image_side(collection) == 800  # long sides 640, 800, 1024; the val image does not count
    card = build_card(collection, "parts", "0" * 64)
    assert card["train_image_side"] == 800
    assert "- Training images' typical long side: 800 px" in card_markdown(card)


def test_without_training_images_all_images_count_and_none_is_zero() -> None:
    assert typical_image_side(Collection(["x"], [_sample("v", 200, 100, "val"), _sample("w", 300, 300, "val")])) == 250
    assert typical_image_side(Collection(["x"], [])) == 0

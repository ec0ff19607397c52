"""Per-image statistics of known images, and what the collector keeps of a run."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.drift import STATISTICS, Collector, image_statistics, threshold_of


def _textured(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grey = cv2.resize(rng.normal(110, 25, (8, 8)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    grey = np.clip(grey + rng.normal(0, 6, (size, size)), 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def test_a_flat_image_has_its_value_as_brightness_and_no_contrast_or_sharpness() -> None:
    stats = image_statistics(np.full((40, 60, 3), 100, np.uint8))
    assert stats.brightness == pytest.approx(100)
    assert stats.contrast == pytest.approx(0, abs=1e-9)
    assert stats.sharpness == pytest.approx(0, abs=1e-9)
    assert (stats.red_green, stats.blue_green) == (pytest.approx(0), pytest.approx(0))
    assert (stats.width, stats.height) == (60, 40)
    assert stats.values() == tuple(getattr(stats, name) for name in STATISTICS)


def test_a_checkerboard_is_sharp_and_a_blurred_one_is_not() -> None:
    board = (np.indices((64, 64)).sum(axis=0) // 4 % 2 * 200 + 20).astype(np.uint8)
    sharp = image_statistics(cv2.cvtColor(board, cv2.COLOR_GRAY2BGR))
    blurred = image_statistics(cv2.GaussianBlur(cv2.cvtColor(board, cv2.COLOR_GRAY2BGR), (0, 0), 2))
    assert sharp.brightness == pytest.approx(120)
    assert sharp.contrast == pytest.approx(100)
    assert sharp.sharpness > 10_000
    assert blurred.sharpness < sharp.sharpness / 50


def test_grey_and_three_channel_grey_images_measure_the_same() -> None:
    colour = _textured()
    assert image_statistics(colour[..., 0]) == image_statistics(colour)


def test_a_colour_cast_moves_the_balance_not_the_brightness() -> None:
    image = _textured().astype(np.float32)
    cast = image.copy()
    cast[..., 2] += 20  # red up
    cast[..., 0] -= 20 * 0.299 / 0.114  # blue down by as much luma
    before, after = image_statistics(image.astype(np.uint8)), image_statistics(np.clip(cast, 0, 255).astype(np.uint8))
    assert after.brightness == pytest.approx(before.brightness, abs=1)
    assert after.red_green - before.red_green > 0.15
    assert after.blue_green - before.blue_green < -0.5


def test_a_global_gain_moves_the_brightness_not_the_balance() -> None:
    image = _textured().astype(np.float32)
    image[..., 2] *= 1.2  # a warm part
    brighter = np.clip(image * 1.3, 0, 255).astype(np.uint8)
    before, after = image_statistics(image.astype(np.uint8)), image_statistics(brighter)
    assert after.brightness / before.brightness == pytest.approx(1.3, rel=0.01)
    assert after.red_green == pytest.approx(before.red_green, abs=0.01)


def test_an_image_of_another_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="shape"):
        image_statistics(np.zeros((4, 4, 2), np.uint8))


def test_thresholds_fall_back_to_default() -> None:
    thresholds = {"scratch": 0.3, "default": 0.2}
    assert threshold_of(thresholds, "scratch") == 0.3
    assert threshold_of(thresholds, "dent") == 0.2
    assert threshold_of({}, "dent") == 0.25


def test_the_collector_keeps_detections_at_or_above_their_class_threshold() -> None:
    collector = Collector({"scratch": 0.3, "default": 0.5})
    stats = image_statistics(_textured())
    collector.add(stats, [{"class": "scratch", "score": 0.3}, {"class": "dent", "score": 0.49}], name="a.png")
    collector.add(stats, [{"class": "scratch", "score": 0.29}, {"class": "dent", "score": 0.5}], name="b.png")
    collector.add(stats, [{"class": "scratch", "score": 0.9}, {"class": "scratch", "score": 0.8}])
    collector.add(stats, [])
    sample = collector.sample()
    assert sample.images == 4 and sample.names == ["a.png", "b.png", "2", "3"]
    assert sample.classes == ["scratch", "dent"]
    assert sample.flags("scratch").tolist() == [True, False, True, False]
    assert sample.flags("dent").tolist() == [False, True, False, False]
    assert sample.flags("crack").tolist() == [False] * 4
    assert sorted(sample.scores("scratch").tolist()) == [0.3, 0.8, 0.9]
    assert sample.scores("dent").tolist() == [0.5]
    assert sample.statistic("brightness").tolist() == [stats.brightness] * 4


def test_the_embedding_reservoir_is_bounded_seeded_and_uniform() -> None:
    stats = image_statistics(np.full((8, 8, 3), 50, np.uint8))

    def collect(seed: int) -> np.ndarray:
        collector = Collector({}, embedding_sample=50, seed=seed)
        for i in range(1000):
            collector.add(stats, embedding=np.full(4, i, np.float32))
        sample = collector.sample()
        assert sample.embeddings.shape == (50, 4)
        assert np.array_equal(sample.embeddings[:, 0], sample.embedding_image)  # each row is its image's
        return sample.embedding_image

    first = collect(0)
    assert np.array_equal(first, collect(0))
    assert not np.array_equal(first, collect(1))
    assert 300 < first.mean() < 700  # drawn from the whole run, not its start
    assert (first >= 500).sum() > 10


def test_a_window_keeps_the_last_images_and_their_embeddings() -> None:
    collector = Collector({"default": 0.5}, window=10, embedding_sample=5)
    for i in range(25):
        collector.add(
            image_statistics(np.full((8, 8, 3), i, np.uint8)), [{"class": "x", "score": 0.9}], np.full(3, float(i))
        )
    sample = collector.sample()
    assert len(collector) == 10 and sample.names == [str(i) for i in range(15, 25)]
    assert sample.statistic("brightness").tolist() == list(range(15, 25))
    assert sample.flags("x").all()
    assert sample.embeddings.shape == (5, 3)
    assert np.array_equal(sample.embeddings[:, 0], sample.embedding_image + 15)

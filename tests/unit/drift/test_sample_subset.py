"""Drawing folders from one predicted pool: a sample's images by index, and samples joined into one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.drift import STATISTICS, Baseline, Collector, Sample, compare, image_statistics

THRESHOLDS = {"scratch": 0.3, "default": 0.5}


def _pool(images: int = 6, dim: int = 3, embedding_sample: int = 500) -> Sample:
    """Image i: brightness i, a scratch of score 0.3 + i/100 on the even ones, a dent on every third one, an
    embedding full of i (so a row says whose it is)."""
    collector = Collector(THRESHOLDS, embedding_sample=embedding_sample)
    for i in range(images):
        found = [{"class": "scratch", "score": 0.3 + i / 100}] if i % 2 == 0 else []
        found += [{"class": "dent", "score": 0.9}] if i % 3 == 0 else []
        collector.add(image_statistics(np.full((8, 8, 3), i, np.uint8)), found, np.full(dim, i), name=f"p{i}.png")
    return collector.sample()


def test_a_subset_holds_the_images_at_the_indices_in_their_order() -> None:
    pool = _pool()
    part = pool.subset([4, 1, 3])
    assert part.images == 3 and part.names == ["p4.png", "p1.png", "p3.png"]
    assert part.statistic("brightness").tolist() == [4, 1, 3]
    assert part.classes == pool.classes and part.thresholds == THRESHOLDS
    assert part.flags("scratch").tolist() == [True, False, False]
    assert part.flags("dent").tolist() == [False, False, True]
    assert part.scores("scratch").tolist() == [pytest.approx(0.34)]
    assert part.detection_image.tolist() == [0, 2]  # renumbered: image 4 is now 0, image 3 is now 2
    assert part.embeddings[:, 0].tolist() == [4, 1, 3] and part.embedding_image.tolist() == [0, 1, 2]
    assert np.array_equal(part.statistics, pool.statistics[[4, 1, 3]])


def test_a_subset_keeps_only_the_embeddings_of_its_images() -> None:
    pool = _pool(images=40, embedding_sample=10)  # a reservoir: most images have no embedding
    kept = set(pool.embedding_image.tolist())
    indices = [i for i in range(40) if i % 2]
    part = pool.subset(indices)
    assert len(part.embeddings) == len(kept & set(indices))
    assert np.array_equal(part.embeddings[:, 0], np.array(indices)[part.embedding_image])  # each row still its image's


def test_an_image_given_twice_comes_twice_with_its_detections() -> None:
    part = _pool().subset(np.array([0, 0]))
    assert part.names == ["p0.png", "p0.png"] and part.flags("scratch").tolist() == [True, True]
    assert part.detection_image.tolist() == [0, 0, 1, 1]
    assert part.embedding_image.tolist() == [0, 1]


def test_a_mask_picks_images_too() -> None:
    pool = _pool()
    assert pool.subset(np.arange(6) >= 4).names == ["p4.png", "p5.png"]
    with pytest.raises(ValueError, match="mask"):
        pool.subset(np.array([True, False]))


def test_an_empty_subset_is_an_empty_sample_that_compares() -> None:
    pool = _pool()
    for empty in (pool.subset([]), pool.subset(np.zeros(0, np.int64))):
        assert empty.images == 0 and empty.names == [] and empty.statistics.shape == (0, len(STATISTICS))
        assert len(empty.detection_image) == len(empty.embeddings) == 0 and empty.classes == pool.classes
    report = compare(Baseline(sample=_pool(40)), pool.subset([]))
    assert not report.drifted and not report.ran  # every check skipped: too few on a side


def test_indices_outside_the_sample_are_refused() -> None:
    pool = _pool()
    for bad in ([6], [-1]):
        with pytest.raises(ValueError, match="outside"):
            pool.subset(bad)
    with pytest.raises(TypeError, match="integers"):
        pool.subset([0.5])


def test_a_subset_survives_the_baseline_file(tmp_path: Path) -> None:
    part = _pool().subset([5, 2])
    loaded = Baseline.load(Baseline(sample=part).save(tmp_path / "part.npz")).sample
    assert loaded.names == part.names and np.array_equal(loaded.detection_image, part.detection_image)
    assert np.array_equal(loaded.embeddings, part.embeddings)


def test_concat_joins_images_and_merges_classes_by_name() -> None:
    first = _pool(images=3)  # classes: scratch, dent
    collector = Collector(THRESHOLDS)
    collector.add(image_statistics(np.full((8, 8, 3), 9, np.uint8)), [{"class": "pit", "score": 0.8}], np.full(3, 9))
    collector.add(image_statistics(np.full((8, 8, 3), 8, np.uint8)), [{"class": "dent", "score": 0.7}], np.full(3, 8))
    second = collector.sample()  # classes: scratch (from the thresholds), pit, dent
    both = Sample.concat([first, second])
    assert both.images == 5 and both.names == ["p0.png", "p1.png", "p2.png", "0", "1"]
    assert both.classes == ["scratch", "dent", "pit"]
    assert both.flags("pit").tolist() == [False, False, False, True, False]
    assert both.flags("dent").tolist() == [True, False, False, False, True]
    assert both.flags("scratch").tolist() == [True, False, True, False, False]
    assert both.embeddings[:, 0].tolist() == [0, 1, 2, 9, 8] and both.embedding_image.tolist() == [0, 1, 2, 3, 4]
    assert both.statistic("brightness").tolist() == [0, 1, 2, 9, 8] and both.thresholds == THRESHOLDS


def test_concat_of_the_parts_of_a_pool_gives_the_pool_back() -> None:
    pool = _pool(images=10)
    again = Sample.concat([pool.subset(range(4)), pool.subset([]), pool.subset(range(4, 10))])
    for name in ("statistics", "detection_image", "detection_class", "detection_score", "embeddings"):
        assert np.array_equal(getattr(again, name), getattr(pool, name)), name
    assert again.names == pool.names and again.classes == pool.classes


def test_concat_refuses_embeddings_of_different_lengths_and_other_thresholds() -> None:
    with pytest.raises(ValueError, match="embeddings of different lengths"):
        Sample.concat([_pool(dim=3), _pool(dim=4)])
    other = _pool()
    other.thresholds = {"scratch": 0.6}
    with pytest.raises(ValueError, match="thresholds"):
        Sample.concat([_pool(), other])


def test_concat_of_a_sample_without_embeddings_keeps_the_others() -> None:
    bare = Sample(statistics=np.zeros((2, len(STATISTICS))), classes=[], detection_image=[], detection_class=[],
                  detection_score=[], embeddings=np.zeros((0, 0)), embedding_image=[])  # fmt: skip
    both = Sample.concat([bare, _pool(images=2, dim=5)])
    assert both.embeddings.shape == (2, 5) and both.embedding_image.tolist() == [2, 3]
    assert Sample.concat([]).images == 0

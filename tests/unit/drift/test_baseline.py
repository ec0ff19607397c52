"""The baseline file: a round trip keeps everything, the digest follows the content, damage is one line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.drift import Baseline, BaselineError, Collector, ImageStatistics
from pipeline.messages import UserError


def _baseline(seed: int = 0, images: int = 60) -> Baseline:
    rng = np.random.default_rng(seed)
    collector = Collector({"scratch": 0.3, "default": 0.25}, embedding_sample=20, seed=seed)
    for i in range(images):
        stats = ImageStatistics(*rng.normal(100, 10, 5), 640.0, 480.0)
        detections = [{"class": "scratch", "score": float(rng.uniform())}, {"class": "dent", "score": 0.9}]
        collector.add(stats, detections if i % 3 == 0 else [], rng.normal(size=16), name=f"img_{i:03d}.png")
    return Baseline.from_collector(
        collector, model_sha256="ab" * 32, data="parts.yaml", split="val", created="2026-12-06T11:00:00+00:00"
    )


def test_a_baseline_survives_a_round_trip(tmp_path: Path) -> None:
    baseline = _baseline()
    path = baseline.save(tmp_path / "drift_baseline.npz")
    loaded = Baseline.load(path)
    for name in ("statistics", "detection_image", "detection_class", "detection_score", "embeddings"):
        assert np.array_equal(getattr(loaded.sample, name), getattr(baseline.sample, name)), name
    assert loaded.sample.embeddings.shape == (20, 16)
    assert loaded.sample.classes == ["scratch", "dent"]
    assert loaded.sample.names == baseline.sample.names
    assert loaded.thresholds == {"scratch": 0.3, "default": 0.25}
    assert (loaded.model_sha256, loaded.data, loaded.split, loaded.created) == (
        "ab" * 32,
        "parts.yaml",
        "val",
        "2026-12-06T11:00:00+00:00",
    )
    assert loaded.images == 60 and loaded.metadata() == baseline.metadata()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert baseline.digest() == loaded.digest() == digest
    assert (
        Baseline(
            sample=loaded.sample, **{k: getattr(loaded, k) for k in ("model_sha256", "data", "split", "created")}
        ).digest()
        == digest
    )
    assert _baseline(seed=1).digest() != digest


def test_the_file_loads_without_pickle(tmp_path: Path) -> None:
    path = _baseline().save(tmp_path / "b.npz")
    with np.load(path, allow_pickle=False) as archive:
        assert set(archive.files) >= {"metadata", "statistics", "embeddings"}


def test_a_baseline_without_embeddings_or_detections_round_trips(tmp_path: Path) -> None:
    collector = Collector({"default": 0.5})
    collector.add(ImageStatistics(1, 2, 3, 0, 0, 8, 8))
    loaded = Baseline.load(Baseline.from_collector(collector).save(tmp_path / "b.npz"))
    assert loaded.images == 1 and loaded.sample.embeddings.shape == (0, 0) and loaded.sample.classes == []


def _one_line_error(path: Path) -> str:
    with pytest.raises(BaselineError) as caught:
        Baseline.load(path)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert "\n" not in message and str(path) in message
    return message


def test_a_damaged_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = _baseline().save(tmp_path / "drift_baseline.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert "damaged" in _one_line_error(path)
    path.write_bytes(data[:100] + bytes(200) + data[300:])  # overwritten inside an entry
    assert "damaged" in _one_line_error(path)


def test_a_foreign_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3))
    assert "not a drift baseline" in _one_line_error(path)
    path.write_text("hello")
    assert "not a drift baseline" in _one_line_error(path)
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    _one_line_error(pickled)
    assert "cannot be read" in _one_line_error(tmp_path / "missing.npz")


def test_a_baseline_of_another_version_asks_for_a_new_one(tmp_path: Path) -> None:
    path = _baseline().save(tmp_path / "b.npz")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays["metadata"][0]))
    arrays["metadata"] = np.array([json.dumps({**meta, "version": 9})])
    np.savez(path, **arrays)
    assert "version 9" in _one_line_error(path)
    arrays["metadata"] = np.array([json.dumps({**meta, "statistics": ["brightness"]})])
    np.savez(path, **arrays)
    assert "other image statistics" in _one_line_error(path)
    arrays["metadata"] = np.array([json.dumps(meta)])
    arrays["detection_class"] = arrays["detection_class"] + 5
    np.savez(path, **arrays)
    assert "damaged" in _one_line_error(path)

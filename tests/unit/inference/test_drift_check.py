"""predict's drift check (pipeline/inference/drift_check.py) on made-up images: the run's report, --watch's windows
and their records in watch.jsonl, the baseline a screen names, and the atypical images a review gets."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.checkpoints import file_sha256
from pipeline.drift import FILENAME, TRAINING, Baseline, Collector, ImageStatistics
from pipeline.inference.batching import Outcome
from pipeline.inference.drift_check import SAMPLE, DriftCheck, find_baseline
from pipeline.inference.hot_folder import FIGURES, HotFolder
from pipeline.inference.results import AppendLog, Verdict
from pipeline.inference.screen import Screen

THRESHOLDS = {"scratch": 0.5, "default": 0.25}


def outcome(rng: np.random.Generator, k: int, brightness: float = 100.0) -> Outcome:
    statistics = ImageStatistics(brightness + rng.normal(0, 5), 20 + rng.normal(0, 2), 500 + rng.normal(0, 50),
                                 0.0, 0.0, 64.0, 64.0)  # fmt: skip
    detections = [{"class": "scratch", "score": 0.9}] if rng.random() < 0.2 else []
    return Outcome(f"/line/{k}.png", (64, 64), detections, statistics=statistics, embedding=rng.normal(size=8))


def baseline(images: int = 100) -> Baseline:
    rng = np.random.default_rng(0)
    collector = Collector(THRESHOLDS)
    for k in range(images):
        found = outcome(rng, k)
        collector.add(found.statistics, found.detections, found.embedding, name=found.path)
    return Baseline.from_collector(collector, model_sha256="abc", data="data.yaml", split="val")


def test_a_run_is_compared_whole_and_kept_as_a_sample(tmp_path: Path) -> None:
    check = DriftCheck(baseline(), THRESHOLDS, "abc")
    rng = np.random.default_rng(1)
    for k in range(60):
        assert check.add(outcome(rng, k, brightness=150.0)) is None  # no window without --watch
    report = check.report()
    assert report is not None and report.images == 60 and report.check("brightness").drifted
    check.write(tmp_path, report, "/line")
    assert json.loads((tmp_path / "drift.json").read_text())["drifted"] is True
    assert Baseline.load(tmp_path / SAMPLE).images == 60
    atypical = check.atypical(report, limit=5)
    assert len(atypical) == 5 and all(why.startswith("brightness") for _, why in atypical)


def test_a_group_of_like_images_goes_to_review_before_the_most_atypical() -> None:
    """40 of 200 images from one other surface, each inside the baseline's range: the neighbours check drifts, and
    the review gets the group's images (the most atypical would be the ordinary images' tails)."""
    check = DriftCheck(baseline(300), THRESHOLDS, "abc")
    rng = np.random.default_rng(2)
    for k in range(160):
        check.add(outcome(rng, k))
    for k in range(160, 200):
        statistics = ImageStatistics(100 + rng.normal(0, 0.3), 20 + rng.normal(0, 0.1), 500 + rng.normal(0, 2),
                                     0.0, 0.0, 64.0, 64.0)  # fmt: skip
        check.add(Outcome(f"/other/{k}.png", (64, 64), [], statistics=statistics, embedding=rng.normal(size=8)))
    report = check.report()
    assert report is not None and report.drifted
    assert report.check("neighbours").drifted and report.check("neighbours").p < 0.002
    queued = check.atypical(report)
    assert len(queued) == 20 and sum(path.startswith("/other/") for path, _ in queued) >= 18
    assert all(re.search(r"; \d+ of its 10 nearest images are this run's$", why) for _, why in queued)
    quiet = DriftCheck(baseline(300), THRESHOLDS, "abc")
    for k in range(200):
        quiet.add(outcome(rng, k))
    assert quiet.atypical(quiet.report()) == []  # nothing drifted: nothing to review for drift


def test_without_a_baseline_a_run_is_only_collected(tmp_path: Path) -> None:
    check = DriftCheck(None, THRESHOLDS, "abc", window=20)
    rng = np.random.default_rng(1)
    assert all(check.add(outcome(rng, k)) is None for k in range(30))
    assert check.report() is None and check.atypical(None) == []
    check.write(tmp_path, None, "/line")
    assert not (tmp_path / "drift.json").exists() and Baseline.load(tmp_path / SAMPLE).images == 30


def test_watch_windows_report_as_they_close_and_go_to_watch_jsonl(tmp_path: Path) -> None:
    check = DriftCheck(baseline(), THRESHOLDS, "abc", window=20)
    hot = HotFolder(tmp_path / "hot", tmp_path, Verdict({"scratch": 0.5}, 0.25), ["scratch"])
    hot.figures = AppendLog(tmp_path / FIGURES)
    rng = np.random.default_rng(2)
    windows = []
    for k in range(50):  # 20 like the baseline, then 30 brighter: the second window drifts
        report = check.add(outcome(rng, k, brightness=100.0 if k < 20 else 160.0))
        if report is not None:
            windows.append(report)
            hot.drift_window(report)
    hot.figures.close()
    assert [w.images for w in windows] == [20, 20]
    assert not windows[0].check("brightness").drifted and windows[1].check("brightness").drifted
    records = [json.loads(line) for line in (tmp_path / FIGURES).read_text().splitlines()]
    assert [r["drift_window"] for r in records] == [1, 2] and [r["drifted"] for r in records] == [False, True]
    assert records[1]["line"].startswith("drift: ") and records[1]["p_holm"]["brightness"] < 0.05


def test_a_screen_names_its_baseline_beside_it(tmp_path: Path) -> None:
    saved = baseline()
    saved.save(tmp_path / "drift_baseline.npz")
    named = {"file": "drift_baseline.npz", "sha256": saved.digest(), "images": saved.images}
    screen = Screen(thresholds={"scratch": 0.5}, model="m.pt", data="d", split="val", created="2026-12-06",
                    drift_baseline=named)  # fmt: skip
    found = find_baseline(screen, str(tmp_path / "screen.json"), None, "m.pt")
    assert found.baseline is not None and found.baseline.digest() == saved.digest()

    other = Screen(**{**screen.__dict__, "drift_baseline": {**named, "sha256": "0" * 64}})
    refused = find_baseline(other, str(tmp_path / "screen.json"), None, "m.pt")
    assert refused.baseline is None and "not the baseline" in refused.note

    (tmp_path / "drift_baseline.npz").write_bytes(b"not a baseline")
    damaged = find_baseline(screen, str(tmp_path / "screen.json"), None, "m.pt")
    assert damaged.baseline is None and "drift_baseline.npz" in damaged.note and "\n" not in damaged.note

    older = Screen(**{**screen.__dict__, "drift_baseline": {}})
    assert "names no baseline" in find_baseline(older, str(tmp_path / "s.json"), None, "m.pt").note
    assert find_baseline(None, "", None, "m.pt").note.startswith("no baseline")


def test_a_checkpoint_uses_the_baseline_its_training_left_beside_it_only_for_its_own_bytes(tmp_path: Path) -> None:
    weights = tmp_path / "weights" / "best.pt"
    weights.parent.mkdir()
    weights.write_bytes(b"the trained weights")
    recorded = baseline()
    recorded.model_sha256, recorded.extra = file_sha256(weights), {"origin": TRAINING}
    recorded.save(weights.with_name(FILENAME))
    found = find_baseline(None, "", None, str(weights))
    assert found.baseline is not None and found.baseline.digest() == recorded.digest()
    assert found.where.startswith("the training's validation split") and not found.same_model

    weights.write_bytes(b"retrained in place")  # other weights at the same path
    other = find_baseline(None, "", None, str(weights))
    assert other.baseline is None and "belongs to other weights" in other.note and "\n" not in other.note


def test_a_training_baseline_is_named_in_the_line() -> None:
    check = DriftCheck(baseline(), THRESHOLDS, "abc")
    check.baseline.extra = {"origin": TRAINING}
    rng = np.random.default_rng(3)
    for k in range(40):
        check.add(outcome(rng, k))
    assert " on 40 images against the training's validation split (val)" in check.report().line()
    for k in range(40, 100):
        check.add(outcome(rng, k, brightness=160.0))
    assert "the images are not like the training's validation split (val)" in check.report().line()


def test_an_mlflow_model_s_screen_looked_up_once_is_not_asked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline.tracking import screens

    asked: list[tuple] = []
    monkeypatch.setattr(screens, "stored_screen", lambda *a: asked.append(a))
    monkeypatch.setattr(screens, "training_baseline_file", lambda *a: None)  # the run recorded none
    opened = SimpleNamespace(pinned="models:/m/1")
    nothing = find_baseline(None, "", opened, "models:/m@a", "", screens.ScreenLookup(None))
    assert asked == [] and nothing.baseline is None and "models:/m/1 has no screen stored with it" in nothing.note
    failed = find_baseline(None, "", opened, "models:/m@a", "", screens.ScreenLookup(error=ConnectionError("refused")))
    assert asked == [] and failed.note == "the baseline stored with models:/m/1 could not be read (refused)"
    find_baseline(None, "", opened, "models:/m@a")  # not given: asked here
    assert asked == [("models:/m/1", "")]

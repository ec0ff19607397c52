"""Review queues on hand-made predictions: which images are uncertain (predict --review) or wrong (evaluate
--review), in which order, and the folder written for Label Studio (tasks, table, images, crops)."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.labelstudio import LabeledBox
from pipeline.destinations import MARKER, DestinationError
from pipeline.evaluation.review import (
    ReviewError,
    ReviewPlan,
    crop_box,
    match_image,
    plan_review,
    review_image,
    write_review,
    wrong_images,
)
from pipeline.inference.engine import _kept_conf, thresholds_source
from pipeline.inference.options import PredictOptions
from pipeline.inference.results import Verdict, check_settings, recorded_settings
from pipeline.inference.review import check_queue, uncertain_images, unique_name, write_uncertain


def _det(name: str, score: float, box: tuple[float, float, float, float] = (10, 10, 30, 30)) -> dict:
    return {"class": name, "class_id": 0 if name == "scratch" else 1, "score": score, "box": list(box)}


def _record(path: str, *detections: dict, width: int = 100, height: int = 80) -> dict:
    return {"path": path, "width": width, "height": height, "detections": list(detections)}


THRESHOLDS = {"scratch": 0.4, "pit": 0.6}


def test_uncertain_images_are_those_near_a_threshold_most_uncertain_first() -> None:
    records = [
        _record("far.png", _det("scratch", 0.9), _det("pit", 0.2)),  # 0.5 and 0.4 away: sure either way
        _record("edge.png", _det("scratch", 0.5)),  # exactly the band away: in (0.5 - 0.4 is not quite 0.1)
        _record("close.png", _det("pit", 0.62), _det("pit", 0.3), _det("scratch", 0.33)),  # pit's top 0.62: 0.02
        _record("none.png"),  # no detection: no score to be unsure of
        _record("also-close.png", _det("scratch", 0.38)),  # 0.02 below: ties with close.png, by path
        _record("below.png", _det("scratch", 0.45), _det("scratch", 0.25)),  # top 0.45: 0.05
    ]
    found = uncertain_images(records, THRESHOLDS.__getitem__, 0.1)
    assert [u.path for u in found] == ["also-close.png", "close.png", "below.png", "edge.png"]
    close = found[1]
    assert [(c, s, t) for c, s, t in close.classes] == [("pit", 0.62, 0.6), ("scratch", 0.33, 0.4)]
    assert close.distance == pytest.approx(0.02)
    assert [u.path for u in uncertain_images(records, THRESHOLDS.__getitem__, 0.03)] == ["also-close.png", "close.png"]
    assert uncertain_images(records, THRESHOLDS.__getitem__, 0.0) == []


def test_image_names_are_unique_and_url_safe() -> None:
    taken: set[str] = set()
    names = [unique_name(p, taken) for p in ("/a/part 1.PNG", "/b/part 1.png", "/c/Part 1.png", "/d/..png", "/e/ü.jpg")]
    assert names == ["part_1.png", "part_1-2.png", "Part_1-3.png", "image.png", "image.jpg"]


def _image(path: Path, width: int = 100, height: int = 80, value: int = 128) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))
    return str(path)


def test_predict_review_writes_a_label_studio_queue(tmp_path: Path) -> None:
    a = _image(tmp_path / "line1" / "part.png")
    b = _image(tmp_path / "line2" / "part.png", value=40)  # the same name in another folder
    c = _image(tmp_path / "line2" / "sure.png")
    records = [
        _record(a, _det("scratch", 0.45, (10, 8, 30, 28)), _det("pit", 0.2, (50, 40, 60, 50))),
        _record(b, _det("pit", 0.59, (-2, 70, 20, 85))),  # a box past the image's edge is clipped
        _record(c, _det("scratch", 0.95)),
    ]
    queue, chosen = write_uncertain(tmp_path / "review", records, THRESHOLDS.__getitem__, 0.1, ["scratch", "pit"], "m")
    assert [u.path for u in chosen] == [b, a] and queue.images == 2 and not queue.missing
    folder = tmp_path / "review"
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["part-2.png", "part.png"]
    assert (folder / "images" / "part-2.png").read_bytes() == Path(a).read_bytes()  # b came first: b is part.png
    assert (folder / "images" / "part.png").read_bytes() == Path(b).read_bytes()
    tasks = json.loads((folder / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [
        "/data/local-files/?d=images/part.png",
        "/data/local-files/?d=images/part-2.png",
    ]
    assert "annotations" not in tasks[0]  # no ground truth to show
    (box,) = tasks[0]["predictions"][0]["result"]
    assert box["value"]["rectanglelabels"] == ["pit"] and box["score"] == 0.59
    assert box["value"]["x"] == 0 and box["value"]["y"] == pytest.approx(87.5) and box["value"]["height"] == 12.5
    # Down to the band's lower edge: the pit at 0.2 (threshold 0.6) is left out of a's boxes.
    assert [r["value"]["rectanglelabels"] for r in tasks[1]["predictions"][0]["result"]] == [["scratch"]]
    assert '<Label value="scratch"/>' in (folder / "label_config.xml").read_text()
    rows = list(csv.reader((folder / "review.csv").open()))
    assert rows == [
        ["image", "class", "score", "threshold", "distance", "file"],
        [b, "pit", "0.5900", "0.6", "0.0100", "images/part.png"],
        [a, "scratch", "0.4500", "0.4", "0.0500", "images/part-2.png"],
    ]
    assert json.loads((folder / MARKER).read_text())["kind"] == "review"
    # Again: the tool's own folder is replaced whole; a folder it did not make is refused.
    write_uncertain(folder, records[2:], THRESHOLDS.__getitem__, 0.1, ["scratch", "pit"], "m")
    assert json.loads((folder / "tasks.json").read_text()) == [] and not any((folder / "images").iterdir())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DestinationError, match="was not made by yolo-pipeline"):
        write_uncertain(tmp_path / "mine", records, THRESHOLDS.__getitem__, 0.1, ["scratch", "pit"], "m")


def test_a_review_queue_stays_out_of_the_results_and_the_source(tmp_path: Path) -> None:
    with pytest.raises(DestinationError, match="--review .*: overlaps --out"):
        check_queue(tmp_path / "out" / "review", others=[("--out", tmp_path / "out")])
    with pytest.raises(DestinationError, match="overlaps the source"):
        check_queue(tmp_path / "parts" / "review", others=[("the source", tmp_path / "parts")])
    assert check_queue(tmp_path / "review", others=[("--out", tmp_path / "out")]) == (tmp_path / "review").resolve()


def test_conf_is_lowered_to_the_lowest_threshold_and_the_review_band(caplog: pytest.LogCaptureFixture) -> None:
    names = ["scratch", "pit"]
    caplog.set_level(logging.INFO, logger="pipeline.inference")
    assert _kept_conf(PredictOptions(conf=0.25), Verdict({"scratch": 0.4}, 0.25), names) == 0.25
    assert not caplog.records
    assert _kept_conf(PredictOptions(conf=0.25), Verdict({"scratch": 0.12}, 0.25), names) == 0.12
    assert caplog.records[-1].getMessage() == (
        "predict: --conf 0.25 lowered to 0.12, the lowest threshold in use (scratch 0.12): a detection below "
        "--conf is never kept, so a threshold under it could never fail an image"
    )
    reviewed = PredictOptions(conf=0.25, review="queue", band=0.1)
    assert _kept_conf(reviewed, Verdict({"scratch": 0.4, "pit": 0.3}, 0.5), names) == 0.2
    assert "lowered to 0.2, the lowest threshold in use (pit 0.3) less the --review band 0.1" in caplog.text
    assert _kept_conf(PredictOptions(conf=0.01, review="queue"), Verdict({}, 0.25), names) == 0.01
    assert _kept_conf(PredictOptions(conf=0.25, review="queue"), Verdict({}, 0.25), names) == 0.15
    assert caplog.records[-1].getMessage() == (
        "predict: --conf 0.25 lowered to 0.15, the lowest threshold in use (default 0.25) less the --review band "
        "0.1, so the review sees the scores on both sides of each threshold"
    )


def test_the_thresholds_source_says_where_each_came_from() -> None:
    names = ["scratch", "pit"]
    stored = "calibrated on val of data.yaml (recall >= 0.95, 2026-12-01), stored with models:/defects/3"
    both = {"scratch": 0.3, "pit": 0.5}
    assert thresholds_source(stored, {"scratch": 0.4}, {**both, "scratch": 0.4}, names, 0.25) == (
        f"{stored}; --threshold scratch=0.4 overrides"
    )
    assert thresholds_source(stored, {}, both, names, 0.25) == stored
    assert (
        thresholds_source("", {"pit": 0.5}, {"pit": 0.5}, names, 0.25) == "--threshold pit=0.5; scratch at --conf 0.25"
    )
    assert thresholds_source("", {}, {}, names, 0.25) == "none: an image fails when any detection reaches --conf 0.25"


def test_the_thresholds_source_is_recorded_but_not_compared(tmp_path: Path) -> None:
    check_settings(tmp_path, {"thresholds": {"default": 0.4}, "thresholds_source": "from a.json"})
    check_settings(tmp_path, {"thresholds": {"default": 0.4}, "thresholds_source": "stored with models:/m/2"})
    assert recorded_settings(tmp_path)["thresholds_source"] == "stored with models:/m/2"


# ---- evaluate --review -----------------------------------------------------------------------------------------


def _box(label: str, x1: float, y1: float, x2: float, y2: float, score: float | None = None) -> LabeledBox:
    return LabeledBox(label, x1, y1, x2, y2, score)


def test_match_image_is_greedy_by_score_within_a_class() -> None:
    truth = [_box("scratch", 0, 0, 10, 10), _box("scratch", 20, 0, 30, 10), _box("pit", 0, 20, 10, 30)]
    detections = [
        _box("scratch", 1, 0, 11, 10, 0.6),  # IoU 0.82 with truth 0
        _box("scratch", 0, 0, 10, 10, 0.9),  # takes truth 0 first (higher score): the 0.6 one is left over
        _box("pit", 20, 0, 30, 10, 0.8),  # on a scratch: another class, no match
        _box("pit", 0, 22, 10, 32, 0.7),  # IoU 0.67 with the pit
    ]
    found = match_image(truth, detections)
    assert sorted(found.pairs) == [(0, 1), (2, 3)]
    assert found.missed == [1] and found.false_alarms == [0, 2]
    assert match_image(truth, detections, iou=0.9).pairs == [(0, 1)]
    assert match_image([], detections).false_alarms == [0, 1, 2, 3] and match_image(truth, []).missed == [0, 1, 2]


def _split() -> tuple[dict, list[dict], dict[int, str]]:
    """COCO ground truth and results of four images, as predict_split gives them (category id = index + 1)."""
    names = {0: "scratch", 1: "pit"}
    images = [{"id": i, "file_name": f"img{i}.png", "width": 100, "height": 80} for i in (1, 2, 3, 4)]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},  # found at 0.8
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [40, 30, 20, 20]},  # seen at 0.5 only: missed at 0.6
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [0, 0, 10, 10]},  # not seen at all: missed
        {"id": 4, "image_id": 3, "category_id": 2, "bbox": [70, 50, 20, 20]},  # not seen: missed
    ]
    detections = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.8},
        {"image_id": 1, "category_id": 2, "bbox": [60, 50, 10, 10], "score": 0.3},  # below pit's 0.6: nothing
        {"image_id": 2, "category_id": 2, "bbox": [40, 30, 20, 20], "score": 0.5},
        {"image_id": 2, "category_id": 1, "bbox": [5, 5, 10, 10], "score": 0.7},  # false alarm
        {"image_id": 4, "category_id": 1, "bbox": [80, 60, 30, 30], "score": 0.9},  # false alarm past the edge
    ]
    truth = {"images": images, "annotations": annotations, "categories": []}
    return truth, detections, names


def test_wrong_images_worst_first() -> None:
    truth, detections, names = _split()
    wrong = wrong_images(truth, detections, names, {"scratch": 0.4, "pit": 0.6})
    # img2 and img3 have two findings each; img2's false alarm (0.7) beats img3's none; img4 has one; img1 none.
    assert [w.path for w in wrong] == ["img2.png", "img3.png", "img4.png"]
    assert [(f.kind, f.box.label, f.score) for f in wrong[0].findings] == [
        ("missed", "pit", 0.5),
        ("false_alarm", "scratch", 0.7),
    ]
    assert [(f.kind, f.score) for f in wrong[1].findings] == [("missed", None), ("missed", None)]
    assert [b.label for b in wrong[0].shown] == ["scratch"]  # the pit at 0.5 is below its threshold
    assert wrong_images(truth, detections, names, {"scratch": 0.95, "pit": 0.95})[0].misses == 2
    assert review_image("x.png", 10, 10, [], [], {"scratch": 0.5}) is None


def test_evaluate_review_writes_rows_crops_and_tasks(tmp_path: Path) -> None:
    truth, detections, names = _split()
    for image in truth["images"]:
        image["file_name"] = _image(tmp_path / "val" / image["file_name"])
    wrong = wrong_images(truth, detections, names, {"scratch": 0.4, "pit": 0.6})
    plan = ReviewPlan((tmp_path / "review").resolve(), {"scratch": 0.4, "pit": 0.6}, "from screen.json")
    result = write_review(plan, wrong, ["scratch", "pit"], "best.pt")
    assert (result.images, result.missed, result.false_alarms, result.notes) == (3, 3, 2, [])
    folder = tmp_path / "review"
    rows = list(csv.DictReader((folder / "review.csv").open()))
    assert [(Path(r["image"]).name, r["kind"], r["class"], r["score"]) for r in rows] == [
        ("img2.png", "missed", "pit", "0.5000"),
        ("img2.png", "false_alarm", "scratch", "0.7000"),
        ("img3.png", "missed", "scratch", ""),
        ("img3.png", "missed", "pit", ""),
        ("img4.png", "false_alarm", "scratch", "0.9000"),
    ]
    assert [r["x1"] for r in rows] == ["40.0", "5.0", "0.0", "70.0", "80.0"]
    # Crops: the box and a margin of a quarter of its side (at least 8 px), within the image.
    sizes = [cv2.imread(str(folder / r["crop"])).shape[:2] for r in rows]
    assert sizes == [(36, 36), (23, 23), (18, 18), (36, 36), (28, 28)]  # (height, width): clipped at the edges
    assert crop_box(_box("pit", 40, 30, 60, 50), 100, 80) == (32, 22, 68, 58)
    assert len(list((folder / "crops").iterdir())) == 5 and len(set(r["crop"] for r in rows)) == 5
    tasks = json.loads((folder / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d=images/img{i}.png" for i in (2, 3, 4)]
    assert [t["data"]["missed"] for t in tasks] == [1, 2, 0] and [t["data"]["false_alarms"] for t in tasks] == [1, 0, 1]
    assert [len(t["annotations"][0]["result"]) for t in tasks] == [1, 2, 0]
    assert [len(t["predictions"][0]["result"]) for t in tasks] == [1, 0, 1]
    edge = tasks[2]["predictions"][0]["result"][0]["value"]  # (80, 60)-(110, 90) clipped to the 100 x 80 image
    assert (edge["x"], edge["y"], edge["width"], edge["height"]) == (80.0, 75.0, 20.0, 25.0)
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["img2.png", "img3.png", "img4.png"]


def test_evaluate_review_needs_thresholds(tmp_path: Path) -> None:
    with pytest.raises(ReviewError, match=r"^--review: no thresholds: calibrate the model first or give --screen$"):
        plan_review(tmp_path / "review", None, "best.pt")
    (tmp_path / "screen.json").write_text("{}")
    with pytest.raises(Exception, match="not a screen file"):
        plan_review(tmp_path / "review", tmp_path / "screen.json", "best.pt")
    assert not (tmp_path / "review").exists()


def test_a_box_reported_once_per_class_keeps_its_best_class_only() -> None:
    from pipeline.evaluation.review import best_class_per_box

    detections = [
        {"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.6},
        {"image_id": 1, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.35},  # the runner-up class
        {"image_id": 2, "category_id": 2, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.2},  # another image
        {"image_id": 1, "category_id": 2, "bbox": [5.0, 2.0, 3.0, 4.0], "score": 0.3},  # another box
    ]
    assert best_class_per_box(detections) == [detections[0], detections[2], detections[3]]

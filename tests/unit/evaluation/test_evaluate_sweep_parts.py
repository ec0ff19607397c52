"""COCO scoring on known boxes, and the sweep's grid parsing."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import ConfigError
from pipeline.evaluation.evaluation import coco_ground_truth, coco_scores
from pipeline.sweeps.sweep import combinations, parse_grid, split_values

NAMES = {0: "scratch", 1: "pit"}
# Two 100x200 images: three small objects (< 32x32 px) and one medium, in normalised xywh.
LABELS = [
    {"im_file": "a.png", "shape": (100, 200), "cls": np.array([[0], [1]]),
     "bboxes": np.array([[0.25, 0.5, 0.1, 0.2], [0.75, 0.5, 0.05, 0.1]])},
    {"im_file": "b.png", "shape": (100, 200), "cls": np.array([[0], [1]]),
     "bboxes": np.array([[0.5, 0.5, 0.25, 0.5], [0.1, 0.1, 0.05, 0.1]])},
]  # fmt: skip


def _as_detections(truth: dict, score: float = 0.9) -> list[dict]:
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": score}
        for a in truth["annotations"]
    ]


def test_ground_truth_in_image_pixels() -> None:
    truth = coco_ground_truth(LABELS, NAMES)
    assert [i["id"] for i in truth["images"]] == [1, 2] and truth["images"][0]["width"] == 200
    assert truth["annotations"][0]["bbox"] == [40.0, 40.0, 20.0, 20.0] and truth["annotations"][0]["category_id"] == 1
    assert truth["annotations"][2]["area"] == 50 * 50
    assert truth["categories"] == [{"id": 1, "name": "scratch"}, {"id": 2, "name": "pit"}]


def test_perfect_detections_score_one_and_sizes_without_objects_are_none() -> None:
    truth = coco_ground_truth(LABELS, NAMES)
    overall, per_class = coco_scores(truth, _as_detections(truth))
    assert overall["AP"] == pytest.approx(1.0) and overall["AP50"] == pytest.approx(1.0)
    assert overall["AP_small"] == pytest.approx(1.0) and overall["AP_medium"] == pytest.approx(1.0)
    assert overall["AP_large"] is None  # no object of that size
    assert per_class == {
        1: {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)},
        2: {"AP": pytest.approx(1.0), "AP50": pytest.approx(1.0)},
    }


def test_missed_objects_and_false_positives_lower_ap() -> None:
    truth = coco_ground_truth(LABELS, NAMES)
    found = _as_detections(truth)
    found = [d for d in found if d["category_id"] == 1]  # every pit missed
    found.append({"image_id": 1, "category_id": 1, "bbox": [150, 5, 10, 10], "score": 0.95})  # confident miss
    overall, per_class = coco_scores(truth, found)
    assert per_class[2]["AP50"] == 0.0
    assert 0.5 < per_class[1]["AP50"] < 1.0  # the best-scored detection is wrong: precision starts at 0
    assert overall["AP50"] == pytest.approx((per_class[1]["AP50"] + per_class[2]["AP50"]) / 2)
    empty, _ = coco_scores(truth, [])
    assert empty["AP50"] == 0.0


def test_grid_values_split_outside_brackets_and_combine_last_fastest() -> None:
    assert split_values("null,10") == ["null", "10"]
    assert split_values("[0,1],[2]") == ["[0,1]", "[2]"]
    grid = parse_grid(["augment.preset=none,surface", "model.freeze=null,10"])
    assert combinations(grid) == [
        ["augment.preset=none", "model.freeze=null"],
        ["augment.preset=none", "model.freeze=10"],
        ["augment.preset=surface", "model.freeze=null"],
        ["augment.preset=surface", "model.freeze=10"],
    ]


@pytest.mark.parametrize("item", ["model.freeze", "model.freeze=", "freeze=1,2", "model.freeze=1,,2"])
def test_bad_grid_items_are_one_line_errors(item: str) -> None:
    with pytest.raises(ConfigError, match="grid|section.key"):
        parse_grid([item])


def test_a_key_twice_in_the_grid_is_an_error() -> None:
    with pytest.raises(ConfigError, match="already in the grid"):
        parse_grid(["train.seed=1,2", "train.seed=3"])

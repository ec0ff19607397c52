"""Calibration's pure parts: COCO matching, operating points, the bootstrap interval, image-level rates, files."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation.matching import ClassMatches, Matches, box_iou, match_split
from pipeline.inference.screen import read_screen
from pipeline.screen.calibrate import CalibrateError, calibrate
from pipeline.screen.calibration_report import markdown, table_lines
from pipeline.screen.operating_points import (
    curve,
    for_fp_budget,
    for_recall,
    image_level,
    image_lines,
    operating_points,
    recall_interval,
    resample_counts,
)


def _truth(images: int, boxes: list[tuple[int, int, list[float], int]], classes=("a", "b")) -> dict:
    """COCO ground truth: ``boxes`` as (image id, category id, xywh, iscrowd)."""
    return {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 100, "width": 100} for i in range(1, images + 1)],
        "annotations": [
            {"id": k, "image_id": i, "category_id": c, "bbox": b, "area": b[2] * b[3], "iscrowd": crowd}
            for k, (i, c, b, crowd) in enumerate(boxes, start=1)
        ],
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(classes)],
    }


def _detection(image: int, category: int, box: list[float], score: float) -> dict:
    return {"image_id": image, "category_id": category, "bbox": box, "score": score}


def _one_class(scores, hits, images, objects_per_image, outside=None) -> Matches:
    """A one-class split from known matches: ``hits`` 1 (true), 0 (false), per detection; ``outside`` per
    detection (default: the false ones on images without objects)."""
    scores = np.asarray(scores, dtype=float)
    order = np.argsort(-scores, kind="stable")
    if outside is None:
        outside = ~np.asarray(hits, bool) & (np.asarray(objects_per_image)[np.asarray(images, dtype=int)] == 0)
    found = ClassMatches(
        scores[order],
        np.asarray(hits, bool)[order],
        np.asarray(images)[order],
        np.zeros(len(scores), bool),
        np.asarray(outside, bool)[order],
    )
    objects = np.asarray(objects_per_image).reshape(-1, 1)
    return Matches(list(range(1, len(objects) + 1)), ["scratch"], objects, {"scratch": found})


# ---- matching ------------------------------------------------------------------------------------------


def test_box_iou_is_pycocotools_iou_for_plain_and_crowd_boxes() -> None:
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(3)
    detections = np.c_[rng.uniform(0, 80, (40, 2)), rng.uniform(1, 40, (40, 2))]
    truths = np.c_[rng.uniform(0, 80, (15, 2)), rng.uniform(1, 40, (15, 2))]
    crowd = rng.random(15) < 0.3
    expected = mask_utils.iou(detections.tolist(), truths.tolist(), crowd.astype(np.uint8).tolist())
    np.testing.assert_allclose(box_iou(detections, truths, crowd), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(box_iou(detections, truths), mask_utils.iou(detections, truths, [0] * 15), atol=1e-12)


def test_matching_takes_the_best_free_object_by_score_order_and_ignores_crowds() -> None:
    truth = _truth(
        2,
        [
            (1, 1, [0, 0, 10, 10], 0),
            (1, 1, [6, 0, 10, 10], 0),  # overlaps the first
            (1, 2, [50, 50, 10, 10], 0),
            (2, 1, [20, 20, 30, 30], 1),  # a crowd region: not an object
        ],
    )
    detections = [
        _detection(1, 1, [5, 0, 10, 10], 0.9),  # IoU 0.82 with the second object, 0.33 with the first: takes the second
        _detection(1, 1, [1, 0, 10, 10], 0.8),  # the first object (IoU 0.82)
        _detection(1, 1, [6, 0, 10, 10], 0.7),  # both taken: false, though it fits the second exactly
        _detection(1, 2, [0, 0, 10, 10], 0.95),  # class b where only class a is: false
        _detection(2, 1, [22, 22, 10, 10], 0.6),  # inside the crowd region: ignored
        _detection(2, 1, [80, 80, 10, 10], 0.5),  # nowhere: false
        _detection(2, 2, [0, 0, 5, 5], 0.4),  # image 2 has no class b object: false
    ]
    matches = match_split(truth, detections)
    a, b = matches.per_class["a"], matches.per_class["b"]
    assert a.scores.tolist() == [0.9, 0.8, 0.7, 0.6, 0.5]
    assert a.hits.tolist() == [True, True, False, False, False]
    assert a.ignored.tolist() == [False, False, False, True, False]
    assert a.false.tolist() == [False, False, True, False, True]
    assert a.images.tolist() == [0, 0, 0, 1, 1]
    assert b.scores.tolist() == [0.95, 0.4] and b.hits.tolist() == [False, False] and b.images.tolist() == [0, 1]
    assert matches.objects.tolist() == [[2, 1], [0, 0]]  # the crowd region is no object


def test_matching_agrees_with_pycocotools_cocoeval_on_a_random_split() -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    boxes, detections = [], []
    for image in range(1, 21):
        for _ in range(rng.integers(0, 5)):
            xy, wh = rng.uniform(0, 60, 2), rng.uniform(5, 30, 2)
            category = int(rng.integers(1, 3))
            boxes.append((image, category, [*xy, *wh], 0))
            for _ in range(rng.integers(0, 4)):  # jittered copies: some hits, some duplicates, some misses
                jitter = [*(xy + rng.normal(0, 3, 2)), *(wh * rng.uniform(0.7, 1.3, 2))]
                detections.append(_detection(image, category, jitter, float(rng.uniform(0.001, 1))))
        for _ in range(rng.integers(0, 4)):
            box = [*rng.uniform(0, 60, 2), *rng.uniform(5, 30, 2)]
            detections.append(_detection(image, int(rng.integers(1, 3)), box, float(rng.uniform(0.001, 1))))
    truth = _truth(20, boxes)
    ours = match_split(truth, detections)

    coco = COCO()
    coco.dataset = truth
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes([dict(d) for d in detections]), "bbox")
        evaluation.params.iouThrs = np.array([0.5])
        evaluation.params.maxDets = [1000]
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluation.evaluate()
    theirs: dict[int, list[tuple[float, bool]]] = {1: [], 2: []}
    for record in evaluation.evalImgs:
        if record is not None:
            theirs[record["category_id"]] += list(zip(record["dtScores"], record["dtMatches"][0] > 0, strict=True))
    for category, name in ((1, "a"), (2, "b")):
        expected = sorted(theirs[category], key=lambda pair: -pair[0])
        found = ours.per_class[name]
        assert len(found.scores) == len(expected) > 0
        np.testing.assert_allclose(found.scores, [s for s, _ in expected])
        assert found.hits.tolist() == [hit for _, hit in expected]
        assert int(ours.objects[:, category - 1].sum()) == sum(1 for box in boxes if box[1] == category)


# ---- operating points ------------------------------------------------------------------------------------

# scores 0.9 hit, 0.8 false, 0.7 hit, 0.7 false (a tie), 0.6 hit, 0.3 false; 4 objects over 2 images (one never found)
KNOWN = _one_class([0.9, 0.8, 0.7, 0.7, 0.6, 0.3], [1, 0, 1, 0, 1, 0], [0, 0, 1, 1, 1, 0], [2, 2])


def test_the_curve_puts_equal_scores_in_together() -> None:
    found = curve(KNOWN.per_class["scratch"], 4)
    assert found.scores.tolist() == [0.9, 0.8, 0.7, 0.6, 0.3]
    assert found.hits.tolist() == [1, 1, 2, 3, 3] and found.false.tolist() == [0, 1, 2, 2, 3]
    assert found.recall.tolist() == [0.25, 0.25, 0.5, 0.75, 0.75]
    assert found.precision.tolist() == [1.0, 0.5, 0.5, 0.6, 0.5]


@pytest.mark.parametrize(
    ("target", "threshold"),
    [(0.25, 0.9), (0.4, 0.7), (0.5, 0.7), (0.75, 0.6), (0.1, 0.9)],
)
def test_the_highest_threshold_that_reaches_the_recall_target(target: float, threshold: float) -> None:
    choice = for_recall("scratch", curve(KNOWN.per_class["scratch"], 4), target)
    assert choice.threshold == threshold and choice.reached and choice.note == ""


def test_the_point_at_the_threshold_counts_ties_as_one() -> None:
    point = operating_points(KNOWN, default=0.5, samples=200).classes["scratch"]
    assert (point.threshold, point.recall, point.precision, point.fp_per_image) == (0.7, 0.5, 0.5, 1.0)
    assert point.objects == 4 and point.target == 0.5 and point.reached


def test_an_unreachable_target_takes_the_highest_threshold_with_the_most_recall_and_says_so() -> None:
    chosen = operating_points(KNOWN, default=0.9, samples=200)
    point = chosen.classes["scratch"]
    assert (point.threshold, point.recall, point.reached) == (0.6, 0.75, False)
    assert chosen.thresholds == {"scratch": 0.6}
    assert "class scratch: recall 0.9 cannot be reached (at most 0.750, at score 0.6)" in chosen.lines


def test_a_class_the_model_never_finds_cannot_be_reached_at_any_threshold() -> None:
    never = _one_class([0.5, 0.2], [0, 0], [0, 0], [3])
    chosen = operating_points(never, default=0.8, samples=50)
    assert chosen.classes["scratch"].recall == 0.0 and not chosen.classes["scratch"].reached
    assert chosen.lines[0] == "class scratch: recall 0.8 cannot be reached (no detection matches an object)"


@pytest.mark.parametrize(("budget", "threshold"), [(0.0, 0.9), (0.5, 0.8), (0.99, 0.8), (1.0, 0.6), (1.5, 0.3)])
def test_the_lowest_threshold_within_a_false_alarm_budget(budget: float, threshold: float) -> None:
    choice = for_fp_budget("scratch", curve(KNOWN.per_class["scratch"], 4), budget, images=2)
    assert choice.threshold == threshold and choice.reached


def test_a_budget_the_top_detection_already_breaks_flags_nothing() -> None:
    first_false = _one_class([0.8, 0.6], [0, 1], [0, 0], [1])
    chosen = operating_points(first_false, max_fp_per_image=0.5, samples=50)
    point = chosen.classes["scratch"]
    assert point.threshold > 0.8 and point.recall == 0.0 and point.fp_per_image == 0.0 and not point.reached
    assert point.target is None and "no threshold keeps within 0.5 false detections per image" in chosen.lines[0]


def test_a_class_without_objects_gets_no_threshold_and_a_note() -> None:
    truth = _truth(2, [(1, 1, [0, 0, 10, 10], 0)])
    detections = [_detection(1, 1, [0, 0, 10, 10], 0.9), _detection(2, 2, [0, 0, 10, 10], 0.8)]
    chosen = operating_points(match_split(truth, detections), default=0.95, split="val", samples=50)
    assert chosen.thresholds == {"a": 0.9}
    assert chosen.classes["b"].objects == 0 and "no object in val" in chosen.classes["b"].note
    assert chosen.lines[0] == "class b: no object in val; no threshold chosen (predict uses its --conf for it)"


def test_per_class_targets_override_the_default() -> None:
    truth = _truth(1, [(1, 1, [0, 0, 10, 10], 0), (1, 1, [20, 0, 10, 10], 0), (1, 2, [50, 50, 10, 10], 0)])
    detections = [
        _detection(1, 1, [0, 0, 10, 10], 0.9),
        _detection(1, 1, [20, 0, 10, 10], 0.4),
        _detection(1, 2, [50, 50, 10, 10], 0.7),
    ]
    chosen = operating_points(match_split(truth, detections), targets={"a": 1.0}, default=0.5, samples=50)
    assert chosen.thresholds == {"a": 0.4, "b": 0.7}
    assert chosen.classes["a"].target == 1.0 and chosen.classes["b"].target == 0.5


# ---- the bootstrap ----------------------------------------------------------------------------------------


def _recall_split(images: int) -> Matches:
    """One object per image, found in 4 images of 5: recall 0.8 at threshold 0.5."""
    hits = [i % 5 != 0 for i in range(images)]
    return _one_class([0.9] * images, hits, list(range(images)), [1] * images)


def test_the_bootstrap_interval_is_seeded_contains_the_estimate_and_narrows_with_more_images() -> None:
    small = [operating_points(_recall_split(20), default=0.8, seed=5).classes["scratch"] for _ in range(2)]
    assert small[0] == small[1]  # the same seed: the same numbers
    large = operating_points(_recall_split(500), default=0.8, seed=5).classes["scratch"]
    other = operating_points(_recall_split(500), default=0.8, seed=6).classes["scratch"]
    assert (other.recall_low, other.recall_high) != (large.recall_low, large.recall_high)  # the seed matters
    for point in (small[0], large):
        assert point.recall == pytest.approx(0.8) and point.recall_low < 0.8 < point.recall_high
    assert large.recall_high - large.recall_low < (small[0].recall_high - small[0].recall_low) / 2
    assert 0.55 <= small[0].recall_low and small[0].recall_high <= 1.0


def test_the_bootstrap_resamples_images_as_a_count_matrix() -> None:
    counts = resample_counts(7, 300, seed=1)
    assert counts.shape == (300, 7) and (counts.sum(axis=1) == 7).all()
    np.testing.assert_array_equal(counts, resample_counts(7, 300, seed=1))
    # every image found: recall 1 in each resample; resamples without objects do not count
    assert recall_interval(counts, np.array([1, 0, 2, 0, 0, 0, 0]), np.array([1, 0, 2, 0, 0, 0, 0])) == (1.0, 1.0)


# ---- image level -------------------------------------------------------------------------------------------


def test_image_level_flagged_and_falsely_rejected_shares() -> None:
    truth = _truth(4, [(1, 1, [0, 0, 10, 10], 0), (2, 2, [0, 0, 10, 10], 0)])
    detections = [
        _detection(1, 1, [0, 0, 10, 10], 0.9),  # image 1: its defect found, flagged
        _detection(2, 2, [0, 0, 10, 10], 0.2),  # image 2: found, but below b's threshold: missed
        _detection(3, 1, [40, 40, 10, 10], 0.95),  # image 3 is good: a false reject
        _detection(4, 2, [40, 40, 10, 10], 0.1),  # image 4 is good: below the threshold, passes
    ]
    images = image_level(match_split(truth, detections), {"a": 0.5, "b": 0.5})
    assert images == {
        "images": 4,
        "defective": 2,
        "defective_flagged": 1,
        "defective_flagged_share": 0.5,
        "good": 2,
        "good_rejected": 1,
        "good_rejected_share": 0.5,
    }
    chosen = operating_points(match_split(truth, detections), default=1.0, samples=50)
    assert chosen.thresholds == {"a": 0.9, "b": 0.2}
    assert chosen.lines[-1] == "defective images flagged: 2 of 2 (100.0%)"
    # the good images' count is said once, by the false-reject line (measured on the split's two good images)
    assert any(line.startswith("false-reject rate: 50.0% [") and line.endswith(", measured on 2 good images")
               for line in chosen.lines)  # fmt: skip
    assert image_lines(chosen.images)[-1] == "good images falsely rejected: 1 of 2 (50.0%)"


def test_a_split_without_good_images_says_the_false_reject_rate_is_not_measured() -> None:
    chosen = operating_points(KNOWN, default=0.5, samples=50)
    assert chosen.images["good"] == 0 and chosen.images["good_rejected_share"] is None
    # estimated instead, and said so, never "not measured" beside an estimate
    assert chosen.false_reject is not None and chosen.false_reject.how == "estimated"
    assert not any("not measured" in line for line in chosen.lines)
    assert image_lines(chosen.images)[-1] == (
        "good images falsely rejected: not measured (every image of the split has an object)"
    )


# ---- files and options --------------------------------------------------------------------------------------


def test_the_screen_files_hold_the_same_numbers(tmp_path: Path) -> None:
    from pipeline.inference.screen import Screen

    truth = _truth(2, [(1, 1, [0, 0, 10, 10], 0), (2, 1, [0, 0, 10, 10], 0)])
    detections = [_detection(1, 1, [0, 0, 10, 10], 0.9), _detection(2, 1, [50, 0, 10, 10], 0.4)]
    chosen = operating_points(match_split(truth, detections), default=0.5, samples=100)
    screen = Screen(
        chosen.thresholds, "m.pt", "data.yaml", "val", "2025-01-02T03:04:05+00:00", targets={"default": 0.5},
        classes=chosen.classes, images=chosen.images, bootstrap={"samples": 100, "seed": 0, "level": 0.95},
    )  # fmt: skip
    back = read_screen(screen.write(tmp_path / "screen.json"))
    assert back.thresholds == {"a": 0.9} and back.classes == chosen.classes and back.images == chosen.images
    assert json.loads((tmp_path / "screen.json").read_text())["classes"]["b"]["objects"] == 0
    assert back.describe() == "calibrated on val of data.yaml (recall >= 0.5, 2025-01-02)"
    table = table_lines(back)
    assert table[0].split()[:2] == ["class", "threshold"] and table[1].split()[:3] == ["a", "0.9", "0.5"]
    assert table[2].split() == ["b", "-", "-", "-", "-", "-", "0"]
    text = markdown(back, chosen.lines)
    assert "| a | 0.9 | 0.5 | 0.500 [" in text and "- defective images flagged: 1 of 2 (50.0%)" in text


def _data(tmp_path: Path) -> Path:
    (tmp_path / "images" / "val").mkdir(parents=True)
    data = tmp_path / "data.yaml"
    data.write_text("path: .\nval: images/val\nnames: [scratch, pit]\n", encoding="utf-8")
    return data


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"recalls": {"scrach": 0.9}}, "--recall: no class scrach; the model's classes: scratch, pit"),
        ({"target_recall": 1.5}, "--target-recall: a recall target is a number in (0, 1], got 1.5"),
        ({"recalls": {"pit": 0.0}}, "--recall pit: a recall target is a number in (0, 1], got 0.0"),
        ({"max_fp_per_image": -1.0}, "--max-fp-per-image: a number >= 0, got -1.0"),
        ({"max_fp_per_image": 0.1, "recalls": {"pit": 0.9}}, "--recall and --max-fp-per-image: choose"),
        ({"bootstrap": 1}, "--bootstrap: at least 10 resamples"),
    ],
)
def test_wrong_options_are_one_line_before_any_model_loads(tmp_path: Path, options: dict, message: str) -> None:
    with pytest.raises(CalibrateError) as caught:
        calibrate("no-such-model.pt", _data(tmp_path), **options)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)

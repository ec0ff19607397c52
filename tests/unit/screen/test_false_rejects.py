"""False rejects of good parts: measured or estimated, the budget's joint choice, the operating curve, screen.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.evaluation.matching import ClassMatches, Matches, match_split
from pipeline.inference.screen import FORMAT, Screen, read_screen, unexpected_fails
from pipeline.screen.calibration_report import markdown, plot_operating_curve
from pipeline.screen.false_rejects import (
    false_reject_rate,
    false_rejects,
    good_scores,
    good_scores_from_split,
    good_table,
    reject_evidence,
)
from pipeline.screen.operating_points import operating_points


def _split(objects: list[list[int]], detections: dict[str, list[tuple[float, bool, int, bool]]]) -> Matches:
    """A split from known matches: ``objects`` (images x classes), per class its detections as
    (score, hit, image, outside)."""
    per_class = {}
    for name, rows in detections.items():
        rows = sorted(rows, key=lambda row: -row[0])
        scores = np.array([r[0] for r in rows], dtype=float)
        hits = np.array([r[1] for r in rows], dtype=bool)
        images = np.array([r[2] for r in rows], dtype=np.int64)
        outside = np.array([r[3] for r in rows], dtype=bool)
        per_class[name] = ClassMatches(scores, hits, images, np.zeros(len(rows), bool), outside)
    table = np.array(objects, dtype=np.int64)
    return Matches(list(range(1, len(table) + 1)), list(detections), table, per_class)


# pit: 5 objects on images 0-4, found at 0.9, 0.8, 0.6, 0.4, 0.2; scratch: 2 objects on images 5-6, found at
# 0.95 and 0.9. Recall 0.8: pit at 0.4 (4 of 5), scratch at 0.9 (2 of 2).
TWO = _split(
    [[1, 0]] * 5 + [[0, 1]] * 2,
    {
        "pit": [(0.9, True, 0, False), (0.8, True, 1, False), (0.6, True, 2, False), (0.4, True, 3, False),
                (0.2, True, 4, False)],
        "scratch": [(0.95, True, 5, False), (0.9, True, 6, False)],
    },
)  # fmt: skip
# 10 good images: pit rejects rows 0, 1 and 3 at 0.4, scratch row 4 at 0.9: 4 of 10 at the recall targets
GOOD = np.zeros((10, 2))
GOOD[[0, 1, 2, 3], 0] = [0.5, 0.45, 0.3, 0.7]
GOOD[4, 1] = 0.92


def test_a_target_the_budget_allows_keeps_the_recall_thresholds() -> None:
    good = np.zeros((20, 2))
    good[0, 0] = 0.75  # one good image of 20 rejected at pit's 0.4
    chosen = operating_points(TWO, default=0.8, good=good, max_false_reject=0.05, samples=200)
    assert chosen.thresholds == chosen.recall_thresholds == {"pit": 0.4, "scratch": 0.9}
    assert chosen.false_reject is not None
    assert (chosen.false_reject.rate, chosen.false_reject.how, chosen.false_reject.images) == (0.05, "measured", 20)
    assert chosen.classes["pit"].reached and chosen.classes["pit"].false_reject == 0.05
    assert chosen.classes["scratch"].false_reject == 0.0
    assert not any("short:" in line or "over the" in line for line in chosen.lines)
    assert any(line.startswith("false-reject rate: 5.0% [") and "(budget 5%)" in line for line in chosen.lines)


def test_a_target_the_budget_does_not_allow_gives_way_to_the_budget_and_says_so() -> None:
    chosen = operating_points(TWO, default=0.8, good=GOOD, max_false_reject=0.1, samples=200)
    # pit: just above 0.45 (0.1 for 0.2 recall) beats scratch above 0.92 (0.1 for 0.5), then above 0.5 is free,
    # then above 0.7 (0.1 for 0.2) reaches the budget
    assert chosen.thresholds == {"pit": np.nextafter(0.7, 1), "scratch": 0.9}
    assert chosen.recall_thresholds == {"pit": 0.4, "scratch": 0.9}
    assert all(chosen.thresholds[n] >= t for n, t in chosen.recall_thresholds.items())  # never lowered
    assert chosen.false_reject is not None and chosen.false_reject.rate <= 0.1
    assert chosen.false_reject.rate == pytest.approx(0.1)
    pit = chosen.classes["pit"]
    assert (pit.recall, pit.reached, pit.target, pit.false_reject) == (0.4, False, 0.8, 0.0)
    line = (
        "class pit: short: recall 0.8 would reject 40% of good images; at the 10% false-reject budget it reaches 0.40"
    )
    assert line in chosen.lines and pit.note == line
    assert chosen.classes["scratch"].reached and chosen.classes["scratch"].recall == 1.0
    assert not any(line.startswith("class scratch") for line in chosen.lines)


def test_the_budget_holds_an_estimated_rate_too() -> None:
    # no good image: 4 defective images, outside false alarms pit 0.9, 0.6 (0.3 is below pit's 0.35), scratch 0.9
    split = _split(
        [[1, 0], [1, 0], [0, 1], [0, 1]],
        {
            "pit": [(0.95, True, 0, False), (0.35, True, 1, False), (0.9, False, 0, True), (0.6, False, 1, True),
                    (0.3, False, 1, True)],
            "scratch": [(0.97, True, 2, False), (0.85, True, 3, False), (0.8, False, 2, True), (0.9, False, 3, True)],
        },
    )  # fmt: skip
    chosen = operating_points(split, default=1.0, max_false_reject=0.3, samples=200)
    assert chosen.recall_thresholds == {"pit": 0.35, "scratch": 0.85}
    # pit above 0.6 and scratch above 0.9 both drop the rate alike for 0.5 recall: the first class goes; then pit
    # above 0.9 costs no recall: 1 false alarm on 4 images left
    assert chosen.thresholds == {"pit": np.nextafter(0.9, 1), "scratch": 0.85}
    assert chosen.false_reject is not None and chosen.false_reject.how == "estimated"
    assert chosen.false_reject.rate == pytest.approx(1 - math.exp(-1 / 4))
    line = (
        "class pit: short: recall 1 would reject 53% (estimated) of good images; "
        "at the 30% false-reject budget it reaches 0.50"
    )
    assert line in chosen.lines


def test_preferring_recall_keeps_the_targets_and_reports_the_rate_over_budget() -> None:
    chosen = operating_points(TWO, default=0.8, good=GOOD, max_false_reject=0.1, prefer="recall", samples=200)
    assert chosen.thresholds == {"pit": 0.4, "scratch": 0.9}
    assert chosen.false_reject is not None and chosen.false_reject.rate == pytest.approx(0.4)
    assert "the false-reject rate 40% is over the 10% budget (prefer recall)" in chosen.lines
    assert chosen.classes["pit"].reached and chosen.classes["pit"].false_reject == pytest.approx(0.3)


def test_no_budget_reports_the_rate_and_keeps_todays_thresholds() -> None:
    chosen = operating_points(TWO, default=0.8, good=GOOD, samples=200)
    assert chosen.thresholds == {"pit": 0.4, "scratch": 0.9} and chosen.max_false_reject is None
    assert chosen.false_reject is not None and chosen.false_reject.rate == pytest.approx(0.4)
    with pytest.raises(ValueError, match="prefer"):
        operating_points(TWO, prefer="speed")


def test_the_measured_rate_and_its_seeded_bootstrap_interval() -> None:
    good = np.zeros((10, 2))
    good[[0, 3, 7], 0] = [0.6, 0.9, 0.55]  # rejected at pit 0.5
    good[[1, 2], 0] = [0.2, 0.49]  # below it
    good[5, 1] = 0.3  # below scratch's 0.9
    evidence = reject_evidence(TWO, good)
    assert evidence is not None and evidence.how == "measured" and evidence.images == 10
    thresholds = {"pit": 0.5, "scratch": 0.9}
    assert false_reject_rate(evidence, thresholds) == pytest.approx(0.3)
    found = false_rejects(evidence, thresholds, samples=2000, seed=4)
    assert (found.rate, found.how, found.images) == (pytest.approx(0.3), "measured", 10)
    assert 0.0 <= found.low < 0.3 < found.high <= 0.7
    assert false_rejects(evidence, thresholds, samples=2000, seed=4) == found  # seeded
    assert found.source() == "measured on 10 good images"


def test_no_reject_among_few_images_keeps_the_exact_interval_open() -> None:
    """A bootstrap of no event collapses to [0, 0]; the exact interval of the count says what the images can tell:
    Clopper-Pearson for 0 of 58 good images, Garwood's Poisson bound for 0 false alarms on 4 defective images."""
    from scipy.stats import chi2

    none = false_rejects(reject_evidence(TWO, np.zeros((58, 2))), {"pit": 0.5, "scratch": 0.9})
    assert (none.rate, none.low) == (0.0, 0.0)
    assert none.high == pytest.approx(1 - 0.025 ** (1 / 58))  # the exact upper bound of a binomial share with k = 0
    quiet = _split([[1, 0]] * 4, {"pit": [(0.9, True, 0, False), (0.2, False, 1, True)], "scratch": []})
    estimate = false_rejects(reject_evidence(quiet), {"pit": 0.5})
    assert (estimate.how, estimate.rate, estimate.low) == ("estimated", 0.0, 0.0)
    assert estimate.high == pytest.approx(1 - math.exp(-chi2.ppf(0.975, 2) / 2 / 4))


def test_good_scores_take_each_class_highest_score_per_image() -> None:
    assert good_scores([[(0, 0.3), (0, 0.7), (1, 0.2)], [], [(1, 0.9)]], 2).tolist() == [
        [0.7, 0.2],
        [0.0, 0.0],
        [0.0, 0.9],
    ]
    with pytest.raises(ValueError, match="class index 2"):
        good_scores([[(2, 0.5)]], 2)
    # the split's own background images (no object): image 2 here; its detections are false alarms
    split = _split(
        [[1, 0], [0, 0], [0, 1]],
        {
            "pit": [(0.9, True, 0, False), (0.4, False, 1, True), (0.3, False, 1, True)],
            "scratch": [(0.6, False, 1, True)],
        },
    )
    assert good_scores_from_split(split).tolist() == [[0.4, 0.6]]
    both = good_table(split, good_scores([[(0, 0.5)]], 2))
    assert both.tolist() == [[0.4, 0.6], [0.5, 0.0]]
    with pytest.raises(ValueError, match="a \\(images x 2\\) table"):
        good_table(split, np.zeros((1, 3)))
    evidence = reject_evidence(split, both)
    assert evidence is not None and evidence.how == "measured" and evidence.images == 2


def test_the_estimate_is_one_minus_exp_of_the_summed_poisson_rates() -> None:
    # 4 defective images; false detections outside every box count, the one touching a box (0.95) does not
    split = _split(
        [[1, 0], [1, 0], [0, 1], [0, 1]],
        {
            "pit": [(0.99, True, 0, False), (0.9, False, 0, True), (0.6, False, 1, True), (0.3, False, 1, True),
                    (0.95, False, 2, False)],
            "scratch": [(0.97, True, 2, False), (0.8, False, 2, True), (0.7, False, 3, True)],
        },
    )  # fmt: skip
    evidence = reject_evidence(split)
    assert evidence is not None and evidence.how == "estimated" and evidence.images == 4
    thresholds = {"pit": 0.5, "scratch": 0.75}  # pit: 0.9 and 0.6 (2), scratch: 0.8 (1): lambda 3 / 4
    expected = 1 - math.exp(-(2 / 4 + 1 / 4))
    assert false_reject_rate(evidence, thresholds) == pytest.approx(expected)
    found = false_rejects(evidence, thresholds, samples=2000, seed=0)
    assert found.rate == pytest.approx(expected) and found.low <= expected <= found.high
    assert found.source() == "estimated from false detections outside every labelled box on 4 defective images"
    # per class alone, and in operating_points when there is no good image
    assert false_reject_rate(evidence, {"pit": 0.5}) == pytest.approx(1 - math.exp(-0.5))
    chosen = operating_points(split, targets={"pit": 0.5, "scratch": 1.0}, samples=200)
    assert chosen.false_reject is not None and chosen.false_reject.how == "estimated"
    assert chosen.thresholds == {"pit": 0.99, "scratch": 0.97}
    assert chosen.false_reject.rate == 0.0  # no outside false detection at or above 0.99 / 0.97
    # none at all: the line says 0.0% [0.0%, ...], never "-0.0%" (a bootstrap of zeros through 1 - exp is -0.0)
    none = false_rejects(evidence, {"pit": 1.0, "scratch": 1.0}, samples=200, seed=0)
    assert none.line().startswith("false-reject rate: 0.0% [0.0%, ") and "-0.0%" not in none.line()


def test_the_estimate_agrees_with_the_measured_rate_on_simulated_false_alarms() -> None:
    rng = np.random.default_rng(11)
    images, alarms = 400, {"pit": 0.2, "scratch": 0.3}  # outside false alarms per image, scores uniform
    objects = [[1, 0]] * images
    detections: dict[str, list[tuple[float, bool, int, bool]]] = {"pit": [], "scratch": []}
    for i in range(images):
        detections["pit"].append((0.95, True, i, False))  # each defective image's pit, found
        for name, rate in alarms.items():
            detections[name] += [(float(s), False, i, True) for s in rng.uniform(0, 1, rng.poisson(rate))]
    split = _split(objects, detections)
    good = good_scores(
        [[(k, float(s)) for k, rate in enumerate(alarms.values()) for s in rng.uniform(0, 1, rng.poisson(rate))]
         for _ in range(images)],
        2,
    )  # fmt: skip
    thresholds = {"pit": 0.5, "scratch": 0.5}
    truth = 1 - math.exp(-(0.2 + 0.3) * 0.5)
    estimated = false_rejects(reject_evidence(split), thresholds, samples=2000, seed=0)
    measured = false_rejects(reject_evidence(split, good), thresholds, samples=2000, seed=0)
    assert (estimated.how, measured.how) == ("estimated", "measured")
    assert estimated.low <= measured.rate <= estimated.high
    assert measured.low <= estimated.rate <= measured.high
    for found in (estimated, measured):
        assert found.rate == pytest.approx(truth, abs=0.06) and found.high - found.low < 0.15


def test_an_unreachable_target_at_the_lowest_score_is_said_and_the_budget_raises_it() -> None:
    # 3 objects over 2 images; hits at 0.5 and 0.0012 (the lowest score): recall at most 2/3
    split = _split(
        [[2], [1]],
        {"pit": [(0.5, True, 0, False), (0.0012, True, 0, False), (0.3, False, 0, False), (0.2, False, 1, False),
                 (0.01, False, 1, False), (0.005, False, 1, False)]},
    )  # fmt: skip
    line = (
        "class pit: recall 0.8 cannot be reached (at most 0.67); its threshold 0.0012 is the lowest score seen, "
        "with 2.0 false detections per image"
    )
    plain = operating_points(split, default=0.8, samples=100)
    assert plain.thresholds == {"pit": 0.0012} and line in plain.lines and plain.classes["pit"].note == line
    good = np.array([[0.004], [0.1], [0.0], [0.0]])
    held = operating_points(split, default=0.8, good=good, max_false_reject=0.0, samples=100)
    assert held.recall_thresholds == {"pit": 0.0012} and held.thresholds == {"pit": np.nextafter(0.1, 1)}
    assert line in held.lines and held.false_reject is not None and held.false_reject.rate == 0.0
    short = (
        "class pit: short: recall 0.67 would reject 50% of good images; at the 0% false-reject budget it reaches 0.33"
    )
    assert short in held.lines


def test_the_outside_flag_in_match_split() -> None:
    truth = {
        "images": [{"id": i, "file_name": f"{i}.png", "height": 100, "width": 100} for i in (1, 2, 3)],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [20, 20, 30, 30], "area": 900, "iscrowd": 1},
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    detections = [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.9},  # a hit: not outside
        {"image_id": 1, "category_id": 2, "bbox": [8, 8, 10, 10], "score": 0.8},  # false, on a's box: not outside
        {"image_id": 1, "category_id": 2, "bbox": [60, 60, 10, 10], "score": 0.7},  # false, far away: outside
        {"image_id": 1, "category_id": 1, "bbox": [10, 0, 10, 10], "score": 0.6},  # touches the edge only: outside
        {"image_id": 2, "category_id": 2, "bbox": [25, 25, 5, 5], "score": 0.5},  # on a crowd box: not outside
        {"image_id": 3, "category_id": 2, "bbox": [0, 0, 5, 5], "score": 0.4},  # an image without boxes: outside
    ]
    matches = match_split(truth, detections)
    a, b = matches.per_class["a"], matches.per_class["b"]
    assert a.scores.tolist() == [0.9, 0.6] and a.outside.tolist() == [False, True]
    assert b.scores.tolist() == [0.8, 0.7, 0.5, 0.4] and b.outside.tolist() == [False, True, False, True]
    assert b.hits.tolist() == [False] * 4


@pytest.mark.parametrize("good", [GOOD, None], ids=["measured", "estimated"])
def test_the_operating_curve_passes_through_the_chosen_point_and_is_monotone(good: np.ndarray | None) -> None:
    split = _split(
        [[1, 0]] * 5 + [[0, 1]] * 2,
        {
            "pit": [(0.9, True, 0, False), (0.8, True, 1, False), (0.6, True, 2, False), (0.4, True, 3, False), (0.2, True, 4, False),
                    (0.5, False, 1, True), (0.3, False, 5, True), (0.05, False, 6, True)],
            "scratch": [(0.95, True, 5, False), (0.9, True, 6, False), (0.7, False, 2, True), (0.93, False, 0, True)],
        },
    )  # fmt: skip
    chosen = operating_points(split, default=0.8, good=good, max_false_reject=0.2, samples=200)
    found = chosen.operating
    assert found is not None and chosen.false_reject is not None
    at = found.chosen
    assert found.shifts[at] == 0 and found.how == chosen.false_reject.how
    assert found.false_reject[at] == pytest.approx(chosen.false_reject.rate)
    assert found.escape[at] == pytest.approx(chosen.escape["rate"])
    assert (np.diff(found.false_reject) <= 1e-12).all() and (np.diff(found.escape) >= -1e-12).all()
    assert found.false_reject[0] >= found.false_reject[at] >= found.false_reject[-1]
    assert found.escape[-1] == 1.0  # every threshold near 1: nothing flagged
    for name, mine in found.classes.items():
        assert mine.false_reject[at] == pytest.approx(chosen.classes[name].false_reject)
        assert (np.diff(mine.false_reject) <= 1e-12).all() and (np.diff(mine.escape) >= -1e-12).all()
        holds = split.objects_of(name) > 0
        flagged = np.zeros(len(holds), bool)
        mine_found = split.per_class[name]
        flagged[mine_found.images[mine_found.scores >= chosen.thresholds[name]]] = True
        assert mine.escape[at] == pytest.approx(1 - flagged[holds].mean())


def test_the_operating_curve_plot_is_written(tmp_path: Path) -> None:
    chosen = operating_points(TWO, default=0.8, good=GOOD, max_false_reject=0.1, samples=100)
    screen = Screen(chosen.thresholds, "m.pt", "data.yaml", "val", "2026-01-02T00:00:00+00:00")
    assert chosen.operating is not None
    path = plot_operating_curve(chosen.operating, screen, tmp_path / "operating_curve.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _screen(chosen) -> Screen:
    from dataclasses import asdict

    return Screen(
        chosen.thresholds, "m.pt", "data.yaml", "val", "2026-01-02T03:04:05+00:00", targets={"default": 0.8},
        classes=chosen.classes, images=chosen.images, bootstrap={"samples": 200, "seed": 0, "level": 0.95},
        max_false_reject=0.1, prefer="budget", false_reject=asdict(chosen.false_reject), escape=chosen.escape,
    )  # fmt: skip


def test_screen_json_round_trips_the_new_fields_and_the_report_shows_them(tmp_path: Path) -> None:
    chosen = operating_points(TWO, default=0.8, good=GOOD, max_false_reject=0.1, samples=200)
    screen = _screen(chosen)
    back = read_screen(screen.write(tmp_path / "screen.json"))
    assert back == screen and back.classes["pit"].false_reject == 0.0
    assert back.false_reject["how"] == "measured" and back.false_reject["images"] == 10
    assert back.escape["defective"] == 7 and back.escape["rate"] == pytest.approx(3 / 7)
    rate, low, high = back.expected_false_reject()
    assert rate == pytest.approx(0.1) and low <= rate <= high
    assert back.describe() == "calibrated on val of data.yaml (recall >= 0.8, false rejects <= 10%, 2026-01-02)"
    text = markdown(back, chosen.lines)
    assert "- False-reject rate (good images rejected): 10.0% [" in text and "measured on 10 good images" in text
    assert "- Escape rate (defective images not flagged): 42.9% [" in text and "on 7 defective images" in text
    assert "operating_curve.png" in text


def test_an_old_screen_json_without_the_new_fields_still_reads(tmp_path: Path) -> None:
    old = {
        "format": FORMAT,
        "thresholds": {"pit": 0.4},
        "model": "m.pt",
        "data": "data.yaml",
        "split": "val",
        "created": "2025-06-01T00:00:00+00:00",
        "mode": "recall",
        "targets": {"default": 0.8},
        "classes": {
            "pit": {"threshold": 0.4, "target": 0.8, "reached": True, "recall": 0.8, "recall_low": 0.5,
                    "recall_high": 1.0, "precision": 0.9, "fp_per_image": 0.1, "objects": 5, "note": ""},
        },
        "images": {"images": 5},
        "bootstrap": {"samples": 1000, "seed": 0, "level": 0.95},
    }  # fmt: skip
    (tmp_path / "screen.json").write_text(json.dumps(old), encoding="utf-8")
    screen = read_screen(tmp_path / "screen.json")
    assert screen.thresholds == {"pit": 0.4} and screen.classes["pit"].false_reject is None
    assert (screen.max_false_reject, screen.prefer, screen.false_reject, screen.escape) == (None, "budget", {}, {})
    assert screen.expected_false_reject() is None
    assert screen.describe() == "calibrated on val of data.yaml (recall >= 0.8, 2025-06-01)"
    assert "False-reject rate" not in markdown(screen, [])


# ---- predict's check of a screen's fails against its calibration ---------------------------------------------


def test_a_screen_failing_far_more_than_its_calibration_expected_is_named() -> None:
    line = unexpected_fails(298, 300, (0.04, 0.02, 0.07))
    assert line == (
        "this screen failed 298 of 300 images (99%); its calibration expected 4% [2%, 7%] of good images to fail: "
        "the images differ from the calibration split, or the screen is wrong"
    )


@pytest.mark.parametrize(
    ("failed", "images", "expected"),
    [
        (12, 300, (0.04, 0.02, 0.07)),  # as calibrated
        (27, 300, (0.04, 0.02, 0.07)),  # 9%: above the interval, but not beyond chance at p < 0.001
        (29, 29, (0.04, 0.02, 0.07)),  # too few images to say
        (300, 300, None),  # a screen without a calibrated rate (hand-made, or --threshold overrides)
    ],
)
def test_no_warning_within_chance_with_few_images_or_without_a_rate(failed: int, images: int, expected) -> None:
    assert unexpected_fails(failed, images, expected) == ""


def test_the_warning_is_a_one_sided_binomial_test_against_the_interval_top() -> None:
    from scipy.stats import binomtest

    # the smallest count the test calls unexpected, found by the same test: one fewer is within chance
    first = next(k for k in range(300) if binomtest(k, 300, 0.07, alternative="greater").pvalue < 0.001)
    assert unexpected_fails(first, 300, (0.04, 0.02, 0.07)) != ""
    assert unexpected_fails(first - 1, 300, (0.04, 0.02, 0.07)) == ""
    assert 30 < first < 45

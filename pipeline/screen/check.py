"""A calibrated screen checked on a split it never saw: the recall each class's threshold reaches there.

Calibration chooses thresholds on one split (val), so its recall there is optimistic by construction.
The test is another split: the same thresholds, the same COCO matching, the recall reached with its
bootstrap interval, beside the target and the calibration split's recall. A class whose recall on the
new split falls below its target (beyond the interval) is what the screen's owner needs to know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.evaluation.matching import Matches, match_split
from pipeline.inference.options import RunOptions
from pipeline.inference.screen import ClassPoint, Screen
from pipeline.screen.calibrate import CalibrateError, run_options
from pipeline.screen.false_rejects import (
    FalseRejects,
    escape_line,
    escapes,
    false_reject_rate,
    false_rejects,
    good_scores,
    split_evidence,
)
from pipeline.screen.operating_points import Choice, image_level, image_lines, point, resample_counts
from pipeline.screen.screened_split import GoodImages, screened_split


@dataclass
class ScreenCheck:
    screen: Screen
    split: str
    classes: dict[str, ClassPoint]  # what each stored threshold reaches on `split`
    images: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    false_reject: FalseRejects | None = None  # image level, on the good images (or estimated)
    escape: dict[str, Any] = field(default_factory=dict)  # image level: defective images not flagged

    def rows(self) -> list[dict[str, Any]]:
        """Per class: target, the calibration split's recall, the recall reached here with its interval."""
        out = []
        for name, reached in self.classes.items():
            calibrated = self.screen.classes.get(name)
            out.append(
                {
                    "class": name,
                    "threshold": reached.threshold,
                    "target": calibrated.target if calibrated else None,
                    f"recall.{self.screen.split}": calibrated.recall if calibrated else None,
                    f"recall.{self.split}": reached.recall,
                    "low": reached.recall_low,
                    "high": reached.recall_high,
                    "precision": reached.precision,
                    "fp_per_image": reached.fp_per_image,
                    "objects": reached.objects,
                }
            )
        return out

    def table(self) -> list[str]:
        calibrated = f"{self.screen.split} recall"
        header = f"{'class':<16} {'threshold':>9} {'target':>6} {calibrated:>12} {self.split + ' recall [95%]':>24}"
        lines = [header]
        for row in self.rows():
            target = "-" if row["target"] is None else f"{row['target']:g}"
            before = row[f"recall.{self.screen.split}"]
            before_text = "-" if before is None else f"{before:.3f}"
            here = f"{row[f'recall.{self.split}']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"
            lines.append(f"{row['class']:<16} {row['threshold']:>9.4g} {target:>6} {before_text:>12} {here:>24}")
        return lines


def shortfalls(screen: Screen, split: str, classes: dict[str, ClassPoint]) -> list[str]:
    """One line per class the check has news of: no object on ``split``, a target not reached at calibration
    either, or a recall whose whole interval on ``split`` lies below the target."""
    lines = []
    for name, reached in classes.items():
        calibrated = screen.classes.get(name)
        target = calibrated.target if calibrated else None
        here = f"{reached.recall:.3f} [{reached.recall_low:.3f}, {reached.recall_high:.3f}]"
        if reached.objects == 0:
            lines.append(f"class {name}: no object in {split}; its recall there is not measured")
        elif calibrated is not None and not calibrated.reached:
            lines.append(
                f"class {name}: its target {target:g} was not reached on {screen.split} either "
                f"({calibrated.recall:.3f}); on {split} {here}"
            )
        elif target is not None and reached.recall_high < target:
            before = f" (reached on {screen.split}: {calibrated.recall:.3f})" if calibrated else ""
            lines.append(
                f"class {name}: recall on {split} {here} is below its target {target:g}{before}: calibrate on "
                "more images or aim higher"
            )
    return lines


def check_screen(
    model: str,
    data: str | Path,
    screen: Screen,
    *,
    split: str = "test",
    good: str | Path | None = None,
    seed: int = 0,
    bootstrap: int = 1000,
    options: RunOptions | None = None,
    **run: Any,
) -> ScreenCheck:
    """The recall, precision and false alarms ``screen``'s thresholds give on ``split`` of ``data``; and at image
    level its escape and false-reject rates (measured on ``good`` and the split's background images, else
    estimated as calibration estimates them). ``options``: how the model runs, as `calibrate`'s (keywords
    ``imgsz``, ``batch``, ``device``, ``tracking_uri``)."""
    options = run_options(options, run, "check_screen")
    if split == screen.split and str(data) == screen.data:
        raise CalibrateError(f"--check: the screen was calibrated on {split} of {data}; check it on another split")
    found, _, good_images = screened_split(model, data, options, split=split, good=good)
    matches = match_split(found.truth, found.detections)
    unknown = sorted(set(screen.thresholds) - set(matches.classes))
    if unknown:
        raise CalibrateError(f"--check: the screen has thresholds for {', '.join(unknown)}, which {data} lacks")
    counts = resample_counts(len(matches.image_ids), bootstrap, seed)
    classes: dict[str, ClassPoint] = {}
    for name, threshold in screen.thresholds.items():
        calibrated = screen.classes.get(name)
        target = calibrated.target if calibrated else None
        per_image = matches.objects_of(name)
        classes[name] = point(matches.per_class[name], per_image, Choice(threshold, True), target, counts)
    lines = shortfalls(screen, split, classes)
    images = image_level(matches, screen.thresholds)
    evidence = split_evidence(matches, _good_scores(good_images, matches))
    rejects = false_rejects(evidence, screen.thresholds, bootstrap, seed) if evidence is not None else None
    escape = escapes(matches, screen.thresholds, bootstrap, seed)
    if rejects is not None:
        lines.append(rejects.line() + _against_calibration(screen, rejects))
    if escape:
        lines.append(escape_line(escape))
    lines.extend(image_lines(images, rate_said=rejects is not None))
    lines.extend(good_images.lines() if good_images else [])
    return ScreenCheck(screen, split, classes, images, lines, false_reject=rejects, escape=escape)


def _good_scores(good_images: GoodImages | None, matches: Matches) -> np.ndarray | None:
    return good_scores(good_images.detections, len(matches.classes)) if good_images else None


def _against_calibration(screen: Screen, rejects: FalseRejects) -> str:
    """``; calibration expected 4.0% [2.0%, 7.0%]``, and whether this split's interval lies above that."""
    expected = screen.expected_false_reject()
    if expected is None:
        return ""
    rate, low, high = expected
    above = "; above what calibration expected" if rejects.low > high else ""
    return f"; calibration expected {rate:.1%} [{low:.1%}, {high:.1%}]{above}"


def measured_false_reject(
    model: str,
    data: str | Path,
    thresholds: dict[str, float],
    *,
    split: str,
    good: str | Path | None = None,
    device: str = "auto",
    tracking_uri: str = "",
) -> float:
    """The share of good images (``good`` and ``split``'s background images) that ``thresholds`` reject; never an
    estimate: CalibrateError when there is no good image to measure on."""
    options = run_options(None, {"device": device, "tracking_uri": tracking_uri}, "measured_false_reject")
    found, _, good_images = screened_split(model, data, options, split=split, good=good)
    matches = match_split(found.truth, found.detections)
    evidence = split_evidence(matches, _good_scores(good_images, matches))
    if evidence is None or evidence.how != "measured":
        raise CalibrateError(
            f"false_reject: no good image to measure it on ({split} of {data} has no background image): pass --good DIR"
        )
    return false_reject_rate(evidence, thresholds)


__all__ = ["ScreenCheck", "check_screen", "measured_false_reject", "shortfalls"]

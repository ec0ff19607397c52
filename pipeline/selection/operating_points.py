"""Per-class operating points from matched detections: the threshold, what it achieves, and how sure we are.

Pure numpy. A threshold ``t`` keeps every detection with score >= t, so detections of equal score go
in together. Two ways to choose it per class:

- a recall target: the highest ``t`` whose object-level recall reaches the target (a screen that
  misses at most 1 - target of the objects, at the fewest false alarms); when no threshold reaches it,
  the highest ``t`` that gives the most recall there is, marked not reached;
- a false-alarm budget: the lowest ``t`` whose false detections per image (over every image of the
  split) stay within it (the most recall the budget allows).

The recall's 95% interval comes from a bootstrap over images (the unit a factory samples): ``B``
resamples of the split as one (B x images) count matrix, times the per-image hit and object counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline.inference.screen import ClassPoint
from pipeline.selection.matching import ClassMatches, Matches

LEVEL = 0.95


@dataclass(frozen=True)
class Curve:
    """One class's counts at each distinct score, highest first: keeping every detection >= scores[i]."""

    scores: np.ndarray  # distinct scores, descending
    hits: np.ndarray  # cumulative true positives
    false: np.ndarray  # cumulative false alarms
    objects: int

    @property
    def recall(self) -> np.ndarray:
        return self.hits / self.objects if self.objects else np.zeros(len(self.hits))

    @property
    def precision(self) -> np.ndarray:
        kept = self.hits + self.false
        return np.divide(self.hits, kept, out=np.ones(len(kept)), where=kept > 0)


def curve(matches: ClassMatches, objects: int) -> Curve:
    hits, false = np.cumsum(matches.hits), np.cumsum(matches.false)
    last = np.flatnonzero(np.r_[matches.scores[1:] != matches.scores[:-1], True]) if len(matches.scores) else []
    return Curve(matches.scores[last], hits[last], false[last], int(objects))


@dataclass(frozen=True)
class Choice:
    threshold: float
    reached: bool
    note: str = ""


def for_recall(name: str, found: Curve, target: float) -> Choice:
    """The highest threshold whose recall >= ``target``; unreachable: the highest one giving the most recall."""
    recall = found.recall
    ok = np.flatnonzero(recall >= target - 1e-12)
    if len(ok):
        return Choice(float(found.scores[ok[0]]), True)
    if not len(recall) or recall[-1] == 0:
        note = f"class {name}: recall {target:g} cannot be reached (no detection matches an object)"
        return Choice(1.0, False, note)
    best = int(np.argmax(recall))  # the first (highest) score at which the recall stops growing
    threshold = float(found.scores[best])
    note = f"class {name}: recall {target:g} cannot be reached (at most {recall[best]:.3f}, at score {threshold:.3g})"
    return Choice(threshold, False, note)


def for_fp_budget(name: str, found: Curve, budget: float, images: int) -> Choice:
    """The lowest threshold whose false detections per image are <= ``budget``."""
    if not len(found.scores):
        return Choice(1.0, False, f"class {name}: the model made no detection of it")
    ok = np.flatnonzero(found.false / max(images, 1) <= budget + 1e-12)
    if len(ok):
        return Choice(float(found.scores[ok[-1]]), True)
    threshold = float(min(np.nextafter(found.scores[0], np.inf), 1.0))  # above every detection: flags nothing
    note = (
        f"class {name}: no threshold keeps within {budget:g} false detections per image "
        f"(its top-scored detection is false); at {threshold:.3g} it flags nothing"
    )
    return Choice(threshold, False, note)


def resample_counts(images: int, samples: int, seed: int) -> np.ndarray:
    """(samples x images): how often each image is drawn in each bootstrap resample of the split."""
    rng = np.random.default_rng(seed)
    if images == 0:
        return np.zeros((samples, 0), dtype=np.int64)
    return rng.multinomial(images, np.full(images, 1.0 / images), size=samples)


def recall_interval(
    counts: np.ndarray, hits_per_image: np.ndarray, objects_per_image: np.ndarray, level: float = LEVEL
) -> tuple[float, float]:
    """The percentile bootstrap interval of the recall (hits over objects of the resampled images)."""
    objects = counts @ objects_per_image
    hits = counts @ hits_per_image
    recall = hits[objects > 0] / objects[objects > 0]  # a resample without any object has no recall: left out
    if not len(recall):
        return 0.0, 0.0
    low, high = np.percentile(recall, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def point(
    matches: ClassMatches, objects_per_image: np.ndarray, choice: Choice, target: float | None, counts: np.ndarray
) -> ClassPoint:
    """What ``choice.threshold`` achieves for one class on the split, with the recall's bootstrap interval."""
    images = len(objects_per_image)
    kept = int(np.count_nonzero(matches.scores >= choice.threshold))  # scores are descending: the first `kept`
    hits = np.bincount(matches.images[:kept][matches.hits[:kept]], minlength=images)
    false = int(np.count_nonzero(matches.false[:kept]))
    objects = int(objects_per_image.sum())
    low, high = recall_interval(counts, hits, objects_per_image)
    true = int(hits.sum())
    return ClassPoint(
        threshold=choice.threshold,
        target=target,
        reached=choice.reached,
        recall=true / objects if objects else 0.0,
        recall_low=low,
        recall_high=high,
        precision=true / (true + false) if true + false else 1.0,
        fp_per_image=false / images if images else 0.0,
        objects=objects,
        note=choice.note,
    )


def no_objects_point(name: str, split: str) -> ClassPoint:
    """A class the split has no object of: nothing to calibrate on, so no threshold (kept out of ``thresholds``)."""
    note = f"class {name}: no object in {split}; no threshold chosen (predict uses its --conf for it)"
    return ClassPoint(1.0, None, False, 0.0, 0.0, 0.0, 0.0, 0.0, 0, note)


@dataclass
class OperatingPoints:
    thresholds: dict[str, float]  # only the classes with objects in the split
    classes: dict[str, ClassPoint]  # every class
    images: dict[str, Any]  # image level: flagged defective and falsely rejected good images
    curves: dict[str, Curve]
    lines: list[str] = field(default_factory=list)  # unreachable targets, classes without objects, image level


def image_level(matches: Matches, thresholds: dict[str, float]) -> dict[str, Any]:
    """An image is flagged when any detection reaches its class's threshold; counted over defective (>= 1 object)
    and good (no object) images."""
    flagged = np.zeros(len(matches.image_ids), dtype=bool)
    for name, threshold in thresholds.items():
        found = matches.per_class[name]
        flagged[found.images[found.scores >= threshold]] = True
    defective = matches.objects.sum(axis=1) > 0
    d, g = int(defective.sum()), int((~defective).sum())
    caught, rejected = int((flagged & defective).sum()), int((flagged & ~defective).sum())
    return {
        "images": len(flagged),
        "defective": d,
        "defective_flagged": caught,
        "defective_flagged_share": caught / d if d else None,
        "good": g,
        "good_rejected": rejected,
        "good_rejected_share": rejected / g if g else None,
    }


def image_lines(images: dict[str, Any]) -> list[str]:
    d, g = images["defective"], images["good"]
    lines = []
    if d:
        share = images["defective_flagged_share"]
        lines.append(f"defective images flagged: {images['defective_flagged']} of {d} ({share:.1%})")
    if g:
        share = images["good_rejected_share"]
        lines.append(f"good images falsely rejected: {images['good_rejected']} of {g} ({share:.1%})")
    else:
        lines.append("good images falsely rejected: not measured (every image of the split has an object)")
    return lines


def operating_points(
    matches: Matches,
    *,
    targets: dict[str, float] | None = None,
    default: float = 0.95,
    max_fp_per_image: float | None = None,
    split: str = "val",
    samples: int = 1000,
    seed: int = 0,
) -> OperatingPoints:
    """Every class's operating point: by recall target (``targets`` per class, else ``default``) or, when
    ``max_fp_per_image`` is given, by false-alarm budget."""
    targets = targets or {}
    counts = resample_counts(len(matches.image_ids), samples, seed)  # one set of resamples for every class
    chosen = OperatingPoints({}, {}, {}, {})
    for name in matches.classes:
        per_image = matches.objects_of(name)
        found = curve(matches.per_class[name], int(per_image.sum()))
        chosen.curves[name] = found
        if found.objects == 0:
            chosen.classes[name] = no_objects_point(name, split)
            chosen.lines.append(chosen.classes[name].note)
            continue
        if max_fp_per_image is not None:
            target = None
            choice = for_fp_budget(name, found, max_fp_per_image, len(per_image))
        else:
            target = targets.get(name, default)
            choice = for_recall(name, found, target)
        chosen.classes[name] = point(matches.per_class[name], per_image, choice, target, counts)
        chosen.thresholds[name] = choice.threshold
        if choice.note:
            chosen.lines.append(choice.note)
    chosen.images = image_level(matches, chosen.thresholds)
    chosen.lines.extend(image_lines(chosen.images))
    return chosen

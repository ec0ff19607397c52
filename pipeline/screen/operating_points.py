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

Recall targets alone say nothing of good parts: every choice also reports the false-reject rate (measured on
good images, else estimated; see ``false_rejects``), and with a false-reject budget the recall-target
thresholds are raised until the screen keeps within it (``operating_points``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.evaluation.matching import ClassMatches, Matches
from pipeline.inference.screen import ClassPoint
from pipeline.screen.false_rejects import (
    LEVEL,
    FalseRejects,
    OperatingCurve,
    escape_line,
    escapes,
    false_reject_rate,
    false_rejects,
    operating_curve,
    percent,
    recall_at,
    resample_counts,
    split_evidence,
    within_budget,
)

PREFER = ("budget", "recall")


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
    false_reject: FalseRejects | None = None  # at `thresholds`; None: no good image and no defective image
    max_false_reject: float | None = None  # the budget asked for (None: none)
    prefer: str = "budget"
    escape: dict[str, Any] = field(default_factory=dict)  # defective images not flagged: rate, low, high, defective
    recall_thresholds: dict[str, float] = field(default_factory=dict)  # the recall targets' (or fp budget's) own
    operating: OperatingCurve | None = None  # escapes against false rejects as the thresholds move together


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


def image_lines(images: dict[str, Any], rate_said: bool = False) -> list[str]:
    """The split's image-level counts; ``rate_said``: a false-reject line (`FalseRejects.line`, counting good images
    of a --good folder too, or estimating) already speaks of good images, so the split's own count is not repeated."""
    d, g = images["defective"], images["good"]
    lines = []
    if d:
        share = images["defective_flagged_share"]
        lines.append(f"defective images flagged: {images['defective_flagged']} of {d} ({share:.1%})")
    if rate_said:
        return lines
    if g:
        share = images["good_rejected_share"]
        lines.append(f"good images falsely rejected: {images['good_rejected']} of {g} ({share:.1%})")
    else:
        lines.append("good images falsely rejected: not measured (every image of the split has an object)")
    return lines


def floor_note(name: str, found: Curve, target: float, images: int) -> str:
    """An unreachable target whose threshold fell to the lowest score the class has: said, never silent."""
    false = float(found.false[-1]) / max(images, 1)
    return (
        f"class {name}: recall {target:g} cannot be reached (at most {found.recall[-1]:.2f}); its threshold "
        f"{found.scores[-1]:.3g} is the lowest score seen, with {false:.1f} false detections per image"
    )


def short_note(name: str, wanted: str, rate: float, how: str, budget: float, recall: float) -> str:
    """A class the budget held below its recall target; ``rate``: the false-reject rate were it at its target."""
    estimated = " (estimated)" if how == "estimated" else ""
    return (
        f"class {name}: short: recall {wanted} would reject {percent(rate)}{estimated} of good images; "
        f"at the {100 * budget:g}% false-reject budget it reaches {recall:.2f}"
    )


def operating_points(
    matches: Matches,
    *,
    targets: dict[str, float] | None = None,
    default: float = 0.95,
    max_fp_per_image: float | None = None,
    good: np.ndarray | None = None,
    max_false_reject: float | None = None,
    prefer: str = "budget",
    split: str = "val",
    samples: int = 1000,
    seed: int = 0,
) -> OperatingPoints:
    """Every class's operating point: by recall target (``targets`` per class, else ``default``) or, when
    ``max_fp_per_image`` is given, by false-alarm budget; then held within a false-reject budget.

    ``good``: a folder of good images' scores (``false_rejects.good_scores``); the split's own background
    images are added to it here. The false-reject rate is measured on those good images when there is any,
    else estimated from the false detections outside every labelled box on the defective images.

    1. Each class starts at its recall-target threshold (``for_recall``). An unreachable target that leaves it
       at the lowest score the class has gets a line saying so, with the false detections per image there.
    2. With ``prefer="budget"``, a ``max_false_reject`` and a rate above it, thresholds are raised greedily,
       one class at a time (``false_rejects.within_budget``): each class's move is to just above its next
       good-image score (estimated: next outside false detection) at or above its threshold; the move with the
       largest drop in the rate per unit of recall lost is taken (ties: the smaller recall loss), until the
       rate is within the budget or no class flags anything. No threshold ends below its start. A class whose
       recall fell below its target gets a ``short:`` line: the rate were it at its target (the others where
       chosen), and the recall it reaches.
    3. ``prefer="recall"`` (or no budget, or the false-alarm mode) keeps the thresholds and reports the rate,
       with a line when it is over the budget.

    The rates at the chosen point come with bootstrap intervals (``samples``, ``seed``), and ``operating`` holds
    the escape and false-reject rates as the thresholds move together.
    """
    if prefer not in PREFER:
        raise ValueError(f"prefer: one of {', '.join(PREFER)}, got {prefer!r}")
    if max_false_reject is not None and not 0 <= max_false_reject <= 1:
        raise ValueError(f"max_false_reject: a share in [0, 1], got {max_false_reject!r}")
    targets = targets or {}
    counts = resample_counts(len(matches.image_ids), samples, seed)  # one set of resamples for every class
    chosen = OperatingPoints({}, {}, {}, {}, max_false_reject=max_false_reject, prefer=prefer)
    start: dict[str, tuple[Choice, float | None]] = {}
    for name in matches.classes:
        per_image = matches.objects_of(name)
        found = curve(matches.per_class[name], int(per_image.sum()))
        chosen.curves[name] = found
        if found.objects == 0:
            continue
        if max_fp_per_image is not None:
            target = None
            choice = for_fp_budget(name, found, max_fp_per_image, len(per_image))
        else:
            target = targets.get(name, default)
            choice = for_recall(name, found, target)
            if not choice.reached and len(found.scores) and choice.threshold == found.scores[-1]:
                choice = Choice(choice.threshold, False, floor_note(name, found, target, len(per_image)))
        start[name] = (choice, target)
        chosen.thresholds[name] = choice.threshold
    chosen.recall_thresholds = dict(chosen.thresholds)

    evidence = split_evidence(matches, good)
    budget = max_false_reject if evidence is not None and max_fp_per_image is None and prefer == "budget" else None
    if budget is not None:
        chosen.thresholds = within_budget(evidence, chosen.thresholds, chosen.curves, budget)

    for name in matches.classes:
        if name not in start:
            chosen.classes[name] = no_objects_point(name, split)
            chosen.lines.append(chosen.classes[name].note)
            continue
        (choice, target), found = start[name], chosen.curves[name]
        threshold, notes = chosen.thresholds[name], [choice.note] if choice.note else []
        if threshold != choice.threshold:  # raised by the budget
            recall, wanted = recall_at(found, threshold), recall_at(found, choice.threshold)
            goal = target if choice.reached and target is not None else wanted
            if recall < goal - 1e-12:
                label = f"{goal:g}" if choice.reached and target is not None else f"{wanted:.2f}"
                at_target = false_reject_rate(evidence, {**chosen.thresholds, name: choice.threshold})
                notes.append(short_note(name, label, at_target, evidence.how, budget, recall))
            reached = choice.reached and (target is None or recall >= target - 1e-12)
            choice = Choice(threshold, reached, "; ".join(notes))
        found_point = point(matches.per_class[name], matches.objects_of(name), choice, target, counts)
        alone = false_reject_rate(evidence, {name: threshold}) if evidence is not None else None
        chosen.classes[name] = replace(found_point, false_reject=alone)
        chosen.lines.extend(notes)

    if evidence is not None:
        chosen.false_reject = false_rejects(evidence, chosen.thresholds, samples, seed)
        line = chosen.false_reject.line()
        chosen.lines.append(line if max_false_reject is None else f"{line} (budget {100 * max_false_reject:g}%)")
        if max_false_reject is not None and chosen.false_reject.rate > max_false_reject + 1e-12:
            why = "the false-alarm budget chose the thresholds" if max_fp_per_image is not None else "prefer recall"
            if budget is not None:
                why = "no class has a false alarm left to drop below 1.0"
            chosen.lines.append(
                f"the false-reject rate {percent(chosen.false_reject.rate)} is over the "
                f"{100 * max_false_reject:g}% budget ({why})"
            )
        if chosen.thresholds:
            chosen.operating = operating_curve(matches, chosen.thresholds, evidence)
    chosen.escape = escapes(matches, chosen.thresholds, samples, seed)
    if chosen.escape and chosen.thresholds:
        chosen.lines.append(escape_line(chosen.escape))
    chosen.images = image_level(matches, chosen.thresholds)
    chosen.lines.extend(image_lines(chosen.images, rate_said=chosen.false_reject is not None))
    return chosen

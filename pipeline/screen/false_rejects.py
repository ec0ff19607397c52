"""How often a screen rejects good parts, how often it lets defective ones through, and thresholds within a
false-reject budget (numpy only).

A good image is defect-free; the screen rejects it when any class's highest score on it reaches that class's
threshold. Good images are a (good images x classes) table of those highest scores (0.0: no detection of the
class), from the split's own background images and from a folder of good images predicted separately.

The false-reject rate is **measured** when there is at least one good image: the share of good images with a
score at or above its class's threshold. Without any good image it is **estimated** from the split's defective
images: per class c, lambda_c = (false detections of c outside every labelled box with score >= t_c) / (defective
images), taken as a Poisson rate of false alarms per image, and rate = 1 - exp(-sum_c lambda_c). It is an
estimate: the area a good image offers differs from a defective image's area outside its boxes, and false
alarms that cluster on some images reject fewer images than a Poisson count says (the estimate then runs high).

Both come with a 95% interval: the percentile bootstrap over images (good images, or the defective images the
estimate counts on, drawn with ``resample_counts`` as the recall intervals are), widened to the exact interval of
the count (Clopper-Pearson, Garwood) where that is wider, since a bootstrap of few or no events collapses.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.evaluation.matching import Matches

if TYPE_CHECKING:
    from pipeline.screen.operating_points import Curve

LEVEL = 0.95
SHIFTS = np.linspace(-12.0, 12.0, 201)  # the operating curve's logit shifts; 0 (the chosen point) is on the grid
CLAMP = 1e-6  # scores are clamped to [CLAMP, 1 - CLAMP] before their logit


def resample_counts(images: int, samples: int, seed: int) -> np.ndarray:
    """(samples x images): how often each image is drawn in each bootstrap resample of the split."""
    rng = np.random.default_rng(seed)
    if images == 0:
        return np.zeros((samples, 0), dtype=np.int64)
    return rng.multinomial(images, np.full(images, 1.0 / images), size=samples)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    if not len(values):
        return 0.0, 0.0
    low, high = np.percentile(values, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


def percent(share: float) -> str:
    """``97%``; one decimal where rounding would say 0% or 100% of a share that is neither."""
    text = f"{share:.0%}"
    return f"{share:.1%}" if text in ("0%", "100%") and 0 < share < 1 else text


# ---- good images -------------------------------------------------------------------------------------------


def good_scores_from_split(matches: Matches) -> np.ndarray:
    """(background images x classes): each class's highest score on each image of the split without any object
    (every detection there is a false alarm); 0.0 where the class has no detection on it."""
    background = np.flatnonzero(matches.objects.sum(axis=1) == 0)
    row_of = np.full(len(matches.image_ids), -1, dtype=np.int64)
    row_of[background] = np.arange(len(background))
    good = np.zeros((len(background), len(matches.classes)))
    for k, name in enumerate(matches.classes):
        found = matches.per_class[name]
        rows = row_of[found.images]
        on_good = rows >= 0
        np.maximum.at(good[:, k], rows[on_good], found.scores[on_good])
    return good


def good_scores(detections_per_image: list[list[tuple[int, float]]], n_classes: int) -> np.ndarray:
    """(images x classes) from a folder of good images predicted separately: per image its detections as
    (class index, score); each class's highest score on each image, 0.0 where it has none."""
    good = np.zeros((len(detections_per_image), n_classes))
    for row, detections in enumerate(detections_per_image):
        for k, score in detections:
            if not 0 <= int(k) < n_classes:
                raise ValueError(f"good image {row}: class index {k} is not one of the {n_classes} classes")
            good[row, int(k)] = max(good[row, int(k)], float(score))
    return good


def good_table(matches: Matches, folder: np.ndarray | None = None) -> np.ndarray:
    """The split's background images' scores with ``folder``'s (``good_scores``) below them."""
    own = good_scores_from_split(matches)
    if folder is None:
        return own
    folder = np.asarray(folder, dtype=float)
    if not folder.size:
        return own
    if folder.ndim != 2 or folder.shape[1] != own.shape[1]:
        raise ValueError(f"good images: a (images x {own.shape[1]}) table, got shape {folder.shape}")
    return np.vstack([own, folder])


# ---- the rate ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FalseRejects:
    """The share of good images a screen rejects, with its 95% interval (`false_rejects`)."""

    rate: float
    low: float
    high: float
    how: str  # "measured" (on `images` good images) or "estimated" (from the false detections outside every
    # labelled box on `images` defective images)
    images: int

    def source(self) -> str:
        if self.how == "measured":
            return f"measured on {self.images} good images"
        return f"estimated from false detections outside every labelled box on {self.images} defective images"

    def line(self) -> str:
        return f"false-reject rate: {self.rate:.1%} [{self.low:.1%}, {self.high:.1%}], {self.source()}"


@dataclass(frozen=True)
class RejectEvidence:
    """What a false-reject rate is computed from, as events per class: a good image's highest score of the class
    (measured), or one false detection of the class outside every labelled box on a defective image (estimated).
    ``units`` names each event's image (0 .. images - 1 among the good, or among the defective, images)."""

    how: str  # "measured" or "estimated"
    images: int  # good images, or defective images
    scores: dict[str, np.ndarray]  # per class, ascending
    units: dict[str, np.ndarray]  # per class, aligned with `scores`

    def above(self, name: str, threshold: float) -> int:
        """The index of the class's first event at or above ``threshold`` (its events from there on flag)."""
        return int(np.searchsorted(self.scores[name], threshold, "left"))

    def per_image(self, thresholds: dict[str, float]) -> np.ndarray:
        """Per image (good, or defective): how many events reach their class's threshold."""
        counts = np.zeros(self.images, dtype=np.int64)
        for name, threshold in thresholds.items():
            if name in self.scores:
                counts += np.bincount(self.units[name][self.above(name, threshold) :], minlength=self.images)
        return counts

    def rate_of(self, per_image: np.ndarray) -> float:
        if self.how == "measured":
            return float(np.count_nonzero(per_image)) / self.images
        return poisson_rate(float(per_image.sum()), self.images)


def poisson_rate(false_alarms: float, images: int) -> float:
    """1 - exp(-lambda), lambda = false alarms per image: the chance of at least one on an image."""
    return float(-np.expm1(-false_alarms / images)) if images else 0.0


def reject_evidence(matches: Matches, good: np.ndarray | None = None) -> RejectEvidence | None:
    """Measured on ``good`` (``good_table``) when it has a row; else estimated from the false detections
    outside every labelled box on the split's defective images; None when there is no defective image either."""
    if good is not None and len(good):
        good = np.asarray(good, dtype=float)
        if good.ndim != 2 or good.shape[1] != len(matches.classes):
            raise ValueError(f"good images: a (images x {len(matches.classes)}) table, got shape {good.shape}")
        scores, units = {}, {}
        for k, name in enumerate(matches.classes):
            rows = np.flatnonzero(good[:, k] > 0)  # 0.0: no detection of the class on that image
            order = np.argsort(good[rows, k], kind="stable")
            scores[name], units[name] = good[rows[order], k], rows[order]
        return RejectEvidence("measured", len(good), scores, units)
    defective = matches.objects.sum(axis=1) > 0
    if not defective.any():
        return None
    index = np.cumsum(defective) - 1  # an image's place among the defective ones
    scores, units = {}, {}
    for name in matches.classes:
        found = matches.per_class[name]
        keep = found.false & found.outside & defective[found.images]
        scores[name], units[name] = found.scores[keep][::-1], index[found.images[keep]][::-1]  # ascending
    return RejectEvidence("estimated", int(defective.sum()), scores, units)


def false_reject_rate(evidence: RejectEvidence, thresholds: dict[str, float]) -> float:
    """The false-reject rate at ``thresholds`` (classes without a threshold never flag), cheaply: it is called
    inside the budget search."""
    if evidence.how == "estimated":
        total = sum(
            len(evidence.scores[n]) - evidence.above(n, t) for n, t in thresholds.items() if n in evidence.scores
        )
        return poisson_rate(float(total), evidence.images)
    return evidence.rate_of(evidence.per_image(thresholds))


def false_rejects(
    evidence: RejectEvidence, thresholds: dict[str, float], samples: int = 1000, seed: int = 0, level: float = LEVEL
) -> FalseRejects:
    """The rate at ``thresholds`` with its interval: the percentile bootstrap over ``samples`` resamples of the good
    images (measured) or of the defective images (estimated: the resampled false alarms per image, through
    1 - exp), widened to the exact interval of the count where that is wider: Clopper-Pearson for the rejected
    good images, Garwood's for the Poisson count of false alarms. A bootstrap of a handful of events (or none)
    collapses to a point; the exact interval says what so few images can tell."""
    per_image = evidence.per_image(thresholds)
    counts = resample_counts(evidence.images, samples, seed)
    if evidence.how == "measured":
        resampled = counts @ (per_image > 0) / evidence.images
    else:
        resampled = -np.expm1(-(counts @ per_image) / evidence.images)
    low, high = percentile_interval(resampled, level)
    exact_low, exact_high = _exact_interval(evidence.how, per_image, evidence.images, level)
    return FalseRejects(  # + 0.0: a bootstrap of no false alarm is -expm1(-0.0) = -0.0, printed "-0.0%"
        evidence.rate_of(per_image) + 0.0,
        min(low, exact_low) + 0.0,
        max(high, exact_high),
        evidence.how,
        evidence.images,
    )


def _exact_interval(how: str, per_image: np.ndarray, images: int, level: float) -> tuple[float, float]:
    """Clopper-Pearson's interval of the share of good images rejected (measured), or Garwood's interval of the
    Poisson rate of false alarms per image carried through 1 - exp (estimated)."""
    from scipy.stats import binomtest, chi2

    if images == 0:
        return 0.0, 0.0
    if how == "measured":
        found = binomtest(int(np.count_nonzero(per_image)), images).proportion_ci(level, method="exact")
        return float(found.low), float(found.high)
    events, tail = int(per_image.sum()), (1 - level) / 2
    low = chi2.ppf(tail, 2 * events) / 2 if events else 0.0
    high = chi2.ppf(1 - tail, 2 * events + 2) / 2
    return float(-np.expm1(-low / images)) + 0.0, float(-np.expm1(-high / images))  # + 0.0: never "-0.0%"


# ---- escapes -----------------------------------------------------------------------------------------------


def escape_line(escape: dict[str, Any]) -> str:
    """`escapes`' result as calibrate and its check print it."""
    return (
        f"escape rate (defective images not flagged): {escape['rate']:.1%} [{escape['low']:.1%}, "
        f"{escape['high']:.1%}] on {escape['defective']} defective images"
    )


def split_evidence(matches: Matches, folder: np.ndarray | None = None) -> RejectEvidence | None:
    """What a split's false-reject rate comes from: its background images and a --good folder's scores
    (`good_scores`), measured when there is any, else the estimate (`reject_evidence`)."""
    return reject_evidence(matches, good_table(matches, folder))


def flagged_images(matches: Matches, thresholds: dict[str, float]) -> np.ndarray:
    """Per image of the split: some detection (hit or not) reaches its class's threshold."""
    flagged = np.zeros(len(matches.image_ids), dtype=bool)
    for name, threshold in thresholds.items():
        found = matches.per_class[name]
        flagged[found.images[found.scores >= threshold]] = True
    return flagged


def escapes(
    matches: Matches, thresholds: dict[str, float], samples: int = 1000, seed: int = 0, level: float = LEVEL
) -> dict[str, float | int]:
    """The share of defective images no detection flags, with its bootstrap interval over the defective images
    (widened to Clopper-Pearson's where wider, as `false_rejects`); empty when the split has none."""
    defective = matches.objects.sum(axis=1) > 0
    escaped = ~flagged_images(matches, thresholds)[defective]
    if not len(escaped):
        return {}
    resampled = resample_counts(len(escaped), samples, seed) @ escaped / len(escaped)
    low, high = percentile_interval(resampled, level)
    exact_low, exact_high = _exact_interval("measured", escaped, len(escaped), level)
    return {"rate": float(escaped.mean()), "low": min(low, exact_low), "high": max(high, exact_high),
            "defective": len(escaped)}  # fmt: skip


# ---- the budget --------------------------------------------------------------------------------------------


def recalls_at(found: Curve, thresholds: np.ndarray) -> np.ndarray:
    """The class's recall keeping every detection >= each of ``thresholds``."""
    kept = np.searchsorted(-found.scores, -np.asarray(thresholds, dtype=float), "right")  # scores are descending
    if not len(found.scores):
        return np.zeros(kept.shape)
    return np.where(kept > 0, found.recall[np.maximum(kept - 1, 0)], 0.0)


def recall_at(found: Curve, threshold: float) -> float:
    return float(recalls_at(found, np.array([threshold]))[0])


@dataclass(frozen=True)
class Moves:
    """One class's candidate moves in the order it can take them: move j lifts its threshold to just above its
    j-th distinct event score at or above the start, removing the events before ``ends[j]``."""

    first: int  # the class's first event at or above its start threshold
    ends: np.ndarray
    thresholds: np.ndarray
    losses: np.ndarray  # recall lost by each move, the moves before it taken

    def events(self, j: int) -> slice:
        """The class's events move j removes."""
        return slice(int(self.ends[j - 1]) if j else self.first, int(self.ends[j]))


def moves(evidence: RejectEvidence, name: str, threshold: float, found: Curve) -> Moves:
    scores = evidence.scores[name]
    first = evidence.above(name, threshold)
    rest = scores[first:]
    rest = rest[rest < 1.0]  # a threshold stays within [0, 1]: events scored 1.0 cannot be passed
    groups, starts = np.unique(rest, return_index=True)  # every event at one score goes together
    ends = first + np.r_[starts[1:], len(rest)].astype(np.int64) if len(rest) else np.zeros(0, dtype=np.int64)
    lifted = np.nextafter(groups, 2.0)
    recall = recalls_at(found, lifted)
    losses = np.r_[recall_at(found, threshold), recall[:-1]] - recall if len(recall) else recall
    return Moves(first, ends, lifted, losses)


def within_budget(
    evidence: RejectEvidence, start: dict[str, float], curves: dict[str, Curve], budget: float
) -> dict[str, float]:
    """Thresholds raised from ``start`` until the false-reject rate is within ``budget``, greedily.

    Each class's candidate move is to just above its next event score at or above its threshold (a good image's
    score, or an outside false detection when estimated): that removes at least one of its rejections. The
    move taken is the one with the largest drop in the false-reject rate per unit of recall lost on the class's
    curve (a move losing no recall comes first; ties: the smaller recall loss, then the class order). It stops
    when the rate is within the budget or no class has an event left to remove. A threshold is never lowered,
    and never raised above 1 (events scored 1.0 stay).
    """
    thresholds = dict(start)
    names = [n for n in thresholds if n in evidence.scores]
    planned = {n: moves(evidence, n, thresholds[n], curves[n]) for n in names}
    taken = {n: 0 for n in names}  # moves taken per class
    if evidence.how == "estimated":
        _estimated_moves(evidence, planned, taken, thresholds, budget)
    else:
        _measured_moves(evidence, planned, taken, thresholds, budget)
    for name in names:
        if taken[name]:
            thresholds[name] = float(planned[name].thresholds[taken[name] - 1])
    return thresholds


def _efficiency(drop: float, loss: float) -> float:
    return drop / loss if loss > 1e-12 else (math.inf if drop > 0 else 0.0)


def _estimated_moves(
    evidence: RejectEvidence,
    planned: dict[str, Moves],
    taken: dict[str, int],
    thresholds: dict[str, float],
    budget: float,
) -> None:
    """The greedy for the Poisson estimate. A move removing k false alarms drops the rate by exp(-T/D) *
    (exp(k/D) - 1) at T false alarms over D images: the factor all moves share aside, each move's efficiency is
    fixed, so the best next move is the best head of the classes' queues (a heap)."""
    images = evidence.images
    total = sum(len(evidence.scores[n]) - evidence.above(n, t) for n, t in thresholds.items() if n in planned)
    order = {n: k for k, n in enumerate(planned)}

    def head(name: str) -> tuple[float, float, int, str] | None:
        plan, j = planned[name], taken[name]
        if j == len(plan.ends):
            return None
        events = plan.events(j)
        removed = events.stop - events.start
        loss = float(plan.losses[j])
        return (-_efficiency(math.expm1(removed / images), loss), loss, order[name], name)

    heap = [entry for entry in map(head, planned) if entry is not None]
    heapq.heapify(heap)
    while heap and poisson_rate(total, images) > budget + 1e-12:
        *_, name = heapq.heappop(heap)
        plan, j = planned[name], taken[name]
        events = plan.events(j)
        total -= events.stop - events.start
        taken[name] = j + 1
        entry = head(name)
        if entry is not None:
            heapq.heappush(heap, entry)


def _measured_moves(
    evidence: RejectEvidence,
    planned: dict[str, Moves],
    taken: dict[str, int],
    thresholds: dict[str, float],
    budget: float,
) -> None:
    """The greedy on good images: a move's drop is the good images it leaves with no score at or above its class's
    threshold, which other classes' moves change; every head is weighed again at each step."""
    per_image = evidence.per_image(thresholds)
    rejected = int(np.count_nonzero(per_image))
    while rejected / evidence.images > budget + 1e-12:
        best: tuple[float, float] | None = None
        chosen = ""
        for name, plan in planned.items():
            j = taken[name]
            if j == len(plan.ends):
                continue
            units = evidence.units[name][plan.events(j)]
            if len(units) == 1:  # the usual case, without numpy's overhead
                cleared = int(per_image[units[0]] == 1)
            else:
                distinct, times = np.unique(units, return_counts=True)
                cleared = int(np.count_nonzero(per_image[distinct] == times))
            loss = float(plan.losses[j])
            key = (_efficiency(cleared / evidence.images, loss), -loss)
            if best is None or key > best:
                best, chosen = key, name
        if best is None:
            break
        plan, j = planned[chosen], taken[chosen]
        units = evidence.units[chosen][plan.events(j)]
        np.subtract.at(per_image, units, 1)
        rejected = int(np.count_nonzero(per_image))
        taken[chosen] = j + 1


# ---- the operating curve -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class OperatingCurve:
    """Escape and false-reject rates as thresholds move together: t(d) = sigmoid(logit(t) + d) for each shift d
    (``SHIFTS``), through the chosen thresholds at d = 0. ``classes``: the same per class, only its threshold
    moving, escapes over the images holding its objects and false rejects from it alone."""

    shifts: np.ndarray
    escape: np.ndarray
    false_reject: np.ndarray
    how: str  # "measured" or "estimated", as the false-reject rate
    classes: dict[str, OperatingCurve] = field(default_factory=dict)

    @property
    def chosen(self) -> int:
        """The index of d = 0: the chosen point."""
        return int(np.flatnonzero(self.shifts == 0)[0])


def shifted(threshold: float, shifts: np.ndarray) -> np.ndarray:
    """sigmoid(logit(t) + d), t clamped to [CLAMP, 1 - CLAMP]; exactly t at d = 0, and non-decreasing in d."""
    z = np.log(np.clip(threshold, CLAMP, 1 - CLAMP)) - np.log1p(-np.clip(threshold, CLAMP, 1 - CLAMP))
    moved = 1.0 / (1.0 + np.exp(-(z + shifts)))
    # the clamp may put a threshold near 0 or 1 on the wrong side of t: keep the sequence monotone through t
    return np.where(
        shifts < 0, np.minimum(moved, threshold), np.where(shifts > 0, np.maximum(moved, threshold), threshold)
    )


def _flags_until(moving: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Per score: how many of the first shifts still flag it (``moving`` non-decreasing, 0 for a 0.0 score)."""
    return np.where(scores > 0, np.searchsorted(moving, scores, "right"), 0)


def _highest(matches: Matches, names: list[str], images: np.ndarray) -> np.ndarray:
    """(images x names): each class's highest score on each of ``images`` (indices into the split)."""
    row_of = np.full(len(matches.image_ids), -1, dtype=np.int64)
    row_of[images] = np.arange(len(images))
    top = np.zeros((len(images), len(names)))
    for k, name in enumerate(names):
        found = matches.per_class[name]
        rows = row_of[found.images]
        np.maximum.at(top[:, k], rows[rows >= 0], found.scores[rows >= 0])
    return top


def _false_reject_curve(evidence: RejectEvidence, moving: dict[str, np.ndarray], points: int) -> np.ndarray:
    if evidence.how == "estimated":
        total = sum(len(evidence.scores[n]) - np.searchsorted(evidence.scores[n], t, "left") for n, t in moving.items())
        return -np.expm1(-np.asarray(total, dtype=float) / evidence.images) * np.ones(points)
    until = np.zeros(evidence.images, dtype=np.int64)  # per good image: rejected at the shifts before this index
    for name, thresholds in moving.items():
        np.maximum.at(until, evidence.units[name], _flags_until(thresholds, evidence.scores[name]))
    return (until[None, :] > np.arange(points)[:, None]).mean(axis=1)


def operating_curve(
    matches: Matches, thresholds: dict[str, float], evidence: RejectEvidence, shifts: np.ndarray = SHIFTS
) -> OperatingCurve:
    """The overall and per-class escape and false-reject rates along the shifts (see ``OperatingCurve``)."""
    names = [n for n in thresholds if n in evidence.scores]
    moving = {n: shifted(thresholds[n], shifts) for n in names}
    defective = np.flatnonzero(matches.objects.sum(axis=1) > 0)
    top = _highest(matches, names, defective)
    until = np.zeros((len(defective), len(names)), dtype=np.int64)  # per image and class: flagged before this shift
    for k, name in enumerate(names):
        until[:, k] = _flags_until(moving[name], top[:, k])
    steps = np.arange(len(shifts))
    per_class = {}
    for k, name in enumerate(names):
        holds = matches.objects_of(name)[defective] > 0
        escape = (until[holds, k][None, :] <= steps[:, None]).mean(axis=1) if holds.any() else np.zeros(len(shifts))
        alone = _false_reject_curve(evidence, {name: moving[name]}, len(shifts))
        per_class[name] = OperatingCurve(shifts, escape, alone, evidence.how)
    overall = until.max(axis=1, initial=0)
    escape = (overall[None, :] <= steps[:, None]).mean(axis=1) if len(defective) else np.zeros(len(shifts))
    return OperatingCurve(shifts, escape, _false_reject_curve(evidence, moving, len(shifts)), evidence.how, per_class)

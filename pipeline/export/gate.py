"""The INT8 accuracy gate: the quantized network screens a labelled split beside the FP32 one, at the screen's
thresholds, and is refused when a class's recall (or the mAP50) falls by more than is allowed.

Both networks run as bundles through `predict` itself (`pipeline.screen.screened_split`: the same decoding,
letterbox, runtime and NMS the line runs), at a score floor low enough for mAP50; each class's recall is read at
its threshold from the same detections, matched to the labels as calibration matches them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pipeline.evaluation.evaluation import coco_scores
from pipeline.evaluation.matching import match_split
from pipeline.inference.options import RunOptions
from pipeline.screen.screened_split import screened_split

SCORE_FLOOR = 0.001  # the detections kept for mAP50, as a validation keeps them


@dataclass(frozen=True)
class Measured:
    """One network on the split: mAP50, and each class's recall at its threshold (None: no object of it)."""

    map50: float
    recall: dict[str, float | None]
    objects: dict[str, int]
    images: int
    seen: Any = field(default=None, compare=False, repr=False)  # `pipeline.drift.Sample`: what the network saw


@dataclass(frozen=True)
class GateResult:
    split: str
    data: str
    fp32: Measured
    int8: Measured
    max_recall_drop: float
    max_map50_drop: float
    failures: list[str] = field(default_factory=list)  # one line per failing class (and mAP50)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        found = asdict(replace(self, fp32=replace(self.fp32, seen=None), int8=replace(self.int8, seen=None)))
        for side in ("fp32", "int8"):
            del found[side]["seen"]  # a sample of arrays, kept apart (the bundle's baseline): not a gate's figure
        return {**found, "passed": self.passed}

    def table(self) -> list[str]:
        """Per class, FP32 and INT8 recall side by side; then mAP50."""
        rows = [f"{'class':<20} {'objects':>7} {'FP32 recall':>11} {'INT8 recall':>11} {'drop':>6}"]
        for name, before in self.fp32.recall.items():
            after = self.int8.recall.get(name)
            if before is None or after is None:
                rows.append(f"{name:<20} {0:>7} {'-':>11} {'-':>11} {'-':>6}")
                continue
            rows.append(
                f"{name:<20} {self.fp32.objects[name]:>7} {before:>11.3f} {after:>11.3f} {before - after:>+6.3f}"
            )
        drop = self.fp32.map50 - self.int8.map50
        rows.append(f"{'mAP50':<20} {'':>7} {self.fp32.map50:>11.3f} {self.int8.map50:>11.3f} {drop:>+6.3f}")
        return rows


def measure(bundle: Path, data: str | Path, split: str, thresholds: dict[str, float], options: RunOptions) -> Measured:
    """``bundle`` screening ``split`` of ``data``: its mAP50, and each class's recall at its threshold."""
    run = options.model_copy(update={"conf": SCORE_FLOOR})
    found, _, _ = screened_split(str(bundle), data, run, split=split)
    overall, _ = coco_scores(found.truth, found.detections)
    matches = match_split(found.truth, found.detections)
    default = thresholds.get("default", options.conf)
    recall: dict[str, float | None] = {}
    objects: dict[str, int] = {}
    for name in matches.classes:
        total = int(matches.objects_of(name).sum())
        objects[name] = total
        found_class = matches.per_class[name]
        hits = int((found_class.hits & (found_class.scores >= thresholds.get(name, default))).sum())
        recall[name] = hits / total if total else None
    return Measured(float(overall.get("AP50") or 0.0), recall, objects, len(matches.image_ids), found.seen)


def gate(
    fp32: Measured, int8: Measured, *, split: str, data: str, max_recall_drop: float, max_map50_drop: float
) -> GateResult:
    """The INT8 network against the FP32 one: a line for each class whose recall falls by more than
    ``max_recall_drop``, and for mAP50 falling by more than ``max_map50_drop``."""
    failures = []
    for name, before in fp32.recall.items():
        after = int8.recall.get(name)
        if before is None or after is None:
            continue  # no object of the class in the split: nothing measured, said in the table
        if before - after > max_recall_drop + 1e-9:
            failures.append(
                f"class {name}: INT8 recall {after:.3f} against FP32 {before:.3f} on {split} "
                f"(a drop of {before - after:.3f}, more than --max-recall-drop {max_recall_drop:g})"
            )
    if fp32.map50 - int8.map50 > max_map50_drop + 1e-9:
        failures.append(
            f"mAP50: INT8 {int8.map50:.3f} against FP32 {fp32.map50:.3f} on {split} "
            f"(a drop of {fp32.map50 - int8.map50:.3f}, more than {max_map50_drop:g})"
        )
    return GateResult(split, data, fp32, int8, max_recall_drop, max_map50_drop, failures)

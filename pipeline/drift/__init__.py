"""Drift: is the line still showing the model what it was calibrated on?

``calibrate`` records a ``Baseline`` (the calibration split's image statistics, detections at the screen's
thresholds, embeddings), and so does the end of a training (its validation split at predict's default conf); every
screening run collects the same of its own images and ``compare`` tests one against the other. Needs numpy, OpenCV
and scipy; no torch, no MLflow.

    collector = Collector(screen.thresholds)
    collector.add(image_statistics(image), detections, embedding, name=path.name)  # per image
    report = compare(Baseline.load(path), collector.sample())
    print(report.line()); Path("drift.json").write_text(report.to_json())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipeline.drift.baseline import (
    CALIBRATION,
    DIGEST_TAG,
    FILENAME,
    ORIGINS,
    TRAINING,
    Baseline,
    BaselineError,
    rethresholded,
)
from pipeline.drift.report import Check, DriftReport
from pipeline.drift.statistics import STATISTICS, Collector, ImageStatistics, Sample, image_statistics, threshold_of

if TYPE_CHECKING:
    from pipeline.drift.checks import Atypical, compare, holm, mmd_test, rank_atypical

_CHECKS = frozenset({"Atypical", "compare", "holm", "mmd_test", "rank_atypical"})


def __getattr__(name: str) -> Any:
    """The tests (`pipeline.drift.checks`: scipy.stats, a second to import) load when first used, so that a command
    that only collects statistics, and the CLI's start, do not wait for them."""
    if name in _CHECKS:
        from pipeline.drift import checks

        return getattr(checks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CALIBRATION",
    "DIGEST_TAG",
    "FILENAME",
    "ORIGINS",
    "STATISTICS",
    "TRAINING",
    "Atypical",
    "Baseline",
    "BaselineError",
    "Check",
    "Collector",
    "DriftReport",
    "ImageStatistics",
    "Sample",
    "compare",
    "holm",
    "image_statistics",
    "mmd_test",
    "rank_atypical",
    "rethresholded",
    "threshold_of",
]

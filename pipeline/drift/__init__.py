"""Drift: is the line still showing the model what it was calibrated on?

``calibrate`` records a ``Baseline`` (the calibration split's image statistics, detections at the screen's
thresholds, embeddings); every screening run collects the same of its own images and ``compare`` tests one
against the other. Needs numpy, OpenCV and scipy, and statsmodels for Holm's correction; no torch, no MLflow.

    collector = Collector(screen.thresholds)
    collector.add(image_statistics(image), detections, embedding, name=path.name)  # per image
    report = compare(Baseline.load(path), collector.sample())
    print(report.line()); Path("drift.json").write_text(report.to_json())
"""

from __future__ import annotations

from pipeline.drift.baseline import FILENAME, Baseline, BaselineError
from pipeline.drift.checks import Atypical, DriftError, compare, holm, mmd_test, rank_atypical
from pipeline.drift.report import Check, DriftReport
from pipeline.drift.statistics import STATISTICS, Collector, ImageStatistics, Sample, image_statistics, threshold_of

__all__ = [
    "FILENAME",
    "STATISTICS",
    "Atypical",
    "Baseline",
    "BaselineError",
    "Check",
    "Collector",
    "DriftError",
    "DriftReport",
    "ImageStatistics",
    "Sample",
    "compare",
    "holm",
    "image_statistics",
    "mmd_test",
    "rank_atypical",
    "threshold_of",
]

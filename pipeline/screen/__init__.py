"""A defect screen: per-class score thresholds chosen on one split, checked on another.

- `calibrate`: the thresholds chosen for recall targets (or a false-alarm budget) within a false-reject budget,
  written as screen.json (with `calibration_report`: the table and the plots people read);
- `check`: a calibrated screen's recall on a split it never saw;
- `operating_points`, `false_rejects`: the pure numpy behind both (per-class thresholds and their recall;
  good parts rejected, defective ones let through);
- `screened_split`: a labelled split (and good images) predicted the way predict screens parts.

Two pieces live below this package, beside the code that applies them at predict time: screen.json's format
(`pipeline.inference.screen`) and the thresholds stored with a model (`pipeline.tracking.screens`, the MLflow
tags). Predict reads both, and calibrating runs predict, so here they would make inference and this package
import each other.
"""

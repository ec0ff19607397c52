"""Turn what ultralytics measures after an epoch into flat, search-friendly MLflow metric names.

``metrics/mAP50-95(B)`` becomes ``mAP50_95``, ``val/box_loss`` becomes ``val.box_loss``, ``lr/pg0``
becomes ``lr.pg0``, and per-class AP is ``AP50.<class>`` / ``AP50_95.<class>``: names that MLflow's
search (``metrics.AP50.scratch > 0.5``) and UI take without quoting. A class name keeps its ``-``
(``AP50.pin-hole``; MLflow allows it, search quotes it: ``metrics.`AP50.pin-hole` > 0.5``); what MLflow
forbids, or what would split the key, becomes ``_``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# The validation's summary of every epoch under these names: what a sweep's scheduler or search can follow.
SUMMARY_METRICS = (
    "mAP50_95",
    "mAP50",
    "precision",
    "recall",
    "fitness",
    "val.box_loss",
    "val.cls_loss",
    "val.dfl_loss",
)


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("_.-")


def metric_key(name: str) -> str:
    """An ultralytics metric name as an MLflow-search-safe key (``mAP50-95`` is ``mAP50_95``)."""
    name = name.removeprefix("metrics/").replace("(B)", "")
    return _safe(name.replace("/", ".").replace("-", "_"))


def class_key(name: str) -> str:
    """A class name as one key segment: no dots or slashes, so ``AP50.<class>`` stays two segments."""
    return _safe(name.replace(".", "_")) or "unnamed"


def per_class_ap(
    names: Mapping[int, str], ap_class_index: Sequence[int], ap50: Sequence[float], ap50_95: Sequence[float]
) -> dict[str, float]:
    """AP50 and AP50-95 for every class; NaN for a class with no instance in the validation split."""
    measured = {int(c): (float(a50), float(a)) for c, a50, a in zip(ap_class_index, ap50, ap50_95)}
    out: dict[str, float] = {}
    for index, name in sorted(names.items()):
        a50, a = measured.get(int(index), (math.nan, math.nan))
        out[f"AP50.{class_key(name)}"] = a50
        out[f"AP50_95.{class_key(name)}"] = a
    return out


def epoch_metrics(
    scalars: Mapping[str, float], fitness: float | None, epoch_time_s: float | None = None
) -> dict[str, float]:
    """Losses, precision, recall, mAPs and learning rates under their search-friendly names."""
    out = {metric_key(k): float(v) for k, v in scalars.items()}
    if fitness is not None:
        out["fitness"] = float(fitness)
    if epoch_time_s is not None:
        out["epoch_time_s"] = float(epoch_time_s)
    return out

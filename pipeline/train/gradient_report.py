"""Pictures and the report of a training's gradients: layers x epochs heatmaps and one JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.train.gradients import EpochGradients

HEATMAPS = {
    "grad_norm": ("grad_norm_heatmap.png", "log10 gradient L2 norm (epoch mean)"),
    "update_ratio": ("update_ratio_heatmap.png", "log10 update ratio ||dw|| / ||w|| (epoch mean)"),
}


def log10_matrix(history: list[EpochGradients], stat: str) -> np.ndarray:
    """[groups, epochs] of log10 of the epoch means; NaN where a value is zero, negative or not finite."""
    values = np.array([epoch.values[stat]["mean"] for epoch in history], dtype=float).T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(values)
    out[~np.isfinite(out)] = np.nan
    return out


def draw_heatmap(history: list[EpochGradients], stat: str, path: Path) -> Path:
    """Rows are layers in model order (input at the top), columns epochs; colour is log10 of the statistic."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = log10_matrix(history, stat)
    groups = history[-1].groups
    epochs = [epoch.epoch for epoch in history]
    # Tall enough to label every layer legibly; a figure object of its own, so drawing is thread-safe.
    height = min(max(4.0, 0.11 * len(groups) + 1.5), 60.0)
    row_points = 72 * (height - 1.5) / max(len(groups), 1)
    width = min(max(6.0, 0.35 * len(epochs) + 4.0), 30.0)
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    cmap = _colormap()
    image = axes.imshow(np.ma.masked_invalid(matrix), aspect="auto", interpolation="nearest", cmap=cmap)
    axes.set_xticks(range(len(epochs)), [str(e) for e in epochs], fontsize=7)
    axes.set_yticks(range(len(groups)), groups, fontsize=max(2.0, min(8.0, 0.75 * row_points)))
    axes.set_xlabel("epoch")
    axes.set_title(HEATMAPS[stat][1], fontsize=10)
    figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def _colormap() -> Any:
    import matplotlib

    # Zero or non-finite cells in red: the ones a person must see first.
    return matplotlib.colormaps["viridis"].with_extremes(bad="red")


def _clean(value: float) -> float | str | None:
    """JSON has no NaN or inf; write them as strings a reader can still tell apart from a number."""
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def report(history: list[EpochGradients], events: list[dict[str, Any]], summary: dict[str, Any]) -> dict[str, Any]:
    """The whole training's gradients: per group and statistic, one value per epoch for each reduction."""
    if not history:
        return {**summary, "epochs": [], "groups": {}, "totals": {}, "events": events}
    groups = history[-1].groups
    per_group: dict[str, Any] = {}
    for i, group in enumerate(groups):
        per_group[group] = {
            stat: {reduction: [_clean(e.values[stat][reduction][i]) for e in history] for reduction in by_reduction}
            for stat, by_reduction in history[-1].values.items()
        }
    totals = {key: [_clean(e.totals.get(key, math.nan)) for e in history] for key in history[-1].totals}
    return {
        **summary,
        "epochs": [e.epoch for e in history],
        "groups": per_group,
        "totals": totals,
        "events": events,
    }


def write_report(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(path)
    return path

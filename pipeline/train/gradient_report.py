"""Pictures and the report of a training's gradients: layers x epochs heatmaps and one JSON file."""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import write_atomic
from pipeline.train.gradients import EpochGradients

LOG = logging.getLogger("pipeline.train")
HEATMAP = "heatmaps.png"
DPI = 100
PANELS = {
    "grad_norm": "log10 gradient L2 norm",
    "update_ratio": "log10 update ratio ||dw|| / ||w||",
}


def log10_matrix(history: list[EpochGradients], stat: str) -> np.ndarray:
    """[groups, epochs] of log10 of the epoch means; NaN where a value is zero, negative or not finite."""
    values = np.array([epoch.values[stat]["mean"] for epoch in history], dtype=float).T
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(values)
    out[~np.isfinite(out)] = np.nan
    return out


def draw_heatmaps(history: list[EpochGradients], path: Path) -> Path:
    """One panel per statistic in PANELS: rows are layers in model order (input at the top), columns epochs,
    colour the log10 of the epoch mean. Red cells: zero or not finite."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = history[-1].groups
    epochs = [epoch.epoch for epoch in history]
    # Tall enough to label every layer; margins fixed in inches (tight_layout would draw the figure twice).
    row_in = 0.11 if len(groups) <= 500 else 55.0 / len(groups)
    font = max(2.0, min(7.0, 0.75 * 72 * row_in))
    left = 0.3 + 0.55 * font / 72 * max(len(g) for g in groups)
    top, bottom, gap, bar_w = 0.45, 0.55, 0.9, 0.15
    panel_w, panel_h = min(max(2.5, 0.25 * len(epochs)), 16.0), max(row_in * len(groups), 2.0)
    width = left + len(PANELS) * (panel_w + bar_w + gap)
    height = bottom + panel_h + top
    figure = Figure(figsize=(width, height), dpi=DPI)  # a figure of its own: no pyplot state, thread-safe
    FigureCanvasAgg(figure)
    every = max(1, len(epochs) // 20)
    x = left
    for stat, title in PANELS.items():
        axes = figure.add_axes((x / width, bottom / height, panel_w / width, panel_h / height))
        image = axes.imshow(
            np.ma.masked_invalid(log10_matrix(history, stat)), aspect="auto", interpolation="nearest", cmap=_colormap()
        )
        axes.set_xticks(range(0, len(epochs), every), [str(e) for e in epochs[::every]], fontsize=7)
        axes.set_yticks([])
        axes.set_xlabel("epoch", fontsize=8)
        axes.set_title(title, fontsize=9)
        bar = figure.add_axes(((x + panel_w + 0.08) / width, bottom / height, bar_w / width, panel_h / height))
        figure.colorbar(image, cax=bar).ax.tick_params(labelsize=7)
        x += panel_w + bar_w + gap
    # The layer names are the same every epoch: rendered once, then pasted as pixels (text is most of the cost).
    figure.figimage(_layer_labels(tuple(groups), font, left, bottom, panel_h, height, DPI), xo=0, yo=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}")
    figure.savefig(tmp, format="png")
    tmp.replace(path)  # whole or absent: a reader never sees half a picture
    return path


@functools.lru_cache(maxsize=4)
def _layer_labels(
    groups: tuple[str, ...], font: float, width: float, bottom: float, panel_h: float, height: float, dpi: int
) -> np.ndarray:
    """The column of layer names left of the panels, one per row, as RGBA pixels (``width`` x ``height`` inches)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=dpi)
    canvas = FigureCanvasAgg(figure)
    figure.patch.set_alpha(0.0)
    axes = figure.add_axes((0.0, bottom / height, 1.0, panel_h / height))
    axes.set_axis_off()
    axes.set_ylim(len(groups) - 0.5, -0.5)  # the rows of imshow: row 0 at the top
    right = (width - 0.05) / width
    for row, group in enumerate(groups):
        axes.text(right, row, group, ha="right", va="center", fontsize=font, transform=axes.get_yaxis_transform())
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


class HeatmapPainter:
    """Draws the heatmaps off the training thread.

    A request made while a drawing runs waits; a newer request replaces one not yet started, so the
    painter never falls behind. ``close`` waits for the last request, so the final picture is complete.
    """

    def __init__(self, path: Path, on_drawn: Callable[[Path], None] | None = None):
        self.path = path
        self.on_drawn = on_drawn
        self._wake = threading.Condition()
        self._pending: list[EpochGradients] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="gradient-heatmaps", daemon=True)
        self._thread.start()

    def request(self, history: list[EpochGradients]) -> None:
        with self._wake:
            self._pending = list(history)  # the epochs are never changed once made, so sharing them is safe
            self._wake.notify()

    def close(self, timeout_s: float = 60.0) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._pending is None and not self._closed:
                    self._wake.wait()
                history, self._pending = self._pending, None
            if history is None:
                return
            try:
                draw_heatmaps(history, self.path)
                if self.on_drawn is not None:
                    self.on_drawn(self.path)
            except Exception as exc:  # noqa: BLE001 - a picture must never stop a training
                LOG.warning("gradients: could not draw %s (%s: %s)", self.path.name, type(exc).__name__, exc)


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
    return write_atomic(path, json.dumps(payload, indent=1))

"""Pictures, the table and the report of a training's gradients: layers x epochs heatmaps, one Parquet table
(every statistic, reduction and epoch of every layer) and one JSON file."""

from __future__ import annotations

import functools
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files import replaced_whole, write_atomic
from pipeline.training.diagnosis import FROZEN, IDLE_LEVEL, Finding
from pipeline.training.gradients import EpochGradients, group_name

LOG = logging.getLogger("pipeline.training")
HEATMAP = "heatmaps.png"
TABLE = "table.parquet"
DPI = 100
PANELS = {
    "grad_norm": "log10 gradient L2 norm",
    "update_ratio": "log10 update ratio ||dw|| / ||w||",
}
FROZEN_GREY, IDLE_BLUE = "#bbbbbb", "#c6dbef"  # no statistics by choice; no targets at that level that epoch
LEGEND = "red: zero or not finite   grey: frozen   pale blue: idle head level (no targets)   x: named by a finding"


@dataclass(frozen=True)
class Row:
    """One row of the heatmaps: a layer, its part (block or head level), its section, whether it is frozen."""

    layer: str
    part: str
    section: str
    frozen: bool = False
    causes: tuple[str, ...] = ()  # the findings that name this layer (frozen ones say so by their grey)

    @property
    def label(self) -> str:
        causes = ((FROZEN,) if self.frozen else ()) + tuple(c for c in self.causes if c != FROZEN)
        return f"{self.layer} ({', '.join(causes)})" if causes else self.layer


def _causes_by_layer(findings: dict[int, list[Finding]]) -> dict[str, tuple[str, ...]]:
    named: dict[str, list[str]] = {}
    for epoch in sorted(findings):
        for finding in findings[epoch]:
            for layer in finding.layers:
                if finding.cause not in named.setdefault(layer, []):
                    named[layer].append(finding.cause)
    return {layer: tuple(causes) for layer, causes in named.items()}


def heatmap_rows(epoch: EpochGradients, findings: dict[int, list[Finding]] | None = None) -> list[Row]:
    """The layers in model order, grouped by part (blocks, then each head branch and level), frozen ones with
    their part (they have no statistics: a grey row, never a red one), each labelled with the causes that name it."""
    named = _causes_by_layer(findings or {})
    parts = epoch.group_parts if len(epoch.group_parts) == len(epoch.groups) else [""] * len(epoch.groups)
    rows = [
        Row(g, p, epoch.sections.get(p, ""), causes=named.get(g, ())) for g, p in zip(epoch.groups, parts, strict=True)
    ]
    rows += [Row(g, p, epoch.sections.get(p, ""), frozen=True) for g, p in epoch.frozen.items()]
    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        first.setdefault(row.part, i)
    # Blocks by number (a frozen block goes back to its place); within a block, parts as they come; stable.
    return sorted(rows, key=lambda row: (_block_number(row.part or row.layer), first[row.part]))


def _block_number(name: str) -> int:
    number = group_name(name + ".x", "block").rpartition(".")[2]
    return int(number) if number.isdigit() else -1


def log10_matrix(history: list[EpochGradients], stat: str, rows: list[Row] | None = None) -> np.ndarray:
    """[groups, epochs] of log10 of the epoch means (or [rows, epochs], frozen rows all NaN); NaN where a value
    is zero, negative or not finite."""
    values = np.array([epoch.values[stat]["mean"] for epoch in history], dtype=float).T
    if rows is not None:
        position = {g: i for i, g in enumerate(history[-1].groups)}
        padded = np.vstack([values, np.full((1, values.shape[1]), np.nan)])  # the last row: a frozen layer's
        values = padded[[position.get(row.layer, len(position)) if not row.frozen else len(position) for row in rows]]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(values)
    out[~np.isfinite(out)] = np.nan
    return out


def cell_marks(rows: list[Row], epochs: list[int], findings: dict[int, list[Finding]]) -> tuple[np.ndarray, np.ndarray]:
    """[rows, epochs] masks: the cells of an idle level's box branch in that epoch (no targets: pale blue, not
    red), and the cells a warning or error names (marked with an x)."""
    index = {row.layer: i for i, row in enumerate(rows)}
    idle = np.zeros((len(rows), len(epochs)), dtype=bool)
    flagged = np.zeros_like(idle)
    for column, epoch in enumerate(epochs):
        for finding in findings.get(epoch, []):
            target = idle if finding.cause == IDLE_LEVEL else flagged if finding.severity != "info" else None
            if target is not None:
                for layer in finding.layers:
                    if layer in index:
                        target[index[layer], column] = True
    return idle, flagged


def _warnings_by_epoch(epochs: list[int], findings: dict[int, list[Finding]]) -> list[tuple[int, str]]:
    """(column, "cause, cause") for each epoch with a warning or error, the causes of the run as a whole."""
    out = []
    for column, epoch in enumerate(epochs):
        causes = sorted({f.cause for f in findings.get(epoch, []) if f.severity != "info"})
        if causes:
            out.append((column, ", ".join(causes)))
    return out


def draw_heatmaps(history: list[EpochGradients], path: Path, findings: dict[int, list[Finding]] | None = None) -> Path:
    """One panel per statistic in PANELS: rows are layers in model order (input at the top) grouped by part
    (thin white lines between blocks and head levels, black between backbone, neck and head), columns epochs,
    colour the log10 of the epoch mean. Red cells: zero or not finite; grey rows: frozen layers; pale blue
    cells: an idle head level's box branch; x: a cell a warning or error names, whose causes are written above
    its epoch; each layer's label lists the causes that named it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    findings = findings or {}
    rows = heatmap_rows(history[-1], findings)
    labels = tuple(row.label for row in rows)
    frozen = np.array([[row.frozen] * len(history) for row in rows], dtype=bool)
    epochs = [epoch.epoch for epoch in history]
    idle, flagged = cell_marks(rows, epochs, findings)
    warnings = _warnings_by_epoch(epochs, findings)
    # Tall enough to label every layer; margins fixed in inches (tight_layout would draw the figure twice).
    row_in = 0.11 if len(rows) <= 500 else 55.0 / len(rows)
    font = max(2.0, min(7.0, 0.75 * 72 * row_in))
    starts = [i for i, row in enumerate(rows) if row.section and (i == 0 or row.section != rows[i - 1].section)]
    sections = tuple((i, rows[i].section) for i in starts)
    left = 0.3 + 0.55 * font / 72 * max(len(label) for label in labels) + (0.6 * (font + 1) / 72 * 8 if sections else 0)
    top, bottom, gap, bar_w = 0.45 + (0.12 * max(len(text) for _, text in warnings) if warnings else 0), 0.75, 0.9, 0.15
    panel_w, panel_h = min(max(2.5, 0.25 * len(epochs)), 16.0), max(row_in * len(rows), 2.0)
    width = left + len(PANELS) * (panel_w + bar_w + gap)
    height = bottom + panel_h + top
    figure = Figure(figsize=(width, height), dpi=DPI)  # a figure of its own: no pyplot state, thread-safe
    FigureCanvasAgg(figure)
    every = max(1, len(epochs) // 20)
    x = left
    for stat, title in PANELS.items():
        axes = figure.add_axes((x / width, bottom / height, panel_w / width, panel_h / height))
        matrix = log10_matrix(history, stat, rows)
        image = axes.imshow(np.ma.masked_invalid(matrix), aspect="auto", interpolation="nearest", cmap=_colormap())
        for mask, colour in ((frozen, FROZEN_GREY), (idle, IDLE_BLUE)):  # over red: not faults
            if mask.any():
                cmap = ListedColormap([colour])
                axes.imshow(np.ma.masked_where(~mask, mask), aspect="auto", interpolation="nearest", cmap=cmap)
        if flagged.any():
            y, x_cells = np.nonzero(flagged)
            axes.scatter(x_cells, y, marker="x", s=max(4.0, font * 2), c="black", linewidths=0.6)
        for column, text in warnings:
            axes.text(column, -0.6, text, rotation=90, ha="center", va="bottom", fontsize=6, color="#b00000")
        for i in range(1, len(rows)):
            if rows[i].section != rows[i - 1].section:
                axes.axhline(i - 0.5, color="black", linewidth=1.0)
            elif rows[i].part != rows[i - 1].part:
                axes.axhline(i - 0.5, color="white", linewidth=0.4)
        axes.set_xticks(range(0, len(epochs), every), [str(e) for e in epochs[::every]], fontsize=7)
        axes.set_yticks([])
        axes.set_xlabel("epoch", fontsize=8)
        axes.set_title(title, fontsize=9)
        bar = figure.add_axes(((x + panel_w + 0.08) / width, bottom / height, bar_w / width, panel_h / height))
        figure.colorbar(image, cax=bar).ax.tick_params(labelsize=7)
        x += panel_w + bar_w + gap
    figure.text(0.5 / width, 0.08 / height, LEGEND, fontsize=7, ha="left", va="bottom")
    # The layer names are the same every epoch: rendered once, then pasted as pixels (text is most of the cost).
    figure.figimage(_layer_labels(labels, sections, font, left, bottom, panel_h, height, DPI), xo=0, yo=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}")
    figure.savefig(tmp, format="png")
    tmp.replace(path)  # whole or absent: a reader never sees half a picture
    return path


@functools.lru_cache(maxsize=4)
def _layer_labels(
    groups: tuple[str, ...],
    sections: tuple[tuple[int, str], ...],
    font: float,
    width: float,
    bottom: float,
    panel_h: float,
    height: float,
    dpi: int,
) -> np.ndarray:
    """The column of layer names left of the panels, one per row, and the section names (backbone, neck,
    head) at the left edge where each begins, as RGBA pixels (``width`` x ``height`` inches)."""
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
    for row, section in sections:
        axes.text(
            0.02,
            row,
            section,
            ha="left",
            va="top",
            fontsize=font + 1,
            weight="bold",
            transform=axes.get_yaxis_transform(),
        )
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
        self._pending: tuple[list[EpochGradients], dict[int, list[Finding]]] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="gradient-heatmaps", daemon=True)
        self._thread.start()

    def request(self, history: list[EpochGradients], findings: dict[int, list[Finding]] | None = None) -> None:
        with self._wake:
            # The epochs and findings are never changed once made, so sharing them is safe.
            self._pending = (list(history), dict(findings or {}))
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
                pending, self._pending = self._pending, None
            if pending is None:
                return
            try:
                draw_heatmaps(pending[0], self.path, pending[1])
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


def table_columns(history: list[EpochGradients]) -> dict[str, list[Any]]:
    """One row per epoch x group: ``epoch``, ``layer``, ``part`` (its block or head level), then
    ``<stat>_<reduction>`` for every statistic and reduction, then the epoch's run-wide totals."""
    if not history:
        return {"epoch": [], "layer": [], "part": []}
    latest = history[-1]  # the groups never change within a training (a resume keeps only matching epochs)
    parts = latest.group_parts or [""] * len(latest.groups)
    columns: dict[str, list[Any]] = {"epoch": [], "layer": [], "part": []}
    cells = [(stat, reduction) for stat, by_reduction in latest.values.items() for reduction in by_reduction]
    columns.update({f"{stat}_{reduction}": [] for stat, reduction in cells})
    columns.update({key: [] for key in latest.totals})
    for epoch in history:
        n = len(epoch.groups)
        columns["epoch"] += [epoch.epoch] * n
        columns["layer"] += epoch.groups
        columns["part"] += parts if len(parts) == n else [""] * n
        for stat, reduction in cells:
            columns[f"{stat}_{reduction}"] += epoch.values[stat][reduction]
        for key in latest.totals:
            columns[key] += [epoch.totals.get(key, math.nan)] * n
    return columns


def write_table(history: list[EpochGradients], path: Path) -> Path:
    """The whole table as one Parquet file, replaced whole (a reader, or the upload, never sees half of it).
    Read it with ``pandas.read_parquet(path)``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = table_columns(history)
    types = {"epoch": pa.int32(), "layer": pa.string(), "part": pa.string()}
    table = pa.table({k: pa.array(v, type=types.get(k, pa.float64())) for k, v in columns.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_whole(path) as tmp:  # layer and part names repeat every epoch: dictionary encoding plus zstd
        pq.write_table(table, tmp, compression="zstd")
    return path

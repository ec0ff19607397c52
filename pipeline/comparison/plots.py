"""The comparison's charts, one PNG each, every run in the same colour on every chart.

Each function draws from `RunRecord` histories and latest metrics and returns the series it actually
drew, read back from the axes: one ``{"label": run, "panels": {panel title: {"x": [...], "y": [...]}}}``
per run drawn, in the order given (a gap in a line or a class not measured is None). ``compare`` writes
them to plots.json.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # runtime: mlflow loads only when runs are read
    from pipeline.tracking.runs import RunRecord

LOSSES = ("box_loss", "cls_loss", "dfl_loss")
LOSS_KEYS = tuple(f"{split}.{loss}" for split in ("train", "val") for loss in LOSSES)
GRAD_NORM_PREFIX = "grad_norm."

Series = dict[str, Any]  # one run's points on a chart: {"label": ..., "panels": {title: {"x": [...], "y": [...]}}}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed, none touched
    import matplotlib.pyplot as plt

    return plt


def run_label(run: RunRecord) -> str:
    return f"{run.name} ({run.run_id[:8]})"


def _colour(index: int) -> tuple[float, ...]:
    plt = _pyplot()
    return plt.get_cmap("tab10" if index < 10 else "tab20")(index % 20)


def _save(figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(figure)


def _whole_epochs(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _value(value: Any) -> int | float | None:
    """A drawn number for JSON: integers (epochs) stay int, NaN becomes None."""
    if isinstance(value, Integral):
        return int(value)
    number = float(value)
    return None if math.isnan(number) else number


def _drawn(axes, categories: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The labelled lines and bar groups on ``axes`` (matplotlib's own record of what was drawn).

    ``categories``: the names x positions 0, 1, ... stand for (classes, layers); a bar's x is its group's name."""
    panel = axes.get_title()

    def x_of(positions: Sequence[float]) -> list[Any]:
        return [categories[round(x)] for x in positions] if categories else [_value(x) for x in positions]

    drawn = [
        {
            "label": line.get_label(),
            "panel": panel,
            "x": x_of(line.get_xdata()),
            "y": [_value(y) for y in line.get_ydata()],
        }
        for line in axes.get_lines()
    ]
    drawn += [
        {
            "label": bars.get_label(),
            "panel": panel,
            "x": x_of([bar.get_x() + bar.get_width() / 2 for bar in bars.patches]),
            "y": [_value(bar.get_height()) for bar in bars.patches],
        }
        for bars in axes.containers
    ]
    return [series for series in drawn if series["x"] and not series["label"].startswith("_")]  # no empty groups


def _by_run(drawn: list[dict[str, Any]]) -> list[Series]:
    """The lines or bars of every panel grouped by their run's label, runs in the order first drawn."""
    runs: dict[str, Series] = {}
    for series in drawn:
        run = runs.setdefault(series["label"], {"label": series["label"], "panels": {}})
        run["panels"][series["panel"]] = {"x": series["x"], "y": series["y"]}
    return list(runs.values())


def _legend(axes, drawn: list[dict[str, Any]], empty: str) -> None:
    """A legend of the runs drawn, or ``empty`` across the axes when no run had a value to draw."""
    if any(value is not None for series in drawn for value in series["y"]):
        axes.legend(fontsize=8)
    else:
        axes.text(0.5, 0.5, empty, ha="center", va="center", transform=axes.transAxes)


def metric_by_epoch(runs: Sequence[RunRecord], key: str, path: Path, title: str) -> list[Series]:
    """``key`` against epoch, one line per run."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5))
    for index, run in enumerate(runs):
        points = run.histories.get(key, [])
        if points:
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, marker="o", markersize=3, color=_colour(index), label=run_label(run))
    axes.set(xlabel="epoch", ylabel=key, title=title)
    _whole_epochs(axes)
    axes.grid(alpha=0.3)
    drawn = _drawn(axes)
    _legend(axes, drawn, f"no run recorded {key}")
    _save(figure, path)
    return _by_run(drawn)


def losses(runs: Sequence[RunRecord], path: Path) -> list[Series]:
    """Train (top) and validation (bottom) box, class and DFL losses against epoch, one line per run in each panel."""
    plt = _pyplot()
    figure, grid = plt.subplots(2, 3, figsize=(13, 6.5), sharex=True)
    for axes, key in zip(grid.flat, LOSS_KEYS, strict=True):
        for index, run in enumerate(runs):
            points = run.histories.get(key, [])
            if points:
                steps, values = zip(*points, strict=True)
                axes.plot(steps, values, marker="o", markersize=2, color=_colour(index), label=run_label(run))
        axes.set_title(key, fontsize=10)
        _whole_epochs(axes)
        axes.grid(alpha=0.3)
    for axes in grid[1]:
        axes.set_xlabel("epoch")
    drawn = [series for axes in grid.flat for series in _drawn(axes)]
    handles = {label: handle for axes in grid.flat for handle, label in zip(*axes.get_legend_handles_labels())}
    if handles:  # one entry per run, whichever panel drew it
        figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(4, len(handles)), fontsize=8)
    else:
        figure.text(0.5, 0.03, "no run recorded losses", ha="center")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    _save(figure, path)
    return _by_run(drawn)


def per_class_ap50(runs: Sequence[RunRecord], classes: Sequence[str], path: Path) -> list[Series]:
    """AP50 per class as grouped bars: one group per class, one bar per run (the best checkpoint's value)."""
    plt = _pyplot()
    names = [column.removeprefix("AP50.") for column in classes]
    figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(names) * max(1, len(runs)) / 2), 4.5))
    width = 0.8 / max(1, len(runs))
    for index, run in enumerate(runs):
        values = [run.metrics.get(f"best.{c}", run.metrics.get(c, math.nan)) for c in classes]
        positions = [i + (index - (len(runs) - 1) / 2) * width for i in range(len(names))]
        axes.bar(positions, values, width=width, color=_colour(index), label=run_label(run))
    axes.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0)
    axes.set(ylabel="AP50", ylim=(0, 1), title="AP50 per class")
    axes.grid(axis="y", alpha=0.3)
    drawn = _drawn(axes, names)
    _legend(axes, drawn, "no run measured AP50 per class")
    _save(figure, path)
    return _by_run(drawn)


def _layer_order(name: str) -> list[object]:
    """``model.10.cv1`` after ``model.9.m``: numbers compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def gradient_layers(runs: Sequence[RunRecord]) -> list[str]:
    """Every layer any run recorded a gradient norm for, in network order."""
    layers = {
        key.removeprefix(GRAD_NORM_PREFIX) for run in runs for key in run.metrics if key.startswith(GRAD_NORM_PREFIX)
    }
    return sorted(layers, key=_layer_order)


def grad_norm_per_layer(runs: Sequence[RunRecord], path: Path) -> list[Series]:
    """log10 of each layer's gradient norm (the last epoch's mean), layers in network order, one line per run.

    Frozen layers have no gradient: the line has a gap there."""
    plt = _pyplot()
    layers = gradient_layers(runs)
    figure, axes = plt.subplots(figsize=(12, 4.5))
    for index, run in enumerate(runs):
        values = [run.metrics.get(GRAD_NORM_PREFIX + layer, math.nan) for layer in layers]
        if any(not math.isnan(v) for v in values):
            logs = [math.log10(v) if v > 0 else math.nan for v in values]
            axes.plot(range(len(layers)), logs, linewidth=1.2, color=_colour(index), label=run_label(run))
    step = max(1, len(layers) // 24)
    axes.set_xticks(
        range(0, len(layers), step), [layers[i] for i in range(0, len(layers), step)], rotation=70, fontsize=6
    )
    axes.set(ylabel="log10 gradient L2 norm", title="Gradient norm per layer (last epoch, mean over steps)")
    axes.grid(alpha=0.3)
    drawn = _drawn(axes, layers)
    _legend(axes, drawn, "no run recorded gradients")
    _save(figure, path)
    return _by_run(drawn)

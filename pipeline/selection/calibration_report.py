"""A calibration as people read it: the per-class table (terminal and Markdown) and the precision-recall plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.inference.screen import ClassPoint, Screen
from pipeline.selection.operating_points import Curve

HEADER = ("class", "threshold", "target", "recall [95% interval]", "precision", "FP/image", "objects")


def _cells(name: str, point: ClassPoint) -> list[str]:
    if point.objects == 0:
        return [name, "-", "-", "-", "-", "-", "0"]
    target = "-" if point.target is None else f"{point.target:g}" + ("" if point.reached else " (not reached)")
    recall = f"{point.recall:.3f} [{point.recall_low:.3f}, {point.recall_high:.3f}]"
    return [
        name,
        f"{point.threshold:.4g}",
        target,
        recall,
        f"{point.precision:.3f}",
        f"{point.fp_per_image:.3f}",
        str(point.objects),
    ]


def table_lines(screen: Screen) -> list[str]:
    """The per-class table, aligned for a terminal."""
    rows = [list(HEADER), *(_cells(name, point) for name, point in screen.classes.items())]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    return [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows
    ]


def how_chosen(screen: Screen) -> str:
    if screen.mode == "fp_budget":
        return f"the lowest threshold with at most {screen.max_fp_per_image:g} false detections per image"
    return "the highest threshold whose recall reaches the target"


def markdown(screen: Screen, lines: list[str]) -> str:
    """screen.md: where the thresholds come from, the per-class table and the image-level and note lines."""
    out = [
        f"# Screen calibrated on {screen.split} of {screen.data}",
        "",
        f"- Model: `{screen.model}`"
        + (f" (weights SHA-256 `{screen.model_sha256[:12]}`)" if screen.model_sha256 else ""),
        f"- Data hash (SHA-256): `{screen.data_hash or '-'}`",
        f"- Chosen per class: {how_chosen(screen)}; objects matched at IoU >= {screen.iou:g} as COCO matches them",
        f"- Recall interval: {screen.bootstrap.get('level', 0.95):.0%} bootstrap over images "
        f"({screen.bootstrap.get('samples')} resamples, seed {screen.bootstrap.get('seed')})",
        f"- Created: {screen.created}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join(["---"] + ["--:"] * (len(HEADER) - 1)) + "|",
    ]
    out += ["| " + " | ".join(_cells(name, point)) + " |" for name, point in screen.classes.items()]
    out += ["", *(f"- {line}" for line in lines), ""]
    return "\n".join(out)


def _corners(found: Curve) -> np.ndarray:
    """The points that shape the curve: each step up in recall and the point just before it (thousands of
    low-score detections otherwise, all drawn on top of each other)."""
    steps = np.flatnonzero(np.diff(found.hits) > 0) + 1
    return np.unique(np.r_[0, steps - 1, steps, len(found.hits) - 1]) if len(found.hits) else steps


def plot_pr_curves(curves: dict[str, Curve], screen: Screen, path: Path) -> Path:
    """One precision-recall panel per class, its operating point marked and labelled with the threshold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(curves)
    columns = min(3, max(len(names), 1))
    rows = -(-max(len(names), 1) // columns)
    figure = Figure(figsize=(4.2 * columns, 3.6 * rows + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        found, point = curves[name], screen.classes[name]
        ax.set(xlim=(0, 1.02), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
        ax.grid(alpha=0.3)
        if found.objects == 0:
            ax.set_title(f"{name} (no object in {screen.split})")
            ax.text(0.5, 0.5, "nothing to calibrate on", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.set_title(f"{name} ({found.objects} objects)")
        keep = _corners(found)
        ax.plot(found.recall[keep], found.precision[keep], drawstyle="steps-post", color="C0")
        if point.target is not None:
            ax.axvline(point.target, color="0.5", linestyle="--", linewidth=1)
        ax.errorbar(
            [point.recall],
            [point.precision],
            xerr=[[point.recall - point.recall_low], [point.recall_high - point.recall]],
            fmt="o",
            color="C3",
            capsize=3,
        )
        ax.annotate(
            f"t = {point.threshold:.3g}",
            (point.recall, point.precision),
            textcoords="offset points",
            xytext=(-8, -14 if point.precision > 0.2 else 8),  # below the dot, unless that is below the axis
            ha="right",
            color="C3",
        )
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    figure.suptitle(
        f"precision-recall on {screen.split}: dot at threshold t, bar = 95% recall interval, dashed = target"
    )
    figure.savefig(path, dpi=110)
    return path

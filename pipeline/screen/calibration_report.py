"""A calibration as people read it: the per-class table (terminal and Markdown), the precision-recall plot and
the operating curve (escapes against false rejects)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.inference.screen import ClassPoint, Screen
from pipeline.screen.false_rejects import FalseRejects, OperatingCurve
from pipeline.screen.operating_points import Curve

CURVE_FILE = "operating_curve.png"

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
    how = "the highest threshold whose recall reaches the target"
    if screen.max_false_reject is not None and screen.prefer == "budget":
        how += f", raised where needed to reject at most {100 * screen.max_false_reject:g}% of good images"
    return how


def rates_section(screen: Screen) -> list[str]:
    """screen.md's part on good and defective images: both rates at the chosen point, where they come from."""
    if not screen.false_reject and not screen.escape:
        return []
    out = ["## Good parts rejected, defective parts let through", ""]
    if all(k in screen.false_reject for k in FalseRejects.__dataclass_fields__):
        found = FalseRejects(**{k: screen.false_reject[k] for k in FalseRejects.__dataclass_fields__})
        line = (
            f"- False-reject rate (good images rejected): {found.rate:.1%} [{found.low:.1%}, {found.high:.1%}], "
            f"{found.source()}"
        )
        if screen.max_false_reject is not None:
            kept = screen.prefer == "recall" or screen.mode == "fp_budget"  # the budget only reported
            line += f"; budget {100 * screen.max_false_reject:g}%" + (
                " (reported; thresholds not raised)" if kept else ""
            )
        out.append(line)
    if screen.escape:
        e = screen.escape
        out.append(
            f"- Escape rate (defective images not flagged): {e['rate']:.1%} [{e['low']:.1%}, {e['high']:.1%}] "
            f"on {e['defective']} defective images"
        )
    out.append(
        f"- {screen.bootstrap.get('level', 0.95):.0%} bootstrap intervals over images. How the two trade as the "
        f"thresholds move together: [{CURVE_FILE}]({CURVE_FILE})"
    )
    return [*out, ""]


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
    out += ["", *(f"- {line}" for line in lines), "", *rates_section(screen)]
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


def plot_operating_curve(found: OperatingCurve, screen: Screen, path: Path) -> Path:
    """Escape rate against false-reject rate as the thresholds move together: the whole screen thick, each class
    thin (only its threshold moving), the chosen thresholds a dot on each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 5.6), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel="false-reject rate (good images rejected)")
    ax.set_ylabel("escape rate (defective images not flagged)")
    ax.grid(alpha=0.3)
    at = found.chosen
    for k, (name, mine) in enumerate(found.classes.items()):
        color = f"C{(k + 1) % 10}"
        ax.plot(mine.false_reject, mine.escape, color=color, linewidth=1, label=name)
        ax.plot([mine.false_reject[at]], [mine.escape[at]], "o", color=color, markersize=4)
    ax.plot(found.false_reject, found.escape, color="C0", linewidth=3, label="screen")
    ax.plot([found.false_reject[at]], [found.escape[at]], "o", color="C0", markersize=8)
    ax.legend(loc="upper right", fontsize="small")
    estimated = ", false rejects estimated from false detections outside the boxes" if found.how == "estimated" else ""
    figure.suptitle(
        f"escapes against false rejects on {screen.split}{estimated}\n"
        "thick: the screen, thin: one class's threshold moving alone; dot: the chosen thresholds",
        fontsize="medium",
    )
    figure.savefig(path, dpi=110)
    return path

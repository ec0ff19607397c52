"""The drift check's picture: each input statistic's distribution in the baseline and in the run, side by side, and
each class's fail rate, so that the MLflow UI shows at a glance what moved. Needs matplotlib (the training install
has it; a line PC's may not: then there is no picture, and nothing else changes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.drift.statistics import STATISTICS, Sample

_BASELINE, _CURRENT = "#4c72b0", "#dd8452"


def plot_drift(baseline: Sample, current: Sample, path: str | Path) -> Path | None:
    """Write the picture to ``path`` (PNG); None when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    classes = list(dict.fromkeys([*baseline.classes, *current.classes]))
    panels = len(STATISTICS) + (1 if classes else 0)
    columns = 4
    rows = -(-panels // columns)
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for k, name in enumerate(STATISTICS):
        axes = figure.add_subplot(rows, columns, k + 1)
        before, after = baseline.statistic(name), current.statistic(name)
        both = np.concatenate([before, after])
        edges = np.histogram_bin_edges(both, bins=20) if both.size and np.ptp(both) > 0 else 10
        for values, colour, label in ((before, _BASELINE, "baseline"), (after, _CURRENT, "this run")):
            if values.size:
                axes.hist(values, bins=edges, density=True, alpha=0.55, color=colour, label=label)
        axes.set_title(name, fontsize=9)
        axes.tick_params(labelsize=7)
        if k == 0:
            axes.legend(fontsize=7)
    if classes:
        axes = figure.add_subplot(rows, columns, len(STATISTICS) + 1)
        x = np.arange(len(classes))
        rates = [[float(s.flags(c).mean()) if s.images else 0.0 for c in classes] for s in (baseline, current)]
        axes.bar(x - 0.2, rates[0], 0.4, color=_BASELINE, label="baseline")
        axes.bar(x + 0.2, rates[1], 0.4, color=_CURRENT, label="this run")
        axes.set_xticks(x, classes, fontsize=7, rotation=30)
        axes.set_title("fail rate per class", fontsize=9)
        axes.tick_params(labelsize=7)
    path = Path(path)
    figure.savefig(path, dpi=90)
    return path

"""Compare training runs: which model, and why.

``compare(experiment=...)`` reads the runs from MLflow (an experiment, optionally filtered with MLflow's
search syntax; named run ids; or the children of a sweep's parent run), builds one table with the
params that differ between them and their outcome (best and final mAP, per-class AP50 in the dataset's
class order, epochs, training time, gradient health), with a caution when the runs trained for different
numbers of epochs or on different data, and, given ``out``, writes it as CSV and Markdown with four charts,
the series they drew (plots.json) and one self-contained HTML report. ``out`` is built beside itself and
swapped in once complete; an existing folder is replaced only when an earlier ``compare`` made it.

`compare` is here; its modules: `table` (the table, CSV, Markdown, HTML), `plots` (the charts), `report` (the
HTML page).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.comparison import plots
from pipeline.comparison.report import write_report
from pipeline.comparison.table import (
    DEFAULT_SORT,
    HISTORY_KEYS,
    Table,
    build_table,
    caution_line,
    to_csv,
    to_html,
    to_markdown,
    to_text,
)
from pipeline.destinations import build_then_swap, reserve
from pipeline.messages import UserError

if TYPE_CHECKING:
    from pipeline.tracking.runs import RunRecord

__all__ = ["CompareError", "Comparison", "compare", "DEFAULT_SORT"]

FILES = {
    "csv": "runs.csv",
    "markdown": "runs.md",
    "report": "report.html",
    "series": "plots.json",
}
PLOTS = {
    "map": "map50_95_by_epoch.png",
    "losses": "losses.png",
    "per_class": "ap50_per_class.png",
    "gradients": "grad_norm_per_layer.png",
}
KIND = "compare"  # the marker's kind of an --out folder


class CompareError(UserError, ValueError):
    """Runs that cannot be compared as asked; the message is one line."""


@dataclass
class Comparison:
    runs: list[RunRecord]
    table: Table
    sort: str
    files: list[Path] = field(default_factory=list)
    series: dict[str, list[plots.Series]] = field(default_factory=dict)  # plot file name -> the series it drew

    @property
    def text(self) -> str:
        return to_text(self.table)

    @property
    def best(self) -> dict | None:
        """The first row after sorting (the best by the sort key), if any run has a value for it."""
        return self.table.rows[0] if self.table.rows else None

    @property
    def caution(self) -> str:
        """One line when the runs trained for different numbers of epochs or on different data, else empty."""
        return caution_line(self.runs, self.sort)


def compare(
    experiment: str = "",
    *,
    filter: str = "",  # noqa: A002 - the CLI's name for it
    runs: list[str] | tuple[str, ...] = (),
    parent: str = "",
    sort: str = DEFAULT_SORT,
    ascending: bool = False,
    out: str | Path | None = None,
    tracking_uri: str = "",
) -> Comparison:
    """Compare the runs of ``experiment`` (filtered), or ``runs`` by id, or the children of sweep ``parent``."""
    if not (experiment or runs or parent):
        raise CompareError("compare: name the runs with --experiment, --runs or --parent")
    with reserve(out, KIND, replace=True) as out:  # held from before any query: a refused --out costs nothing
        from pipeline.tracking.runs import RunQueryError, add_histories, find_runs

        try:
            records = find_runs(experiment, filter, run_ids=list(runs), parent=parent, tracking_uri=tracking_uri)
            keys = list(HISTORY_KEYS) + (list(plots.LOSS_KEYS) if out is not None else [])
            add_histories(records, keys, tracking_uri)
        except RunQueryError as exc:
            raise CompareError(f"compare: {exc}") from None
        if not records:
            where = f"sweep {parent}" if parent else f"experiment {experiment!r}" if experiment else "the ids given"
            raise CompareError(f"compare: no training runs in {where}" + (f" match {filter!r}" if filter else ""))
        comparison = Comparison(records, build_table(records, sort, ascending), sort)
        if out is not None:
            with build_then_swap(out, KIND, "--out", runs=len(records)) as staging:
                _write(comparison, staging, _context(experiment, filter, runs, parent, sort, ascending))
            comparison.files = [out / path.name for path in comparison.files]  # where they are after the swap
        return comparison


def _context(experiment: str, filter_: str, runs: tuple | list, parent: str, sort: str, ascending: bool) -> list[str]:
    lines = []
    if experiment:
        lines.append(f"experiment: {experiment}")
    if parent:
        lines.append(f"sweep parent run: {parent}")
    if runs:
        lines.append(f"runs: {', '.join(runs)}")
    if filter_:
        lines.append(f"filter: {filter_}")
    lines.append(f"sorted by {sort}, {'lowest' if ascending else 'highest'} first")
    return lines


def _summary(comparison: Comparison) -> str:
    best, table = comparison.best, comparison.table
    if best is None:
        return ""
    differs = ", ".join(f"{key}={best[key]}" for key in table.params) or "no param differs"
    return (
        f"{len(table.rows)} runs; first by {comparison.sort}: {best['run']} ({best['run_id']}) with {differs}; "
        f"gradients: {best['gradients']}."
    )


def _write(comparison: Comparison, out: Path, context: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    table, runs = comparison.table, comparison.runs
    # Runs keep the table's order on every chart, so the colours read the same everywhere.
    order = {row["run_id"]: i for i, row in enumerate(table.rows)}
    runs = sorted(runs, key=lambda run: order[run.run_id])
    (out / FILES["csv"]).write_text(to_csv(table), encoding="utf-8")
    (out / FILES["markdown"]).write_text(to_markdown(table), encoding="utf-8")
    drawn = {
        "mAP50-95 by epoch": (PLOTS["map"], plots.metric_by_epoch(runs, "mAP50_95", out / PLOTS["map"], "mAP50-95")),
        "Losses": (PLOTS["losses"], plots.losses(runs, out / PLOTS["losses"])),
        "AP50 per class": (
            PLOTS["per_class"],
            plots.per_class_ap50(runs, table.classes, out / PLOTS["per_class"]),
        ),
        "Gradient norm per layer": (PLOTS["gradients"], plots.grad_norm_per_layer(runs, out / PLOTS["gradients"])),
    }
    comparison.series = {name: series for name, series in drawn.values()}
    (out / FILES["series"]).write_text(json.dumps(comparison.series, indent=1), encoding="utf-8")
    best = comparison.best["run_id"] if comparison.best else ""
    write_report(
        out / FILES["report"],
        "Run comparison",
        context,
        to_html(table, highlight=best),
        _summary(comparison),
        {heading: out / name for heading, (name, _) in drawn.items()},
        comparison.caution,
    )
    comparison.files = [out / name for name in (*FILES.values(), *PLOTS.values())]

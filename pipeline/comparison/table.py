"""Runs to one table: the params that differ between them and what each run reached.

Pure functions over `RunRecord` values (no MLflow), so they are fast to test. Column keys double as
titles and CSV headers: ``mAP50_95.best``, ``AP50.<class>``, ``train_time_s``, and the param keys as
MLflow holds them (``model.freeze``).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # runtime: mlflow loads only when runs are read
    from pipeline.tracking.runs import RunRecord

# Params that name a run or place its files: they differ between any two runs and say nothing about training.
IDENTITY_PARAMS = frozenset({"train.name", "train.project", "train.exist_ok", "tracking.run_name", "tracking.tags"})
# Per-epoch metrics the table reads the history of (best value, epochs trained, time per epoch).
HISTORY_KEYS = ("mAP50", "mAP50_95", "epoch_time_s")
OUTCOME_COLUMNS = ("mAP50.best", "mAP50.final", "mAP50_95.best", "mAP50_95.final")
TAIL_COLUMNS = ("epochs", "train_time_s", "gradients")
DEFAULT_SORT = "mAP50_95.best"


@dataclass
class Table:
    columns: list[str]
    rows: list[dict[str, Any]]  # column -> value (float, int, str or None)
    params: list[str]  # the param columns: the keys whose values differ between the runs
    classes: list[str]  # the per-class AP50 columns, as ``AP50.<class>``, in the dataset's class order


def differing_params(runs: Sequence[RunRecord]) -> list[str]:
    """The param keys whose value is not the same in every run (missing counts as a value), sorted."""
    keys = sorted(set().union(*(run.params for run in runs)) - IDENTITY_PARAMS)
    return [key for key in keys if len({run.params.get(key) for run in runs}) > 1]


def class_columns(runs: Sequence[RunRecord]) -> list[str]:
    """``AP50.<class>`` for every class any run measured, in the order of the runs' datasets (the first run's
    classes first); classes that no run's dataset names follow, sorted by name."""
    names = {key.removeprefix("best.") for run in runs for key in run.metrics}
    measured = {name for name in names if name.startswith("AP50.") and not name.startswith("AP50_95.")}
    known = [f"AP50.{key}" for key in _class_keys(runs)]
    ordered = list(dict.fromkeys(column for column in known if column in measured))
    return ordered + sorted(measured - set(ordered))


def _class_keys(runs: Sequence[RunRecord]) -> list[str]:
    """Each run's class names as the metric keys spell them, run after run."""
    if not any(run.classes for run in runs):
        return []
    from pipeline.training.epoch_metrics import class_key  # here: the train package loads the trainer on import

    return [class_key(name) for run in runs for name in run.classes]


def _best(run: RunRecord, key: str) -> float | None:
    """The best checkpoint's validation (``best.<key>``) when the run logged it, else the highest epoch value."""
    if f"best.{key}" in run.metrics:
        return run.metrics[f"best.{key}"]
    values = [value for _, value in run.histories.get(key, []) if not math.isnan(value)]
    return max(values) if values else run.metrics.get(key)


def _train_time_s(run: RunRecord) -> float | None:
    """Seconds spent in epochs (training plus validation); the run's wall time when epochs were not timed."""
    epoch_times = run.histories.get("epoch_time_s")
    if epoch_times:
        return sum(value for _, value in epoch_times)
    return (run.end_ms - run.start_ms) / 1000 if run.end_ms else None


def _epochs(run: RunRecord) -> int | None:
    history = run.histories.get("mAP50_95") or run.histories.get("mAP50")
    return max(step for step, _ in history) if history else None


def caution_line(runs: Sequence[RunRecord], sort: str) -> str:
    """One line when the runs trained for different numbers of epochs or on different data (``dataset.hash``),
    since the first by ``sort`` then compares unlike things; empty when they are alike. Unknown values are left out."""
    epochs = sorted({count for run in runs if (count := _epochs(run)) is not None})
    hashes = {run.tags["dataset.hash"] for run in runs if run.tags.get("dataset.hash")}
    unlike = []
    if len(epochs) > 1:
        counts = ", ".join(map(str, epochs)) if len(epochs) <= 4 else f"{epochs[0]} to {epochs[-1]}"
        unlike.append(f"for different numbers of epochs ({counts})")
    if len(hashes) > 1:
        unlike.append(f"on different data ({len(hashes)} values of dataset.hash)")
    if not unlike:
        return ""
    return f"caution: these runs trained {' and '.join(unlike)}, so the first by {sort} compares unlike things"


def _gradients(run: RunRecord) -> str:
    """The run's gradient diagnosis: ``ok``, or its worst severity and the causes found (``info: idle-level,frozen``)."""
    health = run.tags.get("gradients.health")
    if not health:
        return "-"
    causes = run.tags.get("gradients.causes", "")
    return f"{health}: {causes}" if causes and health != "ok" else health


def outcome(run: RunRecord, classes: Sequence[str]) -> dict[str, Any]:
    row: dict[str, Any] = {
        "mAP50.best": _best(run, "mAP50"),
        "mAP50.final": run.metrics.get("mAP50"),
        "mAP50_95.best": _best(run, "mAP50_95"),
        "mAP50_95.final": run.metrics.get("mAP50_95"),
    }
    for column in classes:
        row[column] = run.metrics.get(f"best.{column}", run.metrics.get(column))
    row.update({"epochs": _epochs(run), "train_time_s": _train_time_s(run), "gradients": _gradients(run)})
    return row


def build_table(runs: Sequence[RunRecord], sort: str = DEFAULT_SORT, ascending: bool = False) -> Table:
    """One row per run, sorted by ``sort``: a column, else a metric or param of the runs; runs without it last."""
    params = differing_params(runs) if len(runs) > 1 else []
    classes = class_columns(runs)
    columns = ["run", "run_id", "status", *params, *OUTCOME_COLUMNS, *classes, *TAIL_COLUMNS]
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name, "run_id": run.run_id, "status": run.status}
        row.update({key: run.params.get(key) for key in params})
        row.update(outcome(run, classes))
        rows.append(row)
    by_id = {run.run_id: run for run in runs}
    keyed = [(_sort_value(row, by_id[row["run_id"]], sort), row) for row in rows]
    present = sorted(
        ((value, row) for value, row in keyed if value is not None),
        key=lambda pair: pair[0],
        reverse=not ascending,
    )
    missing = [row for value, row in keyed if value is None]
    return Table(columns, [row for _, row in present] + missing, params, classes)


def _sort_value(row: dict[str, Any], run: RunRecord, key: str) -> tuple[int, Any] | None:
    """A comparable value: numbers before text, so a column of numbers (or numeric params) sorts as numbers."""
    value = row.get(key) if key in row else run.metrics.get(key, run.params.get(key))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    number = _as_number(value)
    return (0, number) if number is not None else (1, str(value))


def _as_number(value: Any) -> float | None:
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def cell(value: Any, column: str = "") -> str:
    """How a value reads in a table: 4 decimals for scores, 1 for seconds, '-' for nothing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if column == "train_time_s" or abs(value) >= 10 else f"{value:.4f}"
    return str(value)


def _short(row: dict[str, Any], column: str) -> str:
    return row["run_id"][:8] if column == "run_id" else cell(row[column], column)


def to_text(table: Table) -> str:
    """The table for a terminal: aligned columns, the run id shortened to 8 characters."""
    body = [[_short(row, column) for column in table.columns] for row in table.rows]
    widths = [max([len(column), *(len(line[i]) for line in body)]) for i, column in enumerate(table.columns)]
    numeric = [all(_as_number(row[c]) is not None or row[c] is None for row in table.rows) for c in table.columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(table.columns, widths, strict=True))]
    for line in body:
        cells = zip(line, widths, numeric, strict=True)
        lines.append("  ".join(text.rjust(w) if num else text.ljust(w) for text, w, num in cells))
    return "\n".join(lines)


def to_csv(table: Table) -> str:
    """Full precision and the full run id, for a spreadsheet or pandas."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows:
        writer.writerow(["" if row[c] is None else row[c] for c in table.columns])
    return out.getvalue()


def to_markdown(table: Table) -> str:
    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| " + " | ".join(escape(c) for c in table.columns) + " |"]
    lines.append("|" + "|".join("---:" if c not in {"run", "run_id", "status"} else "---" for c in table.columns) + "|")
    for row in table.rows:
        lines.append("| " + " | ".join(escape(_short(row, c)) for c in table.columns) + " |")
    return "\n".join(lines) + "\n"


def to_html(table: Table, highlight: str = "") -> str:
    """An HTML ``<table>``; the row of run ``highlight`` is marked."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    rows = []
    for row in table.rows:
        mark = ' class="best"' if row["run_id"] == highlight else ""
        cells = "".join(
            f"<td title='{html.escape(row['run_id'])}'>{html.escape(_short(row, c))}</td>" for c in table.columns
        )
        rows.append(f"<tr{mark}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"

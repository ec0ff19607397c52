"""The comparison table from plain run records: differing params, outcomes, sorting, the three text forms."""

from __future__ import annotations

import csv
import io
import math

from pipeline.comparison.table import (
    build_table,
    caution_line,
    class_columns,
    differing_params,
    to_csv,
    to_html,
    to_markdown,
    to_text,
)
from pipeline.tracking.runs import RunRecord


def run(run_id: str, params: dict, metrics: dict, histories: dict | None = None, tags: dict | None = None) -> RunRecord:
    return RunRecord(
        run_id=run_id * 8,
        name=f"run-{run_id}",
        status="FINISHED",
        start_ms=0,
        end_ms=90_000,
        params={"train.epochs": "3", "train.name": f"n{run_id}", **params},
        metrics=metrics,
        tags=tags or {},
        histories=histories or {},
    )


RUNS = [
    run(
        "a",
        {"model.freeze": "None", "augment.preset": "surface"},
        {
            "mAP50": 0.4,
            "mAP50_95": 0.2,
            "best.mAP50_95": 0.25,
            "AP50.pit": 0.5,
            "best.AP50.pit": 0.6,
            "AP50.scratch": 0.3,
        },
        {"mAP50_95": [(1, 0.1), (2, 0.25), (3, 0.2)], "mAP50": [(1, 0.2), (2, 0.45), (3, 0.4)]},
        {"gradients.health": "warning", "gradients.causes": "vanishing,idle-level"},
    ),
    run(
        "b",
        {"model.freeze": "10", "augment.preset": "surface"},
        {"mAP50": 0.7, "mAP50_95": 0.5, "best.mAP50_95": 0.5},
        {"mAP50_95": [(1, 0.3), (2, 0.5)], "epoch_time_s": [(1, 10.0), (2, 12.5)]},
        {"gradients.health": "ok"},
    ),
    run("c", {"model.freeze": "10", "augment.preset": "none", "train.lr0": "0.02"}, {"mAP50": 0.1, "mAP50_95": 0.05}),
]


def test_differing_params_are_found_and_naming_params_left_out() -> None:
    assert differing_params(RUNS) == ["augment.preset", "model.freeze", "train.lr0"]
    assert differing_params(RUNS[:2]) == ["model.freeze"]


def test_outcomes_prefer_the_best_checkpoint_and_read_histories() -> None:
    table = build_table(RUNS)
    rows = {row["run"]: row for row in table.rows}
    a, b, c = rows["run-a"], rows["run-b"], rows["run-c"]
    assert a["mAP50_95.best"] == 0.25 and a["mAP50_95.final"] == 0.2
    assert a["mAP50.best"] == 0.45 and a["mAP50.final"] == 0.4  # no best.mAP50: the highest epoch
    assert a["AP50.pit"] == 0.6 and a["AP50.scratch"] == 0.3 and b["AP50.pit"] is None
    assert a["epochs"] == 3 and b["epochs"] == 2 and c["epochs"] is None
    assert b["train_time_s"] == 22.5 and a["train_time_s"] == 90.0  # epoch times, else the run's wall time
    assert a["gradients"] == "warning: vanishing,idle-level" and b["gradients"] == "ok" and c["gradients"] == "-"
    assert table.classes == ["AP50.pit", "AP50.scratch"]
    assert table.columns[:6] == ["run", "run_id", "status", "augment.preset", "model.freeze", "train.lr0"]


def test_sorting_by_column_metric_or_param_with_missing_last() -> None:
    assert [r["run"] for r in build_table(RUNS).rows] == ["run-b", "run-a", "run-c"]
    assert [r["run"] for r in build_table(RUNS, sort="mAP50.final", ascending=True).rows] == ["run-c", "run-a", "run-b"]
    assert [r["run"] for r in build_table(RUNS, sort="AP50.pit").rows] == ["run-a", "run-b", "run-c"]
    assert [r["run"] for r in build_table(RUNS, sort="train.lr0").rows] == ["run-c", "run-a", "run-b"]
    assert [r["run"] for r in build_table(RUNS, sort="no.such.key").rows] == ["run-a", "run-b", "run-c"]  # given order


def test_text_csv_markdown_and_html_hold_every_row() -> None:
    table = build_table(RUNS)
    text = to_text(table).splitlines()
    assert len(text) == 4 and text[0].split()[:3] == ["run", "run_id", "status"]
    assert "bbbbbbbb" in text[1] and "0.5000" in text[1]
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r["run_id"] for r in rows] == ["b" * 8, "a" * 8, "c" * 8]
    assert math.isclose(float(rows[0]["mAP50_95.best"]), 0.5) and rows[0]["AP50.pit"] == ""
    markdown = to_markdown(table).splitlines()
    assert len(markdown) == 5 and markdown[0].startswith("| run | run_id |") and markdown[1].startswith("|---|")
    html = to_html(table, highlight="b" * 8)
    assert html.count("<tr") == 4 and html.count('class="best"') == 1


def test_one_run_has_no_param_columns() -> None:
    table = build_table(RUNS[:1])
    assert table.params == [] and len(table.rows) == 1


def test_class_columns_follow_the_datasets_order_then_the_alphabet() -> None:
    measured = {"AP50.pin-hole": 0.1, "AP50.scratch": 0.2, "AP50.a_b": 0.3, "AP50.crack": 0.4, "AP50_95.scratch": 0.1}
    named = run("a", {}, measured)
    named.classes = ["scratch", "pin-hole", "a.b", "dent"]  # "a.b" is spelled a_b in a metric key; no run measured dent
    other = run("b", {}, {"best.AP50.zinc": 0.5, "AP50.crack": 0.1})
    other.classes = ["zinc", "scratch"]
    assert class_columns([named, other]) == ["AP50.scratch", "AP50.pin-hole", "AP50.a_b", "AP50.zinc", "AP50.crack"]
    assert class_columns(RUNS) == ["AP50.pit", "AP50.scratch"]  # no run names its classes: sorted
    assert build_table([other, named]).classes[:2] == ["AP50.zinc", "AP50.scratch"]  # the first run's order first


def test_a_caution_when_runs_trained_unlike_epochs_or_data() -> None:
    same = [run(i, {}, {}, {"mAP50_95": [(1, 0.1), (2, 0.2)]}, {"dataset.hash": "h1"}) for i in "ab"]
    assert caution_line(same, "mAP50_95.best") == ""
    assert caution_line([*same, run("c", {}, {})], "mAP50_95.best") == ""  # no epochs, no hash: nothing to compare
    longer = run("d", {}, {}, {"mAP50_95": [(1, 0.1), (2, 0.2), (3, 0.3)]}, {"dataset.hash": "h1"})
    assert caution_line([*same, longer], "mAP50.final") == (
        "caution: these runs trained for different numbers of epochs (2, 3), so the first by mAP50.final compares "
        "unlike things"
    )
    other_data = run("e", {}, {}, {"mAP50_95": [(2, 0.2)]}, {"dataset.hash": "h2"})
    assert caution_line([*same, other_data], "x") == (
        "caution: these runs trained on different data (2 values of dataset.hash), so the first by x compares unlike "
        "things"
    )
    many = [run(str(n), {}, {}, {"mAP50": [(n, 0.1)]}, {"dataset.hash": f"h{n}"}) for n in range(1, 7)]
    assert caution_line(many, "x").startswith(
        "caution: these runs trained for different numbers of epochs (1 to 6) and on different data (6 values"
    )

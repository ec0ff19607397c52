"""Promotion gates on hand-made metric dicts: parsing, names, operators, regressions, the table and the tags."""

from __future__ import annotations

import math

import pytest

from pipeline.messages import UserError
from pipeline.promotion.gates import Gate, GateError, decide, format_table, parse_gate, parse_gates, regressions

# class name (and key) -> the key Evaluation.metrics() uses, as promotion builds it with class_key
CLASSES = {"scratch": "scratch", "pin hole": "pin_hole", "pin_hole": "pin_hole", "crack": "crack"}

CANDIDATE = {
    "ultralytics.precision": 0.70,
    "ultralytics.recall": 0.80,
    "ultralytics.mAP50": 0.60,
    "ultralytics.mAP50_95": 0.30,
    "coco.AP50": 0.58,
    "AP50.scratch": 0.50,
    "AP50.pin_hole": 0.70,
    "AP50.crack": 0.60,
    "recall.scratch": 0.912,
    "coco.AP.crack": 0.25,
}
CURRENT = {
    "ultralytics.mAP50": 0.61,
    "ultralytics.mAP50_95": 0.31,
    "AP50.scratch": 0.55,
    "AP50.pin_hole": 0.69,
    "AP50.crack": 0.62,
    "recall.scratch": 0.95,
}


@pytest.mark.parametrize(
    ("text", "metric", "op", "threshold"),
    [
        ("AP50>=0.6", "ultralytics.mAP50", ">=", 0.6),
        ("mAP50 > 0.5", "ultralytics.mAP50", ">", 0.5),
        ("AP50_95<=0.9", "ultralytics.mAP50_95", "<=", 0.9),
        ("mAP50-95<1", "ultralytics.mAP50_95", "<", 1.0),
        ("precision>=.7", "ultralytics.precision", ">=", 0.7),
        ("recall>=0.8", "ultralytics.recall", ">=", 0.8),
        ("ultralytics.mAP50>=0.1", "ultralytics.mAP50", ">=", 0.1),
        ("coco.AP50>=0.2", "coco.AP50", ">=", 0.2),
        ("coco.AP_small>=1e-2", "coco.AP_small", ">=", 0.01),
        ("recall.scratch>=0.95", "recall.scratch", ">=", 0.95),
        ("AP50.pin hole>=0.5", "AP50.pin_hole", ">=", 0.5),
        ("AP50_95.pin_hole>0.1", "AP50_95.pin_hole", ">", 0.1),
        ("AP50-95.crack>0.1", "AP50_95.crack", ">", 0.1),
        ("coco.AP50.crack>=0.3", "coco.AP50.crack", ">=", 0.3),
        ("coco.AP.crack>=0.3", "coco.AP.crack", ">=", 0.3),
        ("precision.scratch<0.99", "precision.scratch", "<", 0.99),
    ],
)
def test_gates_parse_to_the_flat_metric_keys(text: str, metric: str, op: str, threshold: float) -> None:
    gate = parse_gate(text, CLASSES)
    assert (gate.metric, gate.op, gate.threshold) == (metric, op, threshold)
    assert gate.text == text.replace(" > ", ">")  # as written, the spaces around the operator dropped


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("AP50", "expected METRIC OP VALUE"),
        ("AP50=0.6", "expected METRIC OP VALUE"),
        ("AP50=>0.6", "expected METRIC OP VALUE"),
        ("AP50>=high", "expected METRIC OP VALUE"),
        (">=0.5", "expected METRIC OP VALUE"),
        ("AP50>=0.5>=0.6", "expected METRIC OP VALUE"),
        ("mAP>=0.5", "unknown metric 'mAP'"),
        ("ultralytics.AP50>=0.5", "unknown metric"),
        ("recall.dent>=0.9", "no class 'dent' (classes: crack, pin_hole, scratch)"),
        ("coco.AP75.scratch>=0.9", "unknown metric"),
    ],
)
def test_a_gate_that_cannot_be_used_is_one_line_naming_it(text: str, says: str) -> None:
    with pytest.raises(GateError) as caught:
        parse_gate(text, CLASSES)
    message = str(caught.value)
    assert message.startswith(f"--gate {text!r}: ") and says in message and "\n" not in message
    assert isinstance(caught.value, UserError)  # the CLI prints it without a traceback


@pytest.mark.parametrize(
    ("op", "value", "passes"),
    [(">=", 0.5, True), (">=", 0.4999, False), (">", 0.5, False), (">", 0.51, True), ("<=", 0.5, True),
     ("<=", 0.51, False), ("<", 0.5, False), ("<", 0.49, True)],
)  # fmt: skip
def test_operators_compare_the_value_with_the_threshold(op: str, value: float, passes: bool) -> None:
    assert Gate("x", "ultralytics.mAP50", op, 0.5).passes(value) is passes


def test_an_unmeasured_metric_never_passes() -> None:
    gate = Gate("recall.crack>=0.1", "recall.crack", ">=", 0.1)
    assert not gate.passes(None) and not gate.passes(math.nan)
    decision = decide([gate], CANDIDATE, None)  # CANDIDATE has no recall.crack
    assert decision.failures == ["gate recall.crack>=0.1: no value (nothing of it in the split) (refused)"]


def test_failing_gates_refuse_with_one_line_each() -> None:
    gates = parse_gates(["recall.scratch>=0.95", "AP50>=0.6", "AP50.crack>0.7"], CLASSES)
    decision = decide(gates, CANDIDATE, None)
    assert not decision.accepted and not decision.compared and decision.regressions == []
    assert decision.failures == [
        "gate recall.scratch>=0.95: 0.912 (refused)",
        "gate AP50.crack>0.7: 0.600 (refused)",
    ]
    assert [r.passed for r in decision.gates] == [False, True, False]
    assert decision.reason == "gate recall.scratch>=0.95: 0.912; gate AP50.crack>0.7: 0.600"


def test_a_value_close_to_its_threshold_is_shown_with_the_digits_that_tell_them_apart() -> None:
    decision = decide(parse_gates(["AP50>=0.6"], CLASSES), {"ultralytics.mAP50": 0.59996}, None)
    assert decision.failures == ["gate AP50>=0.6: 0.59996 (refused)"]


def test_regressions_compare_overall_map50_and_each_class_ap50_against_the_margin() -> None:
    checked = regressions(CANDIDATE, CURRENT, 0.02)
    assert [r.metric for r in checked] == ["ultralytics.mAP50", "AP50.scratch", "AP50.pin_hole", "AP50.crack"]
    assert [r.regressed for r in checked] == [False, True, False, False]  # -0.01, -0.05, +0.01, -0.02 (the margin)
    assert (
        checked[1].line() == "no-regress AP50.scratch: 0.500 vs current 0.550 (-0.050, more than 0.02 worse) (refused)"
    )
    assert [r.regressed for r in regressions(CANDIDATE, CURRENT, 0.0)] == [True, True, False, True]
    assert regressions(CANDIDATE, {"ultralytics.mAP50": 0.9}, 0.5) != []  # a class the current lacks: not compared
    assert [r.metric for r in regressions(CANDIDATE, {"ultralytics.mAP50": 0.9}, 0.5)] == ["ultralytics.mAP50"]


def test_the_decision_with_a_current_model_rows_and_tags() -> None:
    gates = parse_gates(["AP50>=0.05", "recall.scratch>=0.9"], CLASSES)
    decision = decide(gates, CANDIDATE, CURRENT, 0.02)
    assert decision.compared and not decision.accepted
    assert decision.failures == [
        "no-regress AP50.scratch: 0.500 vs current 0.550 (-0.050, more than 0.02 worse) (refused)"
    ]
    rows = {row.metric: row for row in decision.rows}
    assert list(rows) == [
        "ultralytics.mAP50",  # gated first (and shown once although also compared)
        "recall.scratch",
        "ultralytics.mAP50_95",
        "AP50.scratch",
        "AP50.pin_hole",
        "AP50.crack",
    ]
    assert rows["ultralytics.mAP50"].verdict == "gate >=0.05 passed, no-regress 0.02 passed"
    assert rows["AP50.scratch"].verdict == "no-regress 0.02 REFUSED"
    assert rows["ultralytics.mAP50_95"].verdict == ""
    assert rows["recall.scratch"].change == pytest.approx(-0.038)

    tags = decision.tags()
    assert tags["pipeline.promotion.decision"] == "refused"
    assert tags["pipeline.promotion.reason"] == (
        "no-regress AP50.scratch: 0.500 vs current 0.550 (-0.050, more than 0.02 worse)"
    )
    assert tags["pipeline.promotion.gates"] == (
        "gate AP50>=0.05: 0.600 (passed); gate recall.scratch>=0.9: 0.912 (passed)"
    )
    assert tags["pipeline.promotion.no_regress"] == "0.02"
    assert tags["pipeline.promotion.candidate.AP50.scratch"] == "0.5"
    assert tags["pipeline.promotion.current.AP50.scratch"] == "0.55"
    assert tags["pipeline.promotion.current.recall.scratch"] == "0.95"
    assert len(tags) == 4 + 2 * len(decision.rows)  # the table's numbers, nothing else


def test_all_passing_is_accepted_and_says_so() -> None:
    decision = decide(parse_gates(["AP50>=0.05"], CLASSES), CANDIDATE, CURRENT, 0.1)
    assert decision.accepted and decision.failures == [] and decision.reason == "all gates passed"
    assert decision.tags()["pipeline.promotion.decision"] == "accepted"
    without = decide([], CANDIDATE, None, 0.02)  # nothing behind the alias: nothing to regress against
    assert without.accepted and without.regressions == [] and without.tags()["pipeline.promotion.gates"] == "none"
    assert all(row.current is None and row.change is None for row in without.rows)


def test_the_table_has_a_header_and_one_line_per_row() -> None:
    decision = decide(parse_gates(["recall.scratch>=0.95"], CLASSES), CANDIDATE, CURRENT, 0.02)
    lines = format_table(decision.rows, current="v1").splitlines()
    assert lines[0].split() == ["metric", "candidate", "v1", "change", "verdict"]
    assert len(lines) == 1 + len(decision.rows)
    assert lines[1].split() == ["recall.scratch", "0.912", "0.950", "-0.038", "gate", ">=0.95", "REFUSED"]
    assert lines[3].split()[:4] == ["ultralytics.mAP50_95", "0.300", "0.310", "-0.010"]
    alone = format_table(decide([], CANDIDATE, None).rows).splitlines()
    assert alone[1].split() == ["ultralytics.mAP50", "0.600", "-", "-", "-"]

"""Promotion gates: floors a candidate's evaluation must reach, and no class worse than the model it replaces.

Pure: gates parse from ``METRIC>=VALUE`` strings, metrics are `Evaluation.metrics()`' flat dicts
(``ultralytics.mAP50``, ``AP50.<class>``, ``recall.<class>``, ``coco.AP50`` ...), and what comes out is
a `Decision`: each gate's value and verdict, each regression check, the side-by-side rows and the
tags that record it. Nothing here evaluates a model or touches the registry.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from pipeline.messages import UserError

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}
OVERALL_MAP50, OVERALL_MAP50_95 = "ultralytics.mAP50", "ultralytics.mAP50_95"
# The share of good images the candidate's screen rejects: measured by promotion on --good or the split's background
# images at the thresholds calibrated for the candidate (not a key of Evaluation.metrics()).
FALSE_REJECT = "screen.false_reject"
# What a user may write for the overall numbers; the rest are Evaluation.metrics()' own keys.
SHORT_NAMES = {
    "AP50": OVERALL_MAP50,
    "mAP50": OVERALL_MAP50,
    "AP50_95": OVERALL_MAP50_95,
    "mAP50_95": OVERALL_MAP50_95,
    "AP50-95": OVERALL_MAP50_95,
    "mAP50-95": OVERALL_MAP50_95,
    "precision": "ultralytics.precision",
    "recall": "ultralytics.recall",
    "false_reject": FALSE_REJECT,
}
OVERALL = (
    "ultralytics.precision",
    "ultralytics.recall",
    OVERALL_MAP50,
    OVERALL_MAP50_95,
    "coco.AP",
    "coco.AP50",
    "coco.AP75",
    "coco.AP_small",
    "coco.AP_medium",
    "coco.AP_large",
    FALSE_REJECT,
)
# Per-class metrics: "<prefix><class>"; longest first, so "coco.AP50." is not read as "coco.AP" + "50.x".
PER_CLASS = ("coco.AP50.", "coco.AP.", "AP50_95.", "AP50-95.", "AP50.", "precision.", "recall.")
REGRESS_PREFIX = "AP50."  # --no-regress compares every class's AP50, and the overall mAP50
_GATE = re.compile(
    r"^\s*(?P<metric>[^<>=]+?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_EPSILON = 1e-12  # float noise: 0.5 - 0.02 must not refuse a drop of exactly the margin


class GateError(UserError, ValueError):
    """A --gate that cannot be used (it does not parse, or names an unknown metric or class); one line."""


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def shown(value: float | None, near: float | None = None) -> str:
    """A metric as printed: 3 decimals, more when 3 would make it look equal to the threshold it is compared with."""
    if _missing(value):
        return "-"
    digits = 3
    while near is not None and digits < 6 and round(value, digits) == near and value != near:
        digits += 1
    return f"{value:.{digits}f}"


@dataclass(frozen=True)
class Gate:
    text: str  # as the user wrote it, spaces removed: what the refusal line names
    metric: str  # the key in Evaluation.metrics()
    op: str
    threshold: float

    def passes(self, value: float | None) -> bool:
        """A missing value (a class with no object in the split) never passes: a gate unmeasured is not met."""
        return not _missing(value) and OPERATORS[self.op](value, self.threshold)


def metric_key(name: str, classes: Mapping[str, str]) -> str:
    """The `Evaluation.metrics()` key a gate's metric names. ``classes`` maps each class name (and each class's
    key, the name as a key segment) to that key; an unknown metric or class is a GateError."""
    name = name.strip()
    if name in SHORT_NAMES:
        return SHORT_NAMES[name]
    if name in OVERALL:
        return name
    for prefix in PER_CLASS:
        if name.startswith(prefix):
            wanted = name[len(prefix) :].strip()
            if wanted not in classes:
                known = ", ".join(sorted(set(classes.values()))) or "none"
                raise GateError(f"no class {wanted!r} (classes: {known})")
            return f"{prefix.replace('AP50-95', 'AP50_95')}{classes[wanted]}"
    per_class = ", ".join(f"{p}<class>" for p in PER_CLASS if p != "AP50-95.")
    raise GateError(
        f"unknown metric {name!r} (overall: AP50, AP50_95, precision, recall, false_reject, ultralytics.*, coco.*; "
        f"{per_class})"
    )


def parse_gate(text: str, classes: Mapping[str, str]) -> Gate:
    """``recall.scratch>=0.95`` as a Gate; GateError in one line naming the gate when it cannot be used."""
    found = _GATE.match(text)
    if found is None:
        raise GateError(
            f"--gate {text!r}: expected METRIC OP VALUE with OP one of >=, >, <=, <, e.g. 'recall.scratch>=0.95'"
        )
    try:
        metric = metric_key(found["metric"], classes)
    except GateError as exc:
        raise GateError(f"--gate {text!r}: {exc}") from None
    compact = f"{found['metric'].strip()}{found['op']}{found['value']}"
    return Gate(compact, metric, found["op"], float(found["value"]))


def parse_gates(texts: Sequence[str], classes: Mapping[str, str]) -> list[Gate]:
    return [parse_gate(text, classes) for text in texts]


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float | None

    @property
    def passed(self) -> bool:
        return self.gate.passes(self.value)

    def line(self) -> str:
        """``gate recall.scratch>=0.95: 0.912 (refused)``."""
        value = (
            "no value (nothing of it in the split)" if _missing(self.value) else shown(self.value, self.gate.threshold)
        )
        return f"gate {self.gate.text}: {value} ({'passed' if self.passed else 'refused'})"


@dataclass(frozen=True)
class Regression:
    """One --no-regress comparison: the candidate may be at most ``margin`` below the current model."""

    metric: str
    candidate: float
    current: float
    margin: float

    @property
    def regressed(self) -> bool:
        return self.current - self.candidate > self.margin + _EPSILON

    def line(self) -> str:
        """``no-regress AP50.scratch: 0.412 vs current 0.455 (-0.043, more than 0.02 worse) (refused)``."""
        change = self.candidate - self.current
        worse = f"more than {self.margin:g} worse" if self.regressed else f"within {self.margin:g}"
        outcome = "refused" if self.regressed else "passed"
        return (
            f"no-regress {self.metric}: {shown(self.candidate)} vs current {shown(self.current)} "
            f"({change:+.3f}, {worse}) ({outcome})"
        )


def regressions(candidate: Mapping[str, float], current: Mapping[str, float], margin: float) -> list[Regression]:
    """Every comparison --no-regress makes: the overall mAP50 and each class's AP50 that both models have."""
    keys = [OVERALL_MAP50, *(k for k in candidate if k.startswith(REGRESS_PREFIX))]
    return [
        Regression(key, candidate[key], current[key], margin)
        for key in keys
        if not _missing(candidate.get(key)) and not _missing(current.get(key))
    ]


@dataclass(frozen=True)
class Row:
    metric: str
    candidate: float | None
    current: float | None
    verdict: str  # what was checked on this metric and how it came out; "" when it was only shown

    @property
    def change(self) -> float | None:
        if _missing(self.candidate) or _missing(self.current):
            return None
        return self.candidate - self.current


@dataclass
class Decision:
    gates: list[GateResult]
    regressions: list[Regression]  # every comparison made (empty without --no-regress or a current model)
    rows: list[Row]
    margin: float | None = None
    compared: bool = False  # whether there was a current model to compare with
    failures: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.failures = [r.line() for r in self.gates if not r.passed]
        self.failures += [r.line() for r in self.regressions if r.regressed]

    @property
    def accepted(self) -> bool:
        return not self.failures

    @property
    def reason(self) -> str:
        """The failing gates and regressions without their "(refused)", or "all gates passed"."""
        if self.accepted:
            return "all gates passed"
        return "; ".join(line.removesuffix(" (refused)") for line in self.failures)

    def tags(self, prefix: str = "pipeline.promotion") -> dict[str, str]:
        """The decision as registry tags: verdict, reason, each gate with its value, and the numbers of every row."""
        gates = "; ".join(r.line() for r in self.gates) or "none"
        tags = {
            f"{prefix}.decision": "accepted" if self.accepted else "refused",
            f"{prefix}.reason": self.reason,
            f"{prefix}.gates": gates,
            f"{prefix}.no_regress": "off" if self.margin is None else f"{self.margin:g}",
        }
        for row in self.rows:
            for side, value in (("candidate", row.candidate), ("current", row.current)):
                if not _missing(value):
                    tags[f"{prefix}.{side}.{row.metric}"] = f"{value:.6g}"
        return {key: value[:4000] for key, value in tags.items()}  # MLflow's tag values are bounded


def shown_metrics(
    gates: Sequence[Gate], candidate: Mapping[str, float], current: Mapping[str, float] | None
) -> list[str]:
    """The table's metrics: the gated ones first, then the overall mAP50 and mAP50-95, then each class's AP50."""
    per_class = [k for k in (*candidate, *(current or {})) if k.startswith(REGRESS_PREFIX)]
    ordered = [g.metric for g in gates] + [OVERALL_MAP50, OVERALL_MAP50_95] + per_class
    return list(dict.fromkeys(ordered))


def decide(
    gates: Sequence[Gate],
    candidate: Mapping[str, float],
    current: Mapping[str, float] | None,
    margin: float | None = None,
) -> Decision:
    """Check the gates on ``candidate`` and, with a ``margin`` and a ``current`` model, that nothing regressed."""
    results = [GateResult(g, candidate.get(g.metric)) for g in gates]
    compared = regressions(candidate, current, margin) if current is not None and margin is not None else []
    rows = []
    for metric in shown_metrics(gates, candidate, current):
        verdicts = [
            f"gate {r.gate.op}{r.gate.threshold:g} {'passed' if r.passed else 'REFUSED'}"
            for r in results
            if r.gate.metric == metric
        ]
        verdicts += [
            f"no-regress {r.margin:g} {'REFUSED' if r.regressed else 'passed'}" for r in compared if r.metric == metric
        ]
        now = None if current is None else current.get(metric)
        rows.append(Row(metric, candidate.get(metric), now, ", ".join(verdicts)))
    return Decision(results, compared, rows, margin, current is not None)


def format_table(rows: Sequence[Row], current: str = "current") -> str:
    """The side-by-side table, one row per metric: metric | candidate | current | change | verdict."""
    header = ("metric", "candidate", current, "change", "verdict")
    cells = [
        (
            r.metric,
            shown(r.candidate),
            shown(r.current),
            "-" if r.change is None else f"{r.change:+.3f}",
            r.verdict or "-",
        )
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *cells]) for i in range(len(header))]
    lines = []
    for line in [header, *cells]:
        lines.append(
            "  ".join(
                str(cell).ljust(width) if i in (0, 4) else str(cell).rjust(width)
                for i, (cell, width) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    return "\n".join(lines)

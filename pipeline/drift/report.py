"""A drift check's result: one row per test, what ``drift.json`` holds, and the one line a run prints."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.drift.baseline import CALIBRATION, ORIGINS

SHOWN = 4  # drifted checks named in the line; the rest are counted
TOO_FEW = "fewer than"  # how a check skipped for want of samples begins its reason (the line counts those)


@dataclass(frozen=True)
class Check:
    """One test of the current images against the baseline.

    ``name``: ``brightness`` (an input statistic), ``score.<class>`` (the class's scores at its threshold),
    ``rate.<class>`` (the share of images the class fails), ``embeddings``, ``atypical`` (the share of images
    beyond the baseline's own most atypical 5%) or ``neighbours`` (the share of images' nearest neighbours, by their
    statistics, from their own side). ``baseline`` / ``current``: the median (statistics, scores) or the rate
    (shares; for ``neighbours``, its expected value when both sides are alike and the value seen); ``p_holm``:
    ``p`` corrected for all the checks that ran.
    ``skipped``: why the test did not run (too few samples on a side, or nothing to test: one value of a statistic
    on both sides, no fail on either); such a row has no p.
    """

    name: str
    test: str  # "ks", "fisher", "mmd", "knn"
    baseline: float | None
    current: float | None
    n_baseline: int
    n_current: int
    statistic: float | None = None
    p: float | None = None
    p_holm: float | None = None
    drifted: bool = False
    skipped: str = ""

    def describe(self) -> str:
        """How the line names a drifted check: ``brightness 92 -> 141 (p<1e-6)``."""
        p = format_p(self.p_holm if self.p_holm is not None else self.p)
        if self.name == "embeddings":
            return f"embeddings MMD {p}"
        if self.name.startswith("rate."):
            return f"{self.name[5:]} fail rate {_percent(self.baseline)} -> {_percent(self.current)} ({p})"
        if self.name == "neighbours":  # images that are each other's nearest: a group the baseline does not have
            shares = f"{_percent(self.baseline)} -> {_percent(self.current)}"
            return f"a group of like images: own-side neighbours {shares} ({p})"
        if self.name == "atypical":
            return f"atypical images {_percent(self.baseline)} -> {_percent(self.current)} ({p})"
        if self.name.startswith("score."):
            return f"{self.name[6:]} scores {_number(self.baseline)} -> {_number(self.current)} ({p})"
        return f"{self.name} {_number(self.baseline)} -> {_number(self.current)} ({p})"


@dataclass
class DriftReport:
    """Every check, the decision (Holm at family-wise level ``alpha``) and what the two sides were."""

    checks: list[Check]
    alpha: float
    images: int  # the current images
    baseline_images: int
    baseline: dict[str, Any] = field(default_factory=dict)  # the baseline's model, data, split, origin, created, digest
    notes: list[str] = field(default_factory=list)  # what makes the comparison less telling (other thresholds)

    @property
    def drifted(self) -> bool:
        return any(check.drifted for check in self.checks)

    @property
    def ran(self) -> list[Check]:
        return [check for check in self.checks if not check.skipped]

    @property
    def skipped(self) -> list[Check]:
        return [check for check in self.checks if check.skipped]

    def check(self, name: str) -> Check:
        """The row named ``name`` (KeyError when there is none)."""
        for row in self.checks:
            if row.name == name:
                return row
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "drifted": self.drifted,
            "line": self.line(),
            "alpha": self.alpha,
            "correction": "holm",
            "images": self.images,
            "baseline_images": self.baseline_images,
            "baseline": self.baseline,
            "notes": self.notes,
            "checks": [{key: _finite(value) for key, value in asdict(check).items()} for check in self.checks],
        }

    def to_json(self, indent: int | None = 1) -> str:
        """``drift.json``: strict JSON (a value that is not finite is null)."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def write(self, path: str | Path) -> Path:
        """Write ``drift.json`` (``path`` is the file); returns it."""
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def line(self) -> str:
        """One summary line: the drifted checks, most certain first, else how many checks found nothing; a baseline
        a training recorded is named (a calibration's is the usual one)."""
        skipped = sum(check.skipped.startswith(TOO_FEW) for check in self.skipped)
        tail = f"; {skipped} skipped (too few samples)" if skipped else ""
        split = f" ({self.baseline['split']})" if self.baseline.get("split") else ""
        origin = self.baseline.get("origin") or CALIBRATION
        against = f"{ORIGINS.get(origin, ORIGINS[CALIBRATION])}{split}"
        drifted = sorted((c for c in self.checks if c.drifted), key=lambda c: (c.p_holm or 0.0, c.name))
        if not drifted:
            named = f" against {against}" if origin != CALIBRATION else ""
            ran = f"{len(self.ran)} checks (Holm, alpha {self.alpha:g}) on {self.images} images"
            return f"drift: none of {ran}{named}{tail}"
        shown = ", ".join(check.describe() for check in drifted[:SHOWN])
        more = f" and {len(drifted) - SHOWN} more" if len(drifted) > SHOWN else ""
        return f"drift: {shown}{more}: the images are not like {against}{tail}"


def format_p(p: float | None) -> str:
    """``p<1e-6`` below a thousandth (the power of ten above it), else ``p=0.002``."""
    if p is None or not math.isfinite(p):
        return "p=?"
    if p < 1e-3:
        exponent = min(6, math.floor(-math.log10(p)) if p > 0 else 6)
        if 10.0**-exponent <= p:
            exponent -= 1
        return f"p<1e-{exponent}"
    return f"p={p:.2g}"


def _number(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "?"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def _percent(rate: float | None) -> str:
    if rate is None or not math.isfinite(rate):
        return "?"
    percent = 100 * rate
    return f"{percent:.0f}%" if percent >= 10 or percent == 0 else f"{percent:.2g}%"


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value

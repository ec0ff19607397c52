"""A defect screen's operating points: per-class score thresholds, how they were chosen, and screen.json.

`calibrate` chooses the thresholds and writes them; `predict` applies them as its per-class verdict
thresholds (``--threshold`` overrides one class at a time); `evaluate --review` and the promotion gates
read them. One file format for all of them, checked when it is read: a bad file is one line naming it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.messages import UserError

FORMAT = "yolo-pipeline screen 1"
UNCALIBRATED = "uncalibrated"  # a screen with one threshold for every class, no calibration behind it
FILE_NAME = "screen.json"


class ScreenError(UserError, ValueError):
    """A screen file (or stored thresholds) that cannot be used; the message is one line."""


@dataclass(frozen=True)
class ClassPoint:
    """One class's operating point and what it achieves on the calibration split."""

    threshold: float
    target: float | None  # the recall asked for (None when chosen by a false-alarm budget)
    reached: bool  # False: the target recall is above what any threshold gives
    recall: float
    recall_low: float  # the 95% bootstrap interval of the recall at this threshold (images resampled)
    recall_high: float
    precision: float
    fp_per_image: float
    objects: int  # ground-truth objects of the class in the split
    note: str = ""
    false_reject: float | None = None  # good images this class alone rejects at its threshold (None: not known)


@dataclass(frozen=True)
class Screen:
    """What screen.json holds. ``thresholds`` is the one thing predict needs; the rest says where they came from."""

    thresholds: dict[str, float]
    model: str
    data: str
    split: str
    created: str  # ISO 8601, UTC
    mode: str = "recall"  # "recall": per-class recall targets; "fp_budget": --max-fp-per-image; "uncalibrated"
    targets: dict[str, float] = field(default_factory=dict)  # class (or "default") -> target recall
    max_fp_per_image: float | None = None
    model_sha256: str = ""
    data_hash: str = ""
    iou: float = 0.5
    classes: dict[str, ClassPoint] = field(default_factory=dict)
    images: dict[str, Any] = field(default_factory=dict)  # image-level: flagged share, false rejects
    bootstrap: dict[str, Any] = field(default_factory=dict)  # samples, seed, level
    max_false_reject: float | None = None  # the false-reject budget the thresholds were held within (None: none)
    prefer: str = "budget"  # "budget": raise thresholds to keep within it; "recall": keep the targets, report
    false_reject: dict[str, Any] = field(default_factory=dict)  # rate, low, high, how ("measured"/"estimated"), images
    escape: dict[str, Any] = field(default_factory=dict)  # defective images not flagged: rate, low, high, defective
    good: str = ""  # the folder of good images the false-reject rate was measured on (--good), if any
    # What the model saw on the split, for predict's drift check: {"file": name beside screen.json, "sha256", "images"}
    drift_baseline: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1, allow_nan=False)

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(self.to_json() + "\n", encoding="utf-8")
        return path

    def expected_false_reject(self) -> tuple[float, float, float] | None:
        """The false-reject rate calibration found, with its interval: (rate, low, high); None when not known."""
        return expected_rate(self.false_reject)

    def describe(self) -> str:
        """Where the thresholds came from, in a few words: ``calibrated on val of data.yaml (recall >= 0.95)``."""
        if self.mode == UNCALIBRATED:
            return f"not calibrated: one score threshold, {self.thresholds.get('default', 0.25):g}, for every class"
        if self.mode == "fp_budget":
            how = f"at most {self.max_fp_per_image:g} false detections per image"
        else:
            default = self.targets.get("default")
            how = f"recall >= {default:g}" if default is not None else "per-class recall targets"
            if default is not None and len(self.targets) > 1:  # the classes with targets of their own
                how += "; " + ", ".join(f"{k} >= {v:g}" for k, v in self.targets.items() if k != "default")
        if self.max_false_reject is not None and self.prefer == "budget" and self.mode != "fp_budget":
            how += f", false rejects <= {100 * self.max_false_reject:g}%"
        return f"calibrated on {self.split} of {self.data} ({how}, {self.created[:10]})"


FAIL_CHECK_MIN_IMAGES = 30  # fewer: a fail rate says too little to contradict a calibration
FAIL_CHECK_P = 0.001  # a binomial test this sure that the fails exceed what calibration expected of good parts


def expected_rate(found: Any) -> tuple[float, float, float] | None:
    """(rate, low, high) from a stored ``{"rate", "low", "high", ...}``; None when it is not one."""
    found = found if isinstance(found, dict) else {}
    values = [found.get(k) for k in ("rate", "low", "high")]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return None
    return float(found["rate"]), float(found["low"]), float(found["high"])


def unexpected_fails(failed: int, images: int, expected: tuple[float, float, float] | None) -> str:
    """One line when a screen failed far more images than its calibration expected of good parts, else "".

    A one-sided binomial test of ``failed`` of ``images`` against the upper end of the calibration's interval,
    with at least `FAIL_CHECK_MIN_IMAGES` images: a screen whose thresholds sit at the score floor, or images
    unlike the calibration split's, show here rather than as a stopped line."""
    if expected is None or images < FAIL_CHECK_MIN_IMAGES:
        return ""
    from scipy.stats import binomtest

    rate, low, high = expected
    if binomtest(failed, images, min(max(high, 1e-9), 1.0), alternative="greater").pvalue >= FAIL_CHECK_P:
        return ""
    return (
        f"this screen failed {failed} of {images} images ({failed / images:.0%}); its calibration expected "
        f"{rate:.0%} [{low:.0%}, {high:.0%}] of good images to fail: the images differ from the calibration split, "
        "or the screen is wrong"
    )


def check_thresholds(thresholds: Any, where: str) -> dict[str, float]:
    """``{class: score}`` with every score a number in [0, 1], else ScreenError naming ``where``."""
    if not isinstance(thresholds, dict) or not thresholds:
        raise ScreenError(f"{where}: thresholds must be a non-empty mapping of class to score")
    checked: dict[str, float] = {}
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not (0 <= value <= 1) or math.isnan(value):
            raise ScreenError(f"{where}: threshold of {name!r} must be a score in [0, 1], got {value!r}")
        checked[str(name)] = float(value)
    return checked


def screen_from_dict(document: Any, where: str) -> Screen:
    """A Screen from the parsed JSON, checked; ScreenError naming ``where`` and the field."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ScreenError(f"{where}: not a screen file (format must be {FORMAT!r})")
    thresholds = check_thresholds(document.get("thresholds"), where)
    try:
        classes = {str(k): ClassPoint(**v) for k, v in (document.get("classes") or {}).items()}
        known = {k: document[k] for k in Screen.__dataclass_fields__ if k in document}
        return Screen(**{**known, "thresholds": thresholds, "classes": classes})
    except TypeError as exc:
        raise ScreenError(f"{where}: {exc}") from None


def read_screen(path: str | Path) -> Screen:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScreenError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ScreenError(f"{path}: not JSON ({exc})") from None
    return screen_from_dict(document, str(path))


def merged_thresholds(stored: dict[str, float], given: dict[str, float]) -> dict[str, float]:
    """The stored per-class thresholds with the user's ``--threshold`` values laid over them, class by class."""
    return {**stored, **given}

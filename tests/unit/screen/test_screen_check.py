"""`calibrate --check`: the lines a screen checked on another split gets, from hand-made operating points."""

from __future__ import annotations

from pipeline.inference.screen import ClassPoint, Screen
from pipeline.screen.check import shortfalls


def _point(recall: float, low: float, high: float, *, reached: bool = True, objects: int = 50) -> ClassPoint:
    return ClassPoint(0.3, 0.8, reached, recall, low, high, 0.9, 0.1, objects)


def test_only_classes_with_news_get_a_line() -> None:
    calibrated = {
        "held": _point(0.82, 0.70, 0.90),
        "fell": _point(0.81, 0.70, 0.90),
        "never": _point(0.40, 0.30, 0.50, reached=False),
        "absent": _point(0.85, 0.75, 0.95),
    }
    screen = Screen({name: 0.3 for name in calibrated}, "m.pt", "d.yaml", "val", "2026-12-01", classes=calibrated)
    on_test = {
        "held": _point(0.78, 0.66, 0.88),  # below the target, but the interval still holds it: no news
        "fell": _point(0.68, 0.58, 0.77),
        "never": _point(0.45, 0.35, 0.55),
        "absent": _point(0.0, 0.0, 0.0, objects=0),
    }
    assert shortfalls(screen, "test", on_test) == [
        "class fell: recall on test 0.680 [0.580, 0.770] is below its target 0.8 (reached on val: 0.810): "
        "calibrate on more images or aim higher",
        "class never: its target 0.8 was not reached on val either (0.400); on test 0.450 [0.350, 0.550]",
        "class absent: no object in test; its recall there is not measured",
    ]

"""Every benchmark script still imports: they run outside the suite, so a moved name would otherwise go unseen."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "scripts" / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_benchmark_script_imports(name: str) -> None:
    module = importlib.import_module(f"scripts.benchmarks.{name}")
    assert name == "common" or callable(getattr(module, "main", None))


def test_small_defects_options() -> None:
    from scripts.benchmarks import small_defects

    args = small_defects.parse_args([])
    assert (args.sizes, args.imgsz, args.tile, args.defect_size) == ([1024], 320, 320, (8, 40))
    assert args.arms == list(small_defects.ARMS) and small_defects.BASELINE in args.arms
    args = small_defects.parse_args(
        ["--sizes", "1024,2048", "--arms", "whole,tiles", "--defect-size", "8-40", "--imgsz", "640", "--quick"]
    )
    assert (args.sizes, args.arms, args.imgsz, args.boards, args.tile_epochs) == (
        [1024, 2048],
        ["whole", "tiles"],
        640,
        12,
        1,
    )
    for bad in (["--arms", "whole,huge"], ["--imgsz", "300"], ["--defect-size", "8-400"], ["--sizes", "abc"]):
        with pytest.raises(SystemExit):
            small_defects.parse_args(bad)


def test_small_defects_scoring() -> None:
    """Recall per size bucket and AP50 from known boxes: a hit, a miss, a wrong class, a false alarm."""
    from scripts.benchmarks.small_defects import average_precision, score

    truth = {"a": [(0, [0, 0, 10, 10]), (1, [100, 100, 120, 120]), (0, [200, 200, 240, 240])]}
    found = {"a": [(0, 0.9, [0, 0, 10, 10]), (0, 0.8, [100, 100, 120, 120]), (1, 0.5, [300, 300, 320, 320])]}
    scored = score(found, truth, classes=2, conf=0.1)
    assert scored["truths"] == {"<16": 1, "16-32": 1, ">32": 1, "all": 3}
    assert scored["recall"] == {"<16": 1.0, "16-32": 1.0, ">32": 0.0, "all": 2 / 3}  # class-agnostic
    assert scored["recall_with_class"]["16-32"] == 0.0
    assert scored["precision"] == 2 / 3
    assert average_precision(np.array([0.9, 0.8]), np.array([True, False]), 2) == pytest.approx(51 / 101)


def test_small_defects_target_counts_any_recall_over_a_baseline_of_zero() -> None:
    from scripts.benchmarks.small_defects import Outcome, verdict

    def boards(arm: str, small: float, large: float) -> Outcome:
        return Outcome("boards", arm, "m", 320, 0, 1, 1, 1.0, 1.0, 1.0, 1.0, 1.0, 0.1, {"<16": small, ">32": large})

    assert verdict([boards("whole", 0.0, 0.4), boards("tiles", 0.2, 0.4)], {})[0].endswith("target met")
    assert verdict([boards("whole", 0.2, 0.4), boards("tiles", 0.25, 0.5)], {})[0].endswith("NOT met")
    assert verdict([boards("whole", 0.2, 0.4), boards("tiles", 0.4, 0.3)], {})[0].endswith("NOT met")

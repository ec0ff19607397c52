"""The failure zoo's cheap part: real tiny trainings with a fault put in, each named by the gradient doctor
(scripts/benchmarks/diagnosis_zoo.py runs the whole zoo at 128 px)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from scripts.benchmarks.diagnosis_zoo import CASES, judge, train_case

pytestmark = pytest.mark.slow
CHEAP = (
    "dead-layer",
    "nan-in-one-layer",
    "lr-far-too-low",
    "lr-far-too-high",
    "lr-far-too-high-adam",
    "lr-far-too-high-adamw",
    "frozen-backbone",
    "gradient-spike",
    "vanishing-with-depth",
)


@pytest.mark.parametrize("name", CHEAP)
def test_a_fault_of_the_zoo_is_named_with_its_cause(name: str, synth_data: Path, tmp_path: Path) -> None:
    case = next(case for case in CASES if case.name == name)
    # Two epochs suffice but for a learning rate far too high: at 64 px an epoch has two optimizer steps here.
    args = argparse.Namespace(epochs=3 if name == "lr-far-too-high" else 2, imgsz=64, device="cpu")
    diagnosis, failure = train_case(case, synth_data, tmp_path, args)

    passed, verdict, named = judge(case, diagnosis)
    assert passed, (verdict, named, failure)
    expected = next(cause for cause in sorted(case.expect | case.expect_any) if cause in named)
    assert named[expected]["first_epoch"] <= args.epochs
    finding = next(f for f in diagnosis["findings"] if f["cause"] == expected)
    assert finding["remedy"] and finding["message"] and finding["evidence"]
    if name == "dead-layer":  # exactly the block whose gradient was cut, and nothing else
        assert finding["layers"] and all(layer.startswith("model.6.") for layer in finding["layers"])
        assert diagnosis["health"] == "warning"
    if name == "nan-in-one-layer":  # injected in epoch 2 only: epoch 1 was clean
        assert finding["epoch"] == 2 and finding["severity"] == "error" and diagnosis["health"] == "error"
        assert not any(f["cause"] == "nonfinite" for f in diagnosis["epochs"]["1"])
    if name == "frozen-backbone":  # the frozen layers are listed, never judged
        assert finding["evidence"]["config"] > 0 and diagnosis["health"] == "info"
    if name.startswith("lr-far-too-high-adam"):  # named in epoch 1 by itself: no earlier epoch, no rising loss needed
        first = next(f for f in diagnosis["epochs"]["1"] if f["cause"] == "diverging")
        assert first["evidence"]["optimizer"] in {"Adam", "AdamW"} and "beyond healthy" in first["message"]


@pytest.mark.parametrize("name", ["healthy-adamw-warmup"])
def test_a_healthy_run_with_the_largest_sane_steps_raises_nothing(name: str, synth_data: Path, tmp_path: Path) -> None:
    """An explicit AdamW, whose bias warmup starts at lr 0.1: the largest steps the zoo measures on a healthy run.
    Four epochs (three of warmup): at 64 px its loss rises from scratch while the warmup lasts, as a healthy one does."""
    case = next(case for case in CASES if case.name == name)
    diagnosis, failure = train_case(case, synth_data, tmp_path, argparse.Namespace(epochs=4, imgsz=64, device="cpu"))

    passed, verdict, named = judge(case, diagnosis)
    assert failure is None and passed, (verdict, named)
    assert diagnosis["health"] in {"ok", "info"} and "diverging" not in named

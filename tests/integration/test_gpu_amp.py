"""CUDA training with AMP: the recorded gradients are finite and unscaled (skipped without CUDA)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.training import train
from tests.helpers.configs import tiny_config

pytestmark = [pytest.mark.slow, pytest.mark.gpu]


def first_epoch_totals(config) -> dict:
    result = train(config)
    history = (result.save_dir / "gradients" / "history.jsonl").read_text().splitlines()
    return json.loads(history[0])["totals"]


def test_amp_training_records_finite_unscaled_gradients(synth_data: Path, tmp_path: Path) -> None:
    common = {"epochs": 1, "device": "0", "seed": 0, "deterministic": True}
    amp = first_epoch_totals(
        tiny_config(synth_data, tmp_path / "amp", train={**common, "amp": True}, tracking={"enabled": False})
    )
    fp32 = first_epoch_totals(
        tiny_config(synth_data, tmp_path / "fp32", train={**common, "amp": False}, tracking={"enabled": False})
    )
    assert amp["grad_steps"] >= 1 and math.isfinite(amp["grad_total_norm"])
    # A GradScaler's scale starts at 2**16: scaled gradients would be ~65536x the fp32 ones.
    assert 0.2 < amp["grad_total_norm"] / fp32["grad_total_norm"] < 5.0

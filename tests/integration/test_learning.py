"""The synthetic defects are learnable: a short CPU training lifts mAP50 well above its first epoch."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.data.synth import synthesize
from pipeline.train import train
from tests.conftest import tiny_config

pytestmark = pytest.mark.slow


def test_map50_rises_clearly_during_training(tmp_path: Path) -> None:
    data = synthesize(tmp_path / "data", images=400, seed=1, size=64).data_yaml
    config = tiny_config(
        data,
        tmp_path / "runs",
        train={"epochs": 10, "batch": 8, "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0},
        tracking={"enabled": False},
    )
    epochs = train(config).epochs
    map50 = [row["metrics/mAP50(B)"] for row in epochs]
    assert len(map50) == 10
    assert max(map50[-3:]) >= map50[0] + 0.1, map50
    assert map50[-1] > 0.1, map50

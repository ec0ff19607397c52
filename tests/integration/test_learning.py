"""The synthetic defects are learnable: a short CPU training lifts mAP50 well above its first epoch."""

from __future__ import annotations

import pytest

from pipeline.training.run import TrainResult

pytestmark = pytest.mark.slow


def test_map50_rises_clearly_during_training(downscaled_training: TrainResult) -> None:
    # 10 epochs at 64 px on 400 synthetic 128-px images (the training tests/conftest.py shares).
    map50 = [row["metrics/mAP50(B)"] for row in downscaled_training.epochs]
    assert len(map50) == 10
    assert max(map50[-3:]) >= map50[0] + 0.1, map50
    assert map50[-1] > 0.1, map50

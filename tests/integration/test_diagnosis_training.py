"""A tiny healthy training diagnosed: info at most (idle levels named), with the files and tags in the run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.training import train
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow


def test_a_healthy_tiny_training_is_info_at_most_and_names_its_idle_levels(synth_data: Path, tmp_path: Path) -> None:
    config = tiny_config(synth_data, tmp_path / "runs", train={"epochs": 2}, tracking={"system_metrics": False})
    result = train(config)

    diagnosis = json.loads((result.save_dir / "gradients" / "diagnosis.json").read_text())
    assert diagnosis["health"] in {"ok", "info"}, diagnosis["findings"]
    assert all(f["severity"] == "info" for e in diagnosis["epochs"].values() for f in e)
    assert sorted(diagnosis["epochs"]) == ["1", "2"]
    assert "frozen" in diagnosis["causes"]  # ultralytics' DFL decoder, listed and never judged
    assert not {"vanishing", "dead-layer"} & set(diagnosis["causes"])
    # Positives per level were counted for every epoch: 96 training images each.
    for inputs in diagnosis["inputs"].values():
        main = inputs["assignment"][""]
        assert main["strides"] == [8, 16, 32] and main["images"] == 96 and sum(main["positives"]) > 0
        assert main["weight"][0] > 0 and 0 < main["object_size_min"] <= main["object_size_max"] <= 64
        total = sum(main["weight"])  # a level is idle when its positives carry (almost) none of the target score
        idle = [s for s, w in zip(main["strides"], main["weight"], strict=True) if w < 1e-3 * total]
    finding = next((f for f in diagnosis["findings"] if f["cause"] == "idle-level"), None)
    if idle:  # the last epoch's idle levels are named, with the sizes that went elsewhere and the remedies
        assert finding is not None and finding["evidence"]["idle_strides"] == idle and finding["epoch"] == 2
        assert f"stride {idle[0]}" in finding["message"] and "px" in finding["message"]
        assert "-p2" in finding["remedy"] and all(".cv2." in layer for layer in finding["layers"])
    assert result.gradient_health == diagnosis["health"]
    assert result.gradient_findings == diagnosis["findings"]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(result.run_id)
    assert run.data.tags["gradients.health"] == diagnosis["health"]
    assert run.data.tags["gradients.causes"] == ",".join(diagnosis["causes"])
    assert "diagnosis.json" in {Path(a.path).name for a in client.list_artifacts(result.run_id, "gradients")}

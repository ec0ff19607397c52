"""`promote` against a real MLflow server: `best` picks the run with the highest metric, the alias
resolves to its model, the reason is recorded, and `predict` by the alias finds things."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.inference import predict
from pipeline.training.run import train
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "pipeline.cli"]


def test_promote_best_then_predict_by_alias(synth_data: Path, mlflow_server, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b", "c"):
        config = tiny_config(
            synth_data,
            tmp_path / "runs",
            train={"epochs": 1, "name": name},
            tracking={"uri": mlflow_server.uri, "experiment": "promote", "system_metrics": False},
            gradients={"enabled": False},
        )
        runs.append(train(config).run_id)
    client = MlflowClient(mlflow_server.uri)
    for run_id, value in zip(runs, (0.31, 0.52, 0.44), strict=True):
        client.log_metric(run_id, "best.mAP50_95", value, step=1000)  # known values to rank: 1-epoch models score ~0

    common = ["--name", "promoted-defects", "--tracking-uri", mlflow_server.uri]
    best = subprocess.run(
        [*CLI, "promote", "best", "--experiment", "promote", *common], capture_output=True, text=True, timeout=300
    )
    assert best.returncode == 0, best.stderr[-2000:]
    assert (
        f"registered promoted-defects version 1 from run {runs[1]} (best.mAP50_95 0.5200, best of 3 runs)"
        in best.stdout
    )
    version = client.get_model_version_by_alias("promoted-defects", "champion")
    assert version.run_id == runs[1] and version.version == "1"
    assert version.tags["pipeline.metric"] == "best.mAP50_95" and version.tags["pipeline.metric_value"] == "0.52"
    assert set(version.tags["pipeline.compared_runs"].split(",")) == set(runs)
    assert version.tags["pipeline.chosen"].startswith("highest best.mAP50_95 of 3 finished runs")

    found = predict(
        synth_data.parent / "images" / "val",
        "models:/promoted-defects@champion",
        tmp_path / "predicted",
        conf=0.001,
        tracking_uri=mlflow_server.uri,
        progress=False,
    )
    assert found.run_id == runs[1] and found.images == 24 and sum(found.detections.values()) > 0

    named = subprocess.run(
        [*CLI, "promote", runs[0], "--alias", "staging", *common], capture_output=True, text=True, timeout=300
    )
    assert named.returncode == 0, named.stderr[-2000:]
    assert client.get_model_version_by_alias("promoted-defects", "staging").run_id == runs[0]
    assert client.get_model_version_by_alias("promoted-defects", "champion").run_id == runs[1]  # untouched

    missing = subprocess.run(
        [*CLI, "promote", "best", "--experiment", "nowhere", *common], capture_output=True, text=True, timeout=300
    )
    assert missing.returncode == 2 and "experiment 'nowhere': no such experiment" in missing.stderr

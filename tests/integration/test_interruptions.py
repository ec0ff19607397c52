"""Trainings that lose their tracking server, or get killed, and still end with one complete run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.helpers.commands import strip_ansi
from tests.helpers.configs import tiny_config
from tests.helpers.mlflow_server import MlflowServer
from tests.helpers.tracking import EPOCH_METRICS, assert_epochs_exactly_once, per_class_keys

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "pipeline.cli"]


def write_config(path: Path, config) -> Path:
    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    return path


def start_training(config_file: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = open(log, "wb")  # noqa: SIM115 - closed by the process' end
    return subprocess.Popen([*CLI, "train", str(config_file)], stdout=out, stderr=subprocess.STDOUT, env=env)


def wait_for(condition, timeout_s: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.02)
    tail = log.read_text(errors="replace")[-3000:] if log else ""
    raise AssertionError(f"timed out waiting for {what}\n{tail}")


def results_rows(save_dir: Path) -> int:
    csv = save_dir / "results.csv"
    return max(0, len(csv.read_text().splitlines()) - 1) if csv.exists() else 0


def test_server_outage_loses_nothing(synth_data: Path, tmp_path: Path) -> None:
    server = MlflowServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    server.start()
    try:
        config = tiny_config(
            synth_data,
            tmp_path / "runs",
            train={"epochs": 3, "name": "outage"},
            tracking={"uri": server.uri, "experiment": "outage", "finish_timeout_s": 3.0},
        )
        save_dir = tmp_path / "runs" / "outage"
        log = tmp_path / "train.log"
        process = start_training(write_config(tmp_path / "outage.yaml", config), log)
        client = MlflowClient(server.uri)
        spool_state = save_dir / "tracking" / "state.json"

        def epoch_one_on_server() -> bool:
            if not spool_state.exists() or not (run_id := json.loads(spool_state.read_text()).get("run_id")):
                return False
            return len(client.get_metric_history(run_id, "mAP50")) == 1

        wait_for(epoch_one_on_server, 180, "epoch 1 on the server", process, log)
        server.stop()  # the server goes away mid-run

        assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
        assert results_rows(save_dir) == 3  # training went on to the end
        output = log.read_text()
        assert "cannot reach" in output and "yolo-pipeline sync" in output
        run_id = json.loads(spool_state.read_text())["run_id"]

        server.start()  # back again: sync sends what was spooled
        sync = subprocess.run([*CLI, "sync", str(save_dir)], capture_output=True, text=True, timeout=300)
        assert sync.returncode == 0, sync.stdout + sync.stderr
        assert "0 left" in sync.stdout

        client = MlflowClient(server.uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert_epochs_exactly_once(client, run_id, EPOCH_METRICS | per_class_keys(), epochs=3)
        assert "results.csv" in {a.path for a in client.list_artifacts(run_id)}
        assert len(client.search_runs([run.info.experiment_id])) == 1
        # A second sync has nothing left to send and changes nothing.
        again = subprocess.run([*CLI, "sync", str(save_dir)], capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "sent 0 records, 0 left" in again.stdout
        assert_epochs_exactly_once(client, run_id, {"mAP50", "val.box_loss"}, epochs=3)
    finally:
        server.stop()


def test_killed_training_resumes_into_the_same_run(synth_data: Path, mlflow_server, tmp_path: Path) -> None:
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 3, "name": "killed"},
        augment={
            "albumentations": [{"transform": "VerticalFlip", "p": 0.5}, {"transform": "RandomRotate90"}],
            "symmetry": 0.5,
        },
        tracking={"uri": mlflow_server.uri, "experiment": "resume"},
    )
    save_dir = tmp_path / "runs" / "killed"
    log = tmp_path / "train.log"
    process = start_training(write_config(tmp_path / "killed.yaml", config), log)
    # last.pt appears when epoch 1 is checkpointed; killing then lands in epoch 2.
    wait_for(lambda: (save_dir / "weights" / "last.pt").exists(), 180, "epoch 1's checkpoint", process, log)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert results_rows(save_dir) == 1, "the kill should land in epoch 2"

    run_id = json.loads((save_dir / "tracking" / "state.json").read_text())["run_id"]
    resumed = subprocess.run(
        [*CLI, "resume", run_id, "--project", str(tmp_path / "runs")], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert run_id in resumed.stdout

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert_epochs_exactly_once(client, run_id, EPOCH_METRICS | per_class_keys(), epochs=3)
    assert run.data.tags.get("pipeline.resumed") == "true"
    assert results_rows(save_dir) == 3
    # The resumed epochs ran the configured albumentations pipeline: ultralytics restores it from the checkpoint.
    resumed_log = strip_ansi(resumed.stdout + resumed.stderr)
    assert "albumentations: VerticalFlip(p=0.5), RandomRotate90(p=0.5)" in resumed_log
    assert "symmetry: RandomSquareSymmetry(p=0.5)" in resumed_log

    again = subprocess.run([*CLI, "resume", str(save_dir)], capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "already finished" in again.stderr


def test_server_unreachable_from_the_start(synth_data: Path, tmp_path: Path) -> None:
    """No server at all during training: the run is created and filled by `sync` once one answers (the drift
    baseline too, which the training kept beside best.pt all the same)."""
    server = MlflowServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 2, "name": "offline", "drift_baseline": True},
        tracking={"uri": server.uri, "experiment": "offline", "finish_timeout_s": 2.0},
    )
    from pipeline.drift import DIGEST_TAG, FILENAME, Baseline
    from pipeline.training import train

    result = train(config)
    assert result.run_id is None and result.pending_records > 0
    assert len(result.epochs) == 2 and (result.save_dir / "weights" / "best.pt").is_file()
    digest = Baseline.load(result.save_dir / "weights" / FILENAME).digest()

    server.start()
    try:
        sync = subprocess.run(
            [*CLI, "sync", "--project", str(tmp_path / "runs")], capture_output=True, text=True, timeout=300
        )
        assert sync.returncode == 0, sync.stdout + sync.stderr
        run_id = json.loads((result.save_dir / "tracking" / "state.json").read_text())["run_id"]
        assert run_id and f"run {run_id}: sent {result.pending_records} records, 0 left" in sync.stdout
        client = MlflowClient(server.uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "2"
        assert_epochs_exactly_once(client, run_id, EPOCH_METRICS | per_class_keys(), epochs=2)
        assert "config.yaml" in {a.path for a in client.list_artifacts(run_id)}
        assert run.data.tags[DIGEST_TAG] == digest and client.list_artifacts(run_id, "drift")
        from pipeline.tracking import load_model

        assert load_model(f"runs:/{run_id}/model", server.uri) is not None
    finally:
        server.stop()

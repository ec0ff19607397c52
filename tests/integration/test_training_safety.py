"""Trainings that nothing costs: a store made by two processes at once, a tracking that cannot start, a resume
after a kill between the results row and the checkpoint or in the final validation, sparse gradient sampling,
credentials in the URI."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow
CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")

_OPEN_STORE = """
import sys, time
from pathlib import Path
from pipeline.tracking.store import get_or_create_experiment, new_client
uri, go = sys.argv[1], Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
client = new_client(uri)
print(get_or_create_experiment(client, "shared", uri))
"""


def test_two_processes_create_a_new_sqlite_store_at_once(tmp_path: Path) -> None:
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path / f'mlflow-{attempt}.db'}"
        go = tmp_path / f"go-{attempt}"
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", _OPEN_STORE, uri, str(go)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        time.sleep(4)  # both have imported mlflow and wait at the start line
        go.touch()
        results = [(p.wait(timeout=120), *p.communicate()) for p in processes]
        assert all(code == 0 for code, _, _ in results), [err[-2000:] for _, _, err in results]
        assert len({out.strip() for _, out, _ in results}) == 1  # one experiment, found by the other


def test_a_tracking_that_cannot_start_costs_nothing(synth_data: Path, tmp_path: Path) -> None:
    """The store cannot even be opened: the training trains, every record waits in the spool.
    With gradients.every far above an epoch's steps, every epoch still has its gradient statistics."""
    from pipeline.tracking.spool import Spool
    from pipeline.training import train

    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 2, "name": "untracked"},
        gradients={"every": 1000, "heatmaps": False},
        tracking={"uri": "nosuch://nowhere", "system_metrics": False, "finish_timeout_s": 1.0},
    )
    result = train(config)
    assert len(result.epochs) == 2 and result.best_weights is not None
    assert result.run_id is None and result.pending_records > 0
    spool = Spool(result.save_dir / "tracking")
    assert spool.records("create_run") and spool.records("params")
    epochs = [r for r in spool.records("metrics") if "mAP50" in r["metrics"]]
    assert [r["step"] for r in epochs] == [1, 2]
    assert all(r["metrics"]["grad_steps"] == 1.0 and "grad_total_norm" in r["metrics"] for r in epochs)
    history = (result.save_dir / "gradients" / "history.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in history] == [1, 2]


class Killed(BaseException):
    """Stands for a kill: raised where a real one is most awkward."""


def test_resume_keeps_each_epoch_once_in_results(synth_data: Path, tmp_path: Path, monkeypatch) -> None:
    """Killed after epoch 2's results row but before its checkpoint: epoch 2 is redone, and listed once."""
    from pipeline.training import resume, train
    from pipeline.training.trainer import PipelineTrainer

    save_model = PipelineTrainer.save_model

    def killed_at_epoch_2(self: PipelineTrainer) -> bool:
        if self.epoch == 1:
            raise Killed
        return save_model(self)

    config = tiny_config(
        synth_data, tmp_path / "runs", train={"epochs": 3, "name": "redo"}, tracking={"enabled": False}
    )
    monkeypatch.setattr(PipelineTrainer, "save_model", killed_at_epoch_2)
    with pytest.raises(Killed):
        train(config)
    monkeypatch.setattr(PipelineTrainer, "save_model", save_model)
    save_dir = tmp_path / "runs" / "redo"
    rows = (save_dir / "results.csv").read_text().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [1, 2]  # epoch 2's row, without its checkpoint

    result = resume(str(save_dir))
    rows = (save_dir / "results.csv").read_text().splitlines()[1:]
    assert [int(float(r.split(",")[0])) for r in rows] == [1, 2, 3]
    assert [int(e["epoch"]) for e in result.epochs] == [1, 2, 3]


_KILLED_IN_THE_FINAL_VALIDATION = """
import os, signal, sys
from pipeline.config import load_config
from pipeline.training import train
from pipeline.training.trainer import PipelineTrainer
PipelineTrainer.final_eval = lambda self: os.kill(os.getpid(), signal.SIGKILL)
train(load_config(sys.argv[1]))
"""


def test_resume_after_a_kill_in_the_final_validation_trains_nothing_again(synth_data: Path, tmp_path: Path) -> None:
    """SIGKILL after the last epoch's checkpoint: resume validates best.pt, logs the model and ends the run."""
    from mlflow.tracking import MlflowClient

    from pipeline.checkpoints import read_checkpoint
    from pipeline.training import resume

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 2, "name": "final"},
        gradients={"heatmaps": False},
        tracking={"uri": uri, "system_metrics": False},
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config.to_dict()), encoding="utf-8")
    killed = subprocess.run([sys.executable, "-c", _KILLED_IN_THE_FINAL_VALIDATION, str(path)], timeout=600)
    assert killed.returncode == -signal.SIGKILL
    save_dir = tmp_path / "runs" / "final"
    assert read_checkpoint(save_dir / "weights" / "last.pt", "test")["epoch"] == 1  # both epochs, not stripped

    result = resume(str(save_dir), tracking_uri=uri)
    assert result.notes == ["all 2 epochs were trained; finished the final validation"]
    assert [int(e["epoch"]) for e in result.epochs] == [1, 2] and result.pending_records == 0
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["pipeline.resumed"] == "true"
    assert [m.step for m in client.get_metric_history(result.run_id, "val.box_loss")] == [1, 2]  # each once
    assert [m.step for m in client.get_metric_history(result.run_id, "best.mAP50_95")] == [2]
    assert "model/MLmodel" in {a.path for a in client.list_artifacts(result.run_id, "model")}
    assert read_checkpoint(save_dir / "weights" / "last.pt", "test").get("optimizer") is None  # stripped now
    report = json.loads((save_dir / "gradients" / "report.json").read_text())  # written at the end, by the resume
    assert report["epochs"] == [1, 2]
    assert "report.json" in {Path(a.path).name for a in client.list_artifacts(result.run_id, "gradients")}


def test_credentials_in_the_uri_are_recorded_nowhere(
    synth_data: Path, mlflow_server, tmp_path: Path, monkeypatch, capfd
) -> None:
    import yaml
    from mlflow.tracking import MlflowClient

    from pipeline.cli import main

    for name in CREDENTIAL_VARIABLES:
        monkeypatch.setenv(name, "")  # so that the test's end puts back what was there before
        monkeypatch.delenv(name)
    secret = "s3cret"
    uri = mlflow_server.uri.replace("http://", f"http://user:{secret}@")
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 1, "name": "secret"},
        tracking={"experiment": "credentials", "system_metrics": False},
    ).to_dict()
    config["tracking"]["uri"] = uri
    config_file = tmp_path / "secret.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")

    assert main(["train", str(config_file)]) == 0
    out, err = capfd.readouterr()
    assert secret not in out + err
    save_dir = tmp_path / "runs" / "secret"
    state = json.loads((save_dir / "tracking" / "state.json").read_text())
    assert state["uri"] == mlflow_server.uri and state["run_id"]

    client = MlflowClient(mlflow_server.uri)
    run = client.get_run(state["run_id"])
    assert run.info.status == "FINISHED"
    recorded = json.dumps({"params": run.data.params, "tags": run.data.tags})
    assert secret not in recorded and mlflow_server.uri in recorded  # the bare URI is recorded
    downloaded = Path(client.download_artifacts(state["run_id"], "", str(tmp_path / "artifacts")))
    assert any(downloaded.rglob("config.yaml"))
    for folder in (downloaded, save_dir):
        leaks = [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
        assert not leaks, leaks

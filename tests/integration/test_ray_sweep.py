"""`sweep --engine ray` on a real local Ray (this machine's 2 CPUs): 4 tiny trials, 2 at a time.

ASHA stops trials between epochs (their runs end KILLED with every epoch they trained), a trial that
fails is recorded FAILED while the others finish, and a sweep killed with SIGKILL continues with the
same command: the finished child is not trained again, the half-finished one resumes into its own run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.comparison import compare
from pipeline.promotion.promotion import promote
from tests.helpers.configs import tiny_config

pytest.importorskip("ray.tune")
pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "pipeline.cli"]
# SGD with no warmup: lr0 acts from the first step (ultralytics' "auto" optimizer would choose its own lr0)
COMMON = ["train.optimizer=SGD", "train.warmup_epochs=0", "train.epochs=3"]


def _config_file(data: Path, tmp_path: Path, uri: str, experiment: str) -> Path:
    config = tiny_config(
        data,
        tmp_path / "runs",
        tracking={"uri": uri, "experiment": experiment, "system_metrics": False},
        gradients={"enabled": False},
    )
    raw = config.to_dict()
    raw["augment"] = {"mosaic": 0.0, "close_mosaic": 0}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _children(client: MlflowClient, experiment: str) -> tuple[object, list]:
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=50)
    parent = next(r for r in runs if r.data.tags.get("pipeline.kind") == "sweep")
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def _epochs(client: MlflowClient, run_id: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, "val.box_loss"))


def _run(command: list[str], timeout: int) -> tuple[subprocess.CompletedProcess, int]:
    """The command's result, and its pid: a local Ray's session folder is named after its driver's pid."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as process:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    return subprocess.CompletedProcess(command, process.returncode, out, err), process.pid


def _no_ray_left(*drivers: int) -> None:
    """No Ray service (GCS, raylet) of the sessions these processes started is left. Another test's Ray (on
    another pytest-xdist worker) is not theirs: its session folder ends with another driver's pid."""
    import psutil

    ours = re.compile(rf"session_\S*_({'|'.join(map(str, drivers))})\b")
    leftover = [
        p.info["name"]
        for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] in {"raylet", "gcs_server"} and ours.search(" ".join(p.info["cmdline"] or []))
    ]
    assert not leftover, leftover


def test_asha_stops_weak_trials_between_epochs_on_sqlite(synth_data: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # one file shared by the two trials running at once
    config = _config_file(synth_data, tmp_path, uri, "asha")
    # Measured on this data: after epoch 1 the two small learning rates have the lower val.box_loss; they run
    # first, so the later two meet a rung holding better values and ASHA (reduction factor 2) stops them.
    grid = "train.lr0=0.00001,0.000001,0.02,0.05"
    done, driver = _run(
        [*CLI, "sweep", str(config), *COMMON, "--engine", "ray", "--parallel", "2", "--grid", grid]
        + ["--early-stop", "asha", "--metric", "val.box_loss", "--grace", "1", "--name", "asha"],
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    client = MlflowClient(uri)
    parent, children = _children(client, "asha")
    assert len(children) == 4
    stopped = [c for c in children if c.info.status == "KILLED"]
    finished = [c for c in children if c.info.status == "FINISHED"]
    assert len(stopped) >= 1 and len(stopped) + len(finished) == 4
    for child in stopped:  # stopped after the rung at epoch 1 (or 2), every epoch it trained in MLflow once
        assert child.data.tags["pipeline.stopped_by"] == "asha"
        assert _epochs(client, child.info.run_id) in ([1], [1, 2])
    for child in finished:
        assert _epochs(client, child.info.run_id) == [1, 2, 3] and "best.mAP50_95" in child.data.metrics
        assert "pipeline.stopped_by" not in child.data.tags
    assert {c.data.tags["pipeline.sweep.combination"] for c in children} == {
        f"train.lr0={v}" for v in grid.partition("=")[2].split(",")
    }
    assert all(c.data.params["train.optimizer"] == "SGD" for c in children)
    p = parent.data
    assert parent.info.status == "FINISHED" and p.params["engine"] == "ray" and p.params["scheduler"] == "asha"
    assert p.params["search"] == "grid" and p.params["grid.train.lr0"] == grid.partition("=")[2]
    assert p.params["metric"] == "val.box_loss" and p.params["grace"] == "1" and p.params["parallel"] == "2"
    assert p.metrics["children.total"] == 4 and p.metrics["children.stopped"] == len(stopped)
    assert p.metrics["children.finished"] == len(finished) and p.metrics["children.failed"] == 0
    assert p.tags["pipeline.best_child"] in {c.info.run_id for c in finished}
    assert f"{len(stopped)} stopped early" in done.stdout

    table = compare(parent=parent.info.run_id, tracking_uri=uri)  # unchanged on a Ray sweep
    assert len(table.runs) == 4 and table.table.params == ["train.lr0"]
    promoted = promote("best", name="asha-model", parent=parent.info.run_id, tracking_uri=uri)
    assert promoted.run_id in {c.info.run_id for c in finished}  # a stopped trial is never the best
    _no_ray_left(driver)


def _wait_for(condition, timeout_s: float, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.5)
    raise AssertionError("the sweep did not get there in time")


def test_failed_trial_recorded_and_killed_sweep_resumes(synth_data: Path, mlflow_server, tmp_path: Path) -> None:
    config = _config_file(synth_data, tmp_path, mlflow_server.uri, "resume")
    missing = tmp_path / "elsewhere" / "data.yaml"
    # (1 epoch, good) finishes first; (4 epochs, good) is killed mid-way; both trials on `missing` fail
    command = [*CLI, "sweep", str(config), *COMMON, "--engine", "ray", "--parallel", "2", "--name", "resume"]
    command += ["--grid", "train.epochs=1,4", "--grid", f"data.path={synth_data},{missing}"]
    client = MlflowClient(mlflow_server.uri)

    def runs() -> list:
        experiment = client.get_experiment_by_name("resume")
        return client.search_runs([experiment.experiment_id]) if experiment else []

    def killable() -> bool:  # the 1-epoch child finished, the 4-epoch one has an epoch in MLflow and goes on
        by = {r.data.tags.get("pipeline.sweep.combination", ""): r for r in runs()}
        short = by.get(f"train.epochs=1 data.path={synth_data}")
        long = by.get(f"train.epochs=4 data.path={synth_data}")
        return bool(short and short.info.status == "FINISHED" and long and _epochs(client, long.info.run_id))

    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for(killable, 600, first)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the sweep, its Ray and its trials
        first.communicate()
    _, before = _children(client, "resume")
    long_run = next(
        r for r in before if r.data.tags["pipeline.sweep.combination"] == f"train.epochs=4 data.path={synth_data}"
    )
    assert long_run.info.status == "RUNNING" and len(_epochs(client, long_run.info.run_id)) < 4

    again, driver = _run(command, timeout=900)
    assert again.returncode == 1, again.stderr[-3000:]  # two children failed
    assert "continuing the unfinished sweep" in again.stderr and "Traceback" not in again.stderr
    parent, children = _children(client, "resume")
    by = {}
    for child in children:
        by.setdefault(child.data.tags["pipeline.sweep.combination"], []).append(child)
    assert sorted(map(len, by.values())) == [1, 1, 1, 1]  # nothing trained or recorded twice
    short = by[f"train.epochs=1 data.path={synth_data}"][0]
    long = by[f"train.epochs=4 data.path={synth_data}"][0]
    assert short.info.status == "FINISHED" and _epochs(client, short.info.run_id) == [1]
    assert long.info.run_id == long_run.info.run_id  # resumed into its own run
    assert long.info.status == "FINISHED", (long.data.tags.get("pipeline.error"), again.stderr[-3000:])
    assert _epochs(client, long.info.run_id) == [1, 2, 3, 4] and long.data.tags["pipeline.resumed"] == "true"
    for epochs in (1, 4):
        failed = by[f"train.epochs={epochs} data.path={missing}"][0]
        assert failed.info.status == "FAILED"
        assert failed.data.tags["pipeline.error"] == f"DatasetError: data.path: {missing}: no such file or folder"
    assert parent.info.status == "FINISHED" and parent.data.metrics["children.finished"] == 2
    assert parent.data.metrics["children.failed"] == 2 and parent.data.metrics["children.total"] == 4
    assert "sweep: 2 of 4 children finished, 2 failed" in again.stdout

    resumed = subprocess.run(
        [*CLI, "sweep", "--resume", parent.info.run_id, "--tracking-uri", mlflow_server.uri],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 2 and resumed.stderr.strip().endswith("this sweep finished; nothing to resume")
    _no_ray_left(first.pid, driver)


def test_optuna_numbers_its_trials_and_draws_within_the_space(synth_data: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = _config_file(synth_data, tmp_path, uri, "optuna")
    done = subprocess.run(
        [*CLI, "sweep", str(config), *COMMON, "train.epochs=1", "--engine", "ray", "--parallel", "2"]
        + ["--search", "optuna", "--samples", "2", "--seed", "1", "--space", "train.lr0=loguniform(1e-4,1e-1)"]
        + ["--grid", "model.freeze=null,10", "--metric", "val.box_loss", "--name", "optuna"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(uri)
    parent, children = _children(client, "optuna")
    assert sorted(c.data.tags["pipeline.sweeps.index"] for c in children) == ["0", "1"]  # Optuna's own numbering
    for child in children:
        assert child.info.status == "FINISHED" and 1e-4 <= float(child.data.params["train.lr0"]) <= 1e-1
        assert child.data.params["model.freeze"] in {"None", "10"}
        lr0 = child.data.params["train.lr0"]
        assert child.data.tags["pipeline.sweep.combination"].startswith(f"train.lr0={lr0} model.freeze=")
    p = parent.data.params
    assert p["search"] == "optuna" and p["space.train.lr0"] == "loguniform(0.0001,0.1)"
    assert p["space.model.freeze"] == "choice(null,10)" and p["samples"] == "2" and p["seed"] == "1"
    assert parent.data.metrics["children.finished"] == 2

"""The Tracker (pipeline/tracking/tracker.py) against a local SQLite store (no server), and offline against a closed port."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.tracking import Tracker, resolve_tracking_uri
from pipeline.tracking.spool import STATE, Spool

CLOSED_PORT_URI = "http://127.0.0.1:9"
_CLIENT_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture(autouse=True)
def _isolated_client_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tracker sets MLflow's HTTP env vars with setdefault; start each test without them and remove them after."""
    for name in _CLIENT_ENV:
        monkeypatch.setenv(name, "placeholder")  # recorded, so teardown restores the original (unset) state
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its tables made (that takes seconds), copied by each test that needs one."""
    path = tmp_path_factory.mktemp("template-db") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


def fresh_db(folder: Path, empty_db: Path) -> str:
    """A private copy of the empty database in ``folder``; returns its URI (artifacts go to ``folder/mlruns``)."""
    shutil.copyfile(empty_db, folder / "mlflow.db")
    return f"sqlite:///{folder}/mlflow.db"


@pytest.fixture
def uri(tmp_path: Path, empty_db: Path) -> str:
    return fresh_db(tmp_path, empty_db)


def log_a_run(folder: Path, uri: str) -> Tracker:
    """One run logged through a Tracker and finished: tag, two params, two metric steps, one artifact."""
    artifact = folder / "notes.txt"
    artifact.write_text("hello")
    tracker = Tracker(folder / "spool", uri, "exp", "run1", flush_interval_s=0.2)
    tracker.start(tags={"a": "b"})
    tracker.log_params({"train.epochs": 2, "model.weights": "yolo11n.yaml"})
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.log_metrics({"loss": 0.5}, step=2)
    tracker.log_artifact(artifact)
    assert tracker.finish(timeout_s=60) is True
    return tracker


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory, empty_db: Path) -> Iterator[tuple[Tracker, str, Path]]:
    """A finished run for the tests that only read it (logged once per module)."""
    folder = tmp_path_factory.mktemp("shared-run")
    with pytest.MonkeyPatch.context() as monkeypatch:
        for name in _CLIENT_ENV:
            monkeypatch.setenv(name, "placeholder")
            monkeypatch.delenv(name)
        uri = fresh_db(folder, empty_db)
        tracker = log_a_run(folder, uri)
    yield tracker, uri, folder


@pytest.fixture
def finished_run(tmp_path: Path, uri: str) -> Tracker:
    """A finished run of this test's own, for tests that change its spool or log more."""
    return log_a_run(tmp_path, uri)


def loss_steps(client: MlflowClient, run_id: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "loss"))


def test_default_uri_is_sqlite_in_the_working_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri("") == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert resolve_tracking_uri("http://x") == "http://x"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env")
    assert resolve_tracking_uri("") == "http://env"


def test_records_reach_the_store(shared_run: tuple[Tracker, str, Path]) -> None:
    finished_run, uri, _ = shared_run
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(finished_run.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run1"
    assert run.data.tags["a"] == "b"
    assert run.data.params == {"train.epochs": "2", "model.weights": "yolo11n.yaml"}
    assert loss_steps(client, finished_run.run_id) == [(1, 1.0), (2, 0.5)]
    assert run.data.metrics["loss"] == 0.5
    assert [a.path for a in client.list_artifacts(finished_run.run_id)] == ["notes.txt"]
    experiment = client.get_experiment_by_name("exp")
    assert experiment is not None and run.info.experiment_id == experiment.experiment_id


def test_artifact_content_and_local_layout(shared_run: tuple[Tracker, str, Path], tmp_path: Path) -> None:
    finished_run, uri, folder = shared_run
    client = MlflowClient(tracking_uri=uri)
    local = Path(client.download_artifacts(finished_run.run_id, "notes.txt", str(tmp_path / "dl")))
    assert local.read_text() == "hello"
    # artifacts of a SQLite store live in mlruns/ beside the database
    assert list((folder / "mlruns").rglob("notes.txt"))


def test_spool_is_drained_after_finish(shared_run: tuple[Tracker, str, Path]) -> None:
    finished_run, _, folder = shared_run
    spool = Spool(folder / "spool")
    assert spool.pending() == []
    assert spool.state["run_id"] == finished_run.run_id
    assert spool.state["acked"] == len(spool.records())
    assert list((folder / "spool" / "files").iterdir()) == []  # spooled copies deleted once acknowledged


def test_replay_after_lost_acknowledgements_is_idempotent(finished_run: Tracker, uri: str, tmp_path: Path) -> None:
    run_id = finished_run.run_id
    finished_run.spool.update_state(acked=0)

    again = Tracker(tmp_path / "spool", uri, "exp", "run1", flush_interval_s=0.2)
    assert again.run_id == run_id
    again.send_pending()

    client = MlflowClient(tracking_uri=uri)
    assert loss_steps(client, run_id) == [(1, 1.0), (2, 0.5)]
    experiment_id = client.get_experiment_by_name("exp").experiment_id
    runs = client.search_runs([experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2"


def test_replay_after_lost_acknowledgements_drains_the_spool(finished_run: Tracker, uri: str, tmp_path: Path) -> None:
    finished_run.spool.update_state(acked=0)
    again = Tracker(tmp_path / "spool", uri, "exp", "run1", flush_interval_s=0.2)
    again.send_pending()
    assert again.last_error is None
    assert again.spool.pending() == []


def test_resumed_tracker_keeps_its_run(finished_run: Tracker, uri: str, tmp_path: Path) -> None:
    """A second Tracker on the same spool logs into the same run, even with other arguments."""
    again = Tracker(tmp_path / "spool", "sqlite:///elsewhere.db", "other", "run1", flush_interval_s=0.2)
    assert again.uri == uri and again.experiment == "exp"
    again.start(tags={"resumed": "yes"})
    again.log_metrics({"loss": 0.25}, step=3)
    assert again.finish(timeout_s=60) is True

    client = MlflowClient(tracking_uri=uri)
    assert loss_steps(client, finished_run.run_id) == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert client.get_run(finished_run.run_id).data.tags["resumed"] == "yes"
    assert len(client.search_runs([client.get_experiment_by_name("exp").experiment_id])) == 1
    assert not (tmp_path / "elsewhere.db").exists()


def test_many_metrics_are_split_into_batches(tmp_path: Path, uri: str) -> None:
    tracker = Tracker(tmp_path / "spool", uri, "exp", "big", flush_interval_s=0.2)
    tracker.start()
    for step in range(3):
        tracker.log_metrics({f"m{i}": float(i + step) for i in range(600)}, step=step)
    assert tracker.finish(timeout_s=60) is True
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(tracker.run_id)
    assert len(run.data.metrics) == 600
    assert [m.step for m in client.get_metric_history(tracker.run_id, "m599")] == [0, 1, 2]


def test_offline_tracker_spools_and_reports_failure(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "spool", CLOSED_PORT_URI, "exp", "run1", flush_interval_s=0.2, request_timeout_s=1)
    tracker.start(tags={"a": "b"})
    started = time.monotonic()
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.log_metrics({"loss": 0.5}, step=2)
    assert time.monotonic() - started < 5  # journaled, not sent: no waiting on the server
    assert tracker.finish(timeout_s=2) is False

    assert tracker.run_id is None
    assert tracker.last_error is not None and "\n" not in tracker.last_error
    state = json.loads((tmp_path / "spool" / STATE).read_text())
    assert state["run_id"] is None
    assert state["acked"] == 0
    assert state["uri"] == CLOSED_PORT_URI
    pending = Spool(tmp_path / "spool").pending()
    assert [r["kind"] for r in pending] == ["create_run", "metrics", "metrics", "end"]
    assert [r["step"] for r in pending if r["kind"] == "metrics"] == [1, 2]


def test_offline_spool_is_sent_later_by_a_new_tracker(tmp_path: Path, uri: str) -> None:
    """Records kept while the server was away go to the run once a store answers (here: the spool is re-pointed)."""
    tracker = Tracker(tmp_path / "spool", CLOSED_PORT_URI, "exp", "run1", flush_interval_s=0.2, request_timeout_s=1)
    tracker.start()
    tracker.log_metrics({"loss": 1.0}, step=1)
    assert tracker.finish(timeout_s=1) is False

    Spool(tmp_path / "spool").update_state(uri=uri)
    later = Tracker(tmp_path / "spool", "", "", flush_interval_s=0.2)
    assert later.send_pending() == 3
    assert later.spool.pending() == []
    client = MlflowClient(tracking_uri=uri)
    assert loss_steps(client, later.run_id) == [(1, 1.0)]
    assert client.get_run(later.run_id).info.status == "FINISHED"


def test_tracker_sets_fail_fast_http_settings(tmp_path: Path) -> None:
    Tracker(tmp_path / "spool", CLOSED_PORT_URI, "exp", request_timeout_s=3)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
    assert float(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) == 3


def test_sub_second_request_timeout_stays_positive(tmp_path: Path) -> None:
    Tracker(tmp_path / "spool", CLOSED_PORT_URI, "exp", request_timeout_s=0.5)
    assert float(os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"]) > 0


def test_a_refused_record_is_set_aside_and_the_rest_goes_through(tmp_path: Path, uri: str) -> None:
    tracker = Tracker(tmp_path / "spool", uri, "exp", "run1", flush_interval_s=0.2)
    tracker.open_run()
    tracker.log_params({"lr": "0.1"})
    assert tracker.send_pending() == 2  # the run's creation and the param
    tracker.start()
    tracker.log_params({"lr": "0.2"})  # MLflow refuses to change a param: resending cannot help
    tracker.log_metrics({"loss": 1.0}, step=1)  # journaled beside it, so both may go in one batch
    tracker.log_params({"batch": "16"})
    assert tracker.finish(timeout_s=60) is True

    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    assert run.data.params == {"lr": "0.1", "batch": "16"} and run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == [1]
    refused = [json.loads(line) for line in (tmp_path / "spool" / "refused.jsonl").read_text().splitlines()]
    assert len(refused) == 1 and refused[0]["params"] == {"lr": "0.2"} and refused[0]["refused_because"]


def test_a_refused_batch_sets_aside_only_the_refused_record(tmp_path: Path, uri: str) -> None:
    tracker = Tracker(tmp_path / "spool", uri, "exp", "run1")
    tracker.open_run()
    tracker.log_params({"lr": "0.1"})
    tracker.send_pending()
    # Journaled together, without a worker: one log_batch carries all three, and the server refuses it.
    tracker.log_metrics({"loss": 1.0}, step=1)
    tracker.log_params({"lr": "0.2"})
    tracker.log_metrics({"loss": 0.5}, step=2)
    tracker.send_pending()
    assert tracker.spool.pending() == []
    client = MlflowClient(uri)
    assert [m.step for m in client.get_metric_history(tracker.run_id, "loss")] == [1, 2]
    refused = [json.loads(line) for line in (tmp_path / "spool" / "refused.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in refused] == ["params"]


def test_finish_waits_while_the_server_keeps_acknowledging(tmp_path: Path, uri: str, monkeypatch) -> None:
    """A slow server that answers every record is waited for past finish's timeout: the timeout is the longest
    silence, not the whole wait (a loaded machine took longer than it to upload a model)."""
    tracker = Tracker(tmp_path / "spool", uri, "exp", "run1", flush_interval_s=0.2)
    tracker.start()
    send = tracker._send_group

    def slow(pending: list) -> int:
        time.sleep(0.3)  # each record answered within the timeout below, all of them far beyond it
        return send(pending)

    monkeypatch.setattr(tracker, "_send_group", slow)
    for i in range(8):  # artifacts: sent one request each
        artifact = tmp_path / f"a{i}.txt"
        artifact.write_text(str(i))
        tracker.log_artifact(artifact)
    while tracker.spool.state.get("acked", 0) < 2:  # the worker is sending: the run, then the first artifact
        time.sleep(0.05)
    started = time.monotonic()  # about 2 s of sending left, in the worker
    assert tracker.finish(timeout_s=1.0) is True and tracker.spool.pending() == []
    assert time.monotonic() - started > 1.0  # it waited past the timeout, as long as records were answered
    client = MlflowClient(uri)
    assert sorted(a.path for a in client.list_artifacts(tracker.run_id)) == [f"a{i}.txt" for i in range(8)]


_KILLED_WHILE_MAKING_THE_SCHEMA = """
import os, signal, sys
import mlflow.store.db.utils as db_utils
from pipeline.tracking.store import new_client
db_utils._upgrade_db = lambda engine: os.kill(os.getpid(), signal.SIGKILL)  # the tables made, the migrations not
new_client("sqlite:///" + sys.argv[1])
"""


def test_a_store_whose_making_was_killed_opens_whole_afterwards(tmp_path: Path) -> None:
    """A process killed while MLflow makes a new SQLite store's schema leaves no half-made store behind: the next
    client makes it whole (MLflow alone leaves a file every later open fails on)."""
    import signal
    import subprocess
    import sys

    from pipeline.tracking.store import new_client

    database = tmp_path / "mlflow.db"
    killed = subprocess.run([sys.executable, "-c", _KILLED_WHILE_MAKING_THE_SCHEMA, str(database)], timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not database.exists() and (tmp_path / "mlflow.db.creating").exists()

    client = new_client(f"sqlite:///{database}")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    experiment = client.create_experiment("after")
    assert client.create_run(experiment).info.status == "RUNNING"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "mlflow.db.lock"]

"""Where tracking goes: the URI (configured, environment, or a SQLite file), clients and experiments."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient


def resolve_tracking_uri(uri: str = "") -> str:
    """The configured URI, else $MLFLOW_TRACKING_URI, else a SQLite file ``mlflow.db`` in the working folder."""
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / 'mlflow.db').resolve()}"


def _local_artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts go to ``mlruns/`` beside the database (MLflow 3's layout), by absolute path."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / "mlruns").resolve().as_uri()
    return None


def get_or_create_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment called ``name``, created (artifacts beside a SQLite store) when there is none."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=_local_artifact_root(uri))


@contextmanager
def first_use_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, an exclusive lock on ``<db>.lock`` beside it; for any other store, nothing.

    MLflow creates a new SQLite file's schema when a client first connects, with no lock: two processes
    starting at once on a new ``mlflow.db`` both create the tables, and one fails (``table runs already
    exists``). Holding this lock around the first connection makes the second wait and find the tables made.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, as MLflow itself does there
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    with open(database.with_name(database.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def new_client(uri: str) -> MlflowClient:
    """A client on ``uri`` (resolved already) whose store is made under `first_use_lock`, whole or not at all."""
    with first_use_lock(uri):  # the tracking store makes the whole schema, the registry's tables too
        _make_sqlite_store_whole(uri)
        return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _make_sqlite_store_whole(uri: str) -> None:
    """Make a new SQLite store's schema in a file beside it and rename that in (under `first_use_lock`).

    MLflow makes a new file's schema in some fifty steps (the tables, then each migration) over seconds; a process
    killed among them leaves a file that every later open fails on (``table _alembic_tmp_experiments already
    exists``), so a training killed early would spool its records for ever. Renamed in when complete, the store is
    whole or absent."""
    if not uri.startswith("sqlite:///"):
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if database.exists():
        return
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    partial = database.with_name(database.name + ".creating")
    partial.unlink(missing_ok=True)  # one killed before: made here, and no other process makes one (the lock)
    # Not through MLflow's store class: it caches engines by URI for the process's life.
    engine = create_sqlalchemy_engine(f"sqlite:///{partial}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    os.replace(partial, database)


def now_ms() -> int:
    return int(time.time() * 1000)


def client_for(uri: str = "") -> MlflowClient:
    """A plain MLflow client for read-only questions (tests, resume lookups)."""
    return new_client(resolve_tracking_uri(uri))


@contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """mlflow's global tracking URI for a moment; it also sets $MLFLOW_TRACKING_URI, which is put back after."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = saved

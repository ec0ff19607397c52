"""Models in MLflow: loading by URI, the run behind a model, choosing and registering the best.

Lookups (a model by URI, the run behind a resume) only read: they are refused in one line, within
seconds, when the store is not there (a SQLite file that does not exist is not created) or the server
does not answer (MLflow's own retries would take minutes).
"""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import mlflow
import yaml
from mlflow.exceptions import MlflowException

from pipeline.messages import first_line
from pipeline.redact import redact_uri
from pipeline.tracking.runs import find_runs
from pipeline.tracking.store import client_for, resolve_tracking_uri, using_tracking_uri

PROBE_TIMEOUT_S = 3.0
# For lookups, unless the user set them: MLflow's defaults (7 retries, exponential backoff, 120 s) make a dead
# server cost minutes; its download bars are not this command's output.
_LOOKUP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


class StoreUnavailable(ValueError):
    """A tracking store a lookup cannot use: absent, or a server that does not answer; one line."""


@dataclass(frozen=True)
class ModelWeights:
    """A logged model's checkpoint, downloaded, and where it came from."""

    path: Path
    run_id: str | None
    version: str | None  # the registry version, for models:/ URIs
    pinned: str  # the same model by an URI that cannot move (models:/<name>/<version> for an alias)


def lookup_uri(tracking_uri: str = "") -> str:
    """The resolved tracking URI, if a lookup can use it now; else StoreUnavailable, and nothing is created."""
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
        if not database.is_file():
            raise StoreUnavailable(f"no MLflow store at {database} (give --tracking-uri or set MLFLOW_TRACKING_URI)")
    elif uri.startswith(("http://", "https://")):
        _probe(uri)
    elif "://" not in uri or uri.startswith("file:"):
        folder = Path(urlsplit(uri).path if uri.startswith("file:") else uri)
        if not folder.is_dir():
            raise StoreUnavailable(f"no MLflow store at {folder} (give --tracking-uri or set MLFLOW_TRACKING_URI)")
    return uri


def _probe(uri: str) -> None:
    """A TCP connection to the server within seconds, or StoreUnavailable naming it (credentials hidden)."""
    parts = urlsplit(uri)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise StoreUnavailable(f"MLflow server {redact_uri(uri)} does not answer ({reason})") from None


@contextmanager
def quick_requests() -> Iterator[None]:
    """MLflow's HTTP retries and timeout cut down for a lookup (values the user set are kept), its notes quiet."""
    added = {key: value for key, value in _LOOKUP_ENV.items() if key not in os.environ}
    os.environ.update(added)
    logger = logging.getLogger("mlflow")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))  # "Creating initial MLflow database tables...": not for a lookup
    try:
        yield
    finally:
        logger.setLevel(level)
        for key in added:
            os.environ.pop(key, None)


def run_tag(run_id: str, tag: str, uri: str = "") -> str | None:
    """A run's tag, looked up only: a store that is not there is not created, a server that does not answer fails fast."""
    resolved = lookup_uri(uri)
    with quick_requests():
        return client_for(resolved).get_run(run_id).data.tags.get(tag)


def run_output_dir(run_id: str, uri: str = "") -> str | None:
    """The training folder recorded on a run (tag ``pipeline.output_dir``), if the run has one."""
    return run_tag(run_id, "pipeline.output_dir", uri)


def load_model(model_uri: str, tracking_uri: str = "") -> Any:
    """Load a logged model back as a pyfunc (``runs:/<id>/model``, ``models:/<name>@<alias>``, ...).

    This unpickles the model's ``python_model.pkl``, which can run code: the pipeline itself loads
    its models with `model_weights` instead; this is for MLflow's own tools and trusted models.
    """
    with using_tracking_uri(resolve_tracking_uri(tracking_uri)):
        return mlflow.pyfunc.load_model(model_uri)


def model_weights(model_uri: str, tracking_uri: str = "") -> ModelWeights:
    """The ``weights`` artifact of a model this pipeline logged, downloaded (nothing unpickled), with its run.

    Only ``MLmodel`` (YAML) and the checkpoint are downloaded; the checkpoint is then loaded like any
    local ``.pt``, under the safe-loading policy. A model without a ``weights`` artifact is refused.
    """
    uri = lookup_uri(tracking_uri)
    with quick_requests(), using_tracking_uri(uri):  # MLflow's own inner clients find this store, no other
        run_id, version = model_version_of(model_uri, uri)
        pinned = model_uri
        if version and "@" in model_uri.removeprefix("models:/").split("/", 1)[0]:
            pinned = f"models:/{model_uri.removeprefix('models:/').split('@', 1)[0]}/{version}"
        base = _artifact_base(pinned, uri)
        folder = Path(tempfile.mkdtemp(prefix="yolo-pipeline-model-"))
        _remove_at_exit(folder)

        def download(path: str) -> Path:
            where = mlflow.artifacts.download_artifacts(
                f"{base}/{path}", dst_path=str(folder), tracking_uri=uri, registry_uri=uri
            )
            return Path(where)

        local = download(_weights_path(download("MLmodel"), model_uri))
    return ModelWeights(local, run_id, version, pinned)


def _artifact_base(model_uri: str, uri: str) -> str:
    """Where a model's files are: ``runs:/<id>/<name>`` is the run's logged model of that name (MLflow 3), if any."""
    base = model_uri.rstrip("/")
    if not base.startswith("runs:/"):
        return base
    run_id, _, name = base.removeprefix("runs:/").partition("/")
    try:
        found = logged_model(client_for(uri), run_id, name)
    except MlflowException as exc:
        raise StoreUnavailable(f"{model_uri}: {first_line(exc)}") from None
    return found.artifact_location.rstrip("/") if found else base


def logged_model(client: Any, run_id: str, name: str) -> Any:
    """The MLflow 3 logged model of that name a run produced (``runs:/<run id>/<name>``), None when it has none."""
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id], filter_string=f"name = '{name}'")
    return next((m for m in models if m.source_run_id == run_id), None)


def _weights_path(spec: Path, model_uri: str) -> str:
    """Where ``MLmodel`` says the checkpoint is, inside the model folder: its metadata's ``weights`` (models served
    by `pipeline.inference.serving`), or the pyfunc's ``weights`` artifact (models logged before)."""
    try:
        document = yaml.safe_load(spec.read_text(encoding="utf-8"))
        relative = (document.get("metadata") or {}).get("weights") or (
            document["flavors"]["python_function"]["artifacts"]["weights"]["path"]
        )
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        raise StoreUnavailable(
            f"{model_uri}: not a model of this pipeline (its MLmodel names no weights artifact)"
        ) from None
    parts = Path(str(relative)).parts
    if not parts or Path(str(relative)).is_absolute() or ".." in parts or not str(relative).endswith(".pt"):
        raise StoreUnavailable(f"{model_uri}: its MLmodel names weights at {relative!r}, not a .pt inside the model")
    return Path(*parts).as_posix()


def model_version_of(model_uri: str, uri: str) -> tuple[str | None, str | None]:
    """(run id, registry version) of a model URI; (None, None) when the URI does not tell."""
    if model_uri.startswith("runs:/"):
        return model_uri.removeprefix("runs:/").split("/", 1)[0] or None, None
    if not model_uri.startswith("models:/"):
        return None, None
    name, sep, version = model_uri.removeprefix("models:/").partition("/")
    client = client_for(uri)
    try:
        if "@" in name:
            name, alias = name.split("@", 1)
            found = client.get_model_version_by_alias(name, alias)
        elif sep and version.isdigit():
            found = client.get_model_version(name, version)
        else:
            return None, None
    except MlflowException as exc:
        raise StoreUnavailable(f"{model_uri}: {first_line(exc)}") from None
    return found.run_id, str(found.version)


def _remove_at_exit(folder: Path) -> None:
    import atexit
    import shutil

    atexit.register(shutil.rmtree, folder, ignore_errors=True)


def model_run_id(model_uri: str, tracking_uri: str = "") -> str | None:
    """The run a model URI's model came from: ``runs:/<id>/...`` itself, or the registry's record for
    ``models:/<name>@<alias>`` and ``models:/<name>/<version>``; None when it cannot be told."""
    try:
        return model_version_of(model_uri, lookup_uri(tracking_uri) if model_uri.startswith("models:/") else "")[0]
    except StoreUnavailable:
        return None


def best_run(
    experiment: str, metric: str, tracking_uri: str = "", lowest: bool = False, parent: str = ""
) -> tuple[str, float, list[str]]:
    """The finished training run of ``experiment`` (or child of the sweep ``parent``) with the highest (or
    lowest) ``metric``: (run id, its value, the ids of every run compared). Prediction, evaluation and sweep
    runs, and runs without the metric, are left out."""
    runs = find_runs(experiment, "attributes.status = 'FINISHED'", parent=parent, tracking_uri=tracking_uri)
    scored = [(run.run_id, run.metrics[metric]) for run in runs if metric in run.metrics]
    scored = [(run_id, value) for run_id, value in scored if value == value]  # NaN never wins
    if not scored:
        among = f"sweep {parent}" if parent else f"experiment {experiment!r}"
        raise LookupError(f"{among}: no finished run has the metric {metric!r}")
    run_id, value = (min if lowest else max)(scored, key=lambda pair: pair[1])
    return run_id, value, [run_id for run_id, _ in scored]


class _LoggedModelNotice(logging.Filter):
    """MLflow 3 keeps a run's model as a logged model, not among the run's artifacts; registering
    ``runs:/<id>/model`` then warns "Run with id ... has no artifacts at artifact path 'model'" and
    registers that logged model, which is the one meant: the warning would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "has no artifacts at artifact path" not in record.getMessage()


@contextmanager
def _no_logged_model_notice() -> Iterator[None]:
    # The logger of the module that defines register_model: the one that logs the warning.
    logger, notice = logging.getLogger(mlflow.register_model.__module__), _LoggedModelNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def register_model(
    run_id: str, name: str, alias: str, reason: dict[str, str], tracking_uri: str = "", *, move_alias: bool = True
) -> str:
    """Register the model logged by ``run_id`` as a new version of ``name``, tag the version with ``reason``
    (``pipeline.*`` keys) and, unless ``move_alias`` is False (a refused promotion), point ``alias`` at it;
    returns the version. The tags are written before the alias moves: whoever resolves the alias finds them."""
    uri = resolve_tracking_uri(tracking_uri)
    with using_tracking_uri(uri), warnings.catch_warnings(), _no_logged_model_notice():
        warnings.simplefilter("ignore")  # MLflow's notes on registry URIs and model signatures
        version = mlflow.register_model(f"runs:/{run_id}/model", name)
    client = client_for(uri)
    for key, value in reason.items():
        client.set_model_version_tag(name, version.version, key, value)
    if move_alias:
        set_alias(name, alias, str(version.version), uri)
    return str(version.version)


def set_alias(name: str, alias: str, version: str, tracking_uri: str = "") -> None:
    """Point ``models:/<name>@<alias>`` at ``version``."""
    client_for(resolve_tracking_uri(tracking_uri)).set_registered_model_alias(name, alias, version)


def alias_version(name: str, alias: str, tracking_uri: str = "") -> tuple[str, str | None] | None:
    """(version, its run id) behind ``models:/<name>@<alias>``; None when there is no such model or alias yet.

    Other failures (a store that does not answer) are StoreUnavailable in one line."""
    uri = lookup_uri(tracking_uri)
    with quick_requests():
        client = client_for(uri)
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise StoreUnavailable(f"models:/{name}: {first_line(exc)}") from None
        version = model.aliases.get(alias)
        if version is None:
            return None
        try:
            found = client.get_model_version(name, str(version))
        except MlflowException as exc:
            raise StoreUnavailable(f"models:/{name}/{version}: {first_line(exc)}") from None
    return str(found.version), found.run_id


def run_metric(run_id: str, metric: str, tracking_uri: str = "") -> float | None:
    """The latest value of ``metric`` on a run, None when it has none."""
    return client_for(tracking_uri).get_run(run_id).data.metrics.get(metric)

"""Models in MLflow: loading by URI, the run behind a model, choosing and registering the best."""

from __future__ import annotations

import warnings
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException

from pipeline.tracking.runs import find_runs
from pipeline.tracking.store import client_for, resolve_tracking_uri, using_tracking_uri


def run_output_dir(run_id: str, uri: str = "") -> str | None:
    """The training folder recorded on a run (tag ``pipeline.output_dir``), if the run has one."""
    return client_for(uri).get_run(run_id).data.tags.get("pipeline.output_dir")


def load_model(model_uri: str, tracking_uri: str = "") -> Any:
    """Load a logged model back as a pyfunc (``runs:/<id>/model``, ``models:/<name>@<alias>``, ...)."""
    with using_tracking_uri(resolve_tracking_uri(tracking_uri)):
        return mlflow.pyfunc.load_model(model_uri)


def model_run_id(model_uri: str, tracking_uri: str = "") -> str | None:
    """The run a model URI's model came from: ``runs:/<id>/...`` itself, or the registry's record for
    ``models:/<name>@<alias>`` and ``models:/<name>/<version>``; None when it cannot be told."""
    if model_uri.startswith("runs:/"):
        return model_uri.removeprefix("runs:/").split("/", 1)[0] or None
    if not model_uri.startswith("models:/"):
        return None
    name, sep, version = model_uri.removeprefix("models:/").partition("/")
    client = client_for(resolve_tracking_uri(tracking_uri))
    try:
        if "@" in name:
            name, alias = name.split("@", 1)
            return client.get_model_version_by_alias(name, alias).run_id
        return client.get_model_version(name, version).run_id if sep and version.isdigit() else None
    except MlflowException:
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


def register_model(run_id: str, name: str, alias: str, reason: dict[str, str], tracking_uri: str = "") -> str:
    """Register the model logged by ``run_id`` as a new version of ``name``, point ``alias`` at it, and tag
    the version with ``reason`` (``pipeline.*`` keys); returns the version."""
    uri = resolve_tracking_uri(tracking_uri)
    with using_tracking_uri(uri), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MLflow's notes on registry URIs and model signatures
        version = mlflow.register_model(f"runs:/{run_id}/model", name)
    client = client_for(uri)
    for key, value in reason.items():
        client.set_model_version_tag(name, version.version, key, value)
    client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def run_metric(run_id: str, metric: str, tracking_uri: str = "") -> float | None:
    """The latest value of ``metric`` on a run, None when it has none."""
    return client_for(tracking_uri).get_run(run_id).data.metrics.get(metric)

"""Runs written in one go by the client (not spooled) and runs read back.

Written: prediction and evaluation summaries, sweep parents and the record of a sweep child that
failed before its training could open a run. Read: the runs of an experiment (or of a sweep parent)
with their params, latest metrics, tags, the class names of the data they trained on and the
per-epoch histories a comparison draws.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from pipeline.redact import redact_text, redact_uri
from pipeline.tracking.store import client_for, get_or_create_experiment, now_ms, resolve_tracking_uri

# Runs that are not trainings: a comparison or a choice of the best leaves them out.
NOT_TRAINING = ("prediction", "evaluation", "sweep", "calibration", "export")
KIND_TAG = "pipeline.kind"
PARENT_TAG = "mlflow.parentRunId"
CONTEXT_TAG = "mlflow.data.context"  # a dataset input's role; a training logs its data as "training"


class RunQueryError(LookupError):
    """Runs that cannot be found or read; the message is one line."""


def _log_in_batches(client: Any, run_id: str, metrics: list[Metric], params: dict[str, Any]) -> None:
    """Metrics and params in as many log_batch calls as the REST API's limits (100 params a call) need."""
    param_list = [Param(k, str(v)[:6000]) for k, v in params.items()]  # MLflow's longest param value
    for start in range(0, max(len(metrics), len(param_list), 1), 100):
        client.log_batch(run_id, metrics=metrics[start : start + 100], params=param_list[start : start + 100])


def log_summary_run(
    kind: str,
    summary: dict[str, Any],
    params: dict[str, Any],
    files: list[Path],
    experiment: str,
    run_name: str,
    tracking_uri: str = "",
    tags: dict[str, str] | None = None,
    folders: dict[str, str] | None = None,
) -> str:
    """One finished run tagged ``pipeline.kind=<kind>``: ``params``, the numeric ``summary`` values as
    metrics, ``files`` as artifacts (at the top, or in ``folders[file name]``)."""
    uri = resolve_tracking_uri(tracking_uri)
    client = client_for(uri)
    experiment_id = get_or_create_experiment(client, experiment, uri)
    run = client.create_run(experiment_id, tags={KIND_TAG: kind, **(tags or {})}, run_name=run_name[:250])
    run_id = run.info.run_id
    metrics = [Metric(k, float(v), now_ms(), 0) for k, v in summary.items() if isinstance(v, (int, float))]
    _log_in_batches(client, run_id, metrics, params)
    for path in files:
        if path.exists():
            client.log_artifact(run_id, str(path), (folders or {}).get(path.name))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def log_prediction(
    summary: dict[str, Any],
    params: dict[str, Any],
    files: list[Path],
    experiment: str = "predictions",
    tracking_uri: str = "",
    model_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> str:
    """One finished run holding a prediction's summary: ``params``, numeric ``summary`` values as metrics,
    ``files`` as artifacts, tagged with the model's run (``pipeline.model_run_id``) when it came from one, and
    with ``tags``."""
    tags = {**(tags or {}), **({"pipeline.model_run_id": model_run_id} if model_run_id else {})}
    name = f"predict {params.get('source', '')}"
    return log_summary_run("prediction", summary, params, files, experiment, name, tracking_uri, tags)


# ---- sweeps ------------------------------------------------------------------------------------------


def start_parent_run(
    experiment: str, run_name: str, params: dict[str, Any], tags: dict[str, str], tracking_uri: str = ""
) -> str:
    """A running parent run for a sweep (``pipeline.kind=sweep``); its children name it in ``mlflow.parentRunId``."""
    uri = resolve_tracking_uri(tracking_uri)
    client = client_for(uri)
    run = client.create_run(
        get_or_create_experiment(client, experiment, uri), tags={KIND_TAG: "sweep", **tags}, run_name=run_name[:250]
    )
    _log_in_batches(client, run.info.run_id, [], params)
    return run.info.run_id


def finish_run(
    run_id: str, status: str, metrics: dict[str, float], tags: dict[str, str], tracking_uri: str = ""
) -> None:
    """Log final ``metrics`` and ``tags`` on a run and end it with ``status``."""
    client = client_for(tracking_uri)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now_ms(), 0) for k, v in metrics.items()],
        tags=[RunTag(k, str(v)[:5000]) for k, v in tags.items()],
    )
    client.set_terminated(run_id, status)


def reopen_run(run_id: str, tracking_uri: str = "") -> None:
    """Mark an ended run RUNNING again (a sweep continued after a kill)."""
    client_for(tracking_uri).update_run(run_id, status="RUNNING")


def child_run(parent_run_id: str, tag: str, value: str, tracking_uri: str = "") -> tuple[str, str] | None:
    """(run id, status) of the child of ``parent_run_id`` tagged ``tag=value``, if there is one."""
    client = client_for(tracking_uri)
    parent = client.get_run(parent_run_id)
    found = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}' AND tags.`{tag}` = '{value}'",
        max_results=1,
    )
    return (found[0].info.run_id, found[0].info.status) if found else None


def record_failed_child(
    parent_run_id: str, run_name: str, params: dict[str, Any], tags: dict[str, str], error: str, tracking_uri: str = ""
) -> str:
    """A FAILED child run holding the params and the error of a sweep child whose training never opened a run."""
    client = client_for(tracking_uri)
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    run = client.create_run(experiment_id, tags={PARENT_TAG: parent_run_id, **tags}, run_name=run_name[:250])
    _log_in_batches(client, run.info.run_id, [], params)
    finish_run(run.info.run_id, "FAILED", {}, {"pipeline.error": error}, tracking_uri)
    return run.info.run_id


# ---- reading runs back -------------------------------------------------------------------------------


@dataclass
class RunRecord:
    """One run as a comparison sees it: plain values, no MLflow objects."""

    run_id: str
    name: str
    status: str
    start_ms: int
    end_ms: int | None
    params: dict[str, str]
    metrics: dict[str, float]  # latest value of each metric
    tags: dict[str, str]
    histories: dict[str, list[tuple[int, float]]] = field(default_factory=dict)  # metric -> [(step, value)]
    classes: list[str] = field(default_factory=list)  # the training data's class names in its order; [] if unknown


def find_runs(
    experiment: str = "",
    filter_string: str = "",
    run_ids: list[str] | tuple[str, ...] = (),
    parent: str = "",
    tracking_uri: str = "",
    trainings_only: bool = True,
    max_results: int = 1000,
) -> list[RunRecord]:
    """The runs of ``experiment`` that match ``filter_string`` (MLflow's search syntax), or those named by
    ``run_ids``, or the children of ``parent``; newest first. Prediction, evaluation and sweep runs are left out
    unless ``trainings_only`` is False."""
    uri = resolve_tracking_uri(tracking_uri)
    client = client_for(uri)
    try:
        if run_ids:
            runs = [client.get_run(run_id) for run_id in run_ids]
            if filter_string:
                experiments = sorted({run.info.experiment_id for run in runs})
                ids = ", ".join(f"'{run_id}'" for run_id in run_ids)
                matching = client.search_runs(experiments, f"{filter_string} AND attributes.run_id IN ({ids})")
                keep = {run.info.run_id for run in matching}
                runs = [run for run in runs if run.info.run_id in keep]
        else:
            if parent:
                experiment_ids = [client.get_run(parent).info.experiment_id]
                clauses = [f"tags.`{PARENT_TAG}` = '{parent}'"]
            else:
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    raise RunQueryError(f"experiment {experiment!r}: no such experiment at {redact_uri(uri)}")
                experiment_ids, clauses = [found.experiment_id], []
            if filter_string:
                clauses.append(filter_string)  # MLflow's search has AND only: no OR, no parentheses
            runs = client.search_runs(
                experiment_ids, " AND ".join(clauses), max_results=max_results, order_by=["attributes.start_time DESC"]
            )
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunQueryError(redact_text(first)[:300]) from None
    records = [_record(run) for run in runs]
    if trainings_only and not run_ids:
        records = [r for r in records if r.tags.get(KIND_TAG, "training") not in NOT_TRAINING]
    return records


def _record(run: Any) -> RunRecord:
    info, data = run.info, run.data
    return RunRecord(
        run_id=info.run_id,
        name=info.run_name or info.run_id[:8],
        status=info.status,
        start_ms=int(info.start_time or 0),
        end_ms=int(info.end_time) if info.end_time else None,
        params=dict(data.params),
        metrics=dict(data.metrics),
        tags=dict(data.tags),
        classes=_training_classes(run),
    )


def _training_classes(run: Any) -> list[str]:
    """The class names, in the dataset's order, from the schema of the run's training dataset input."""
    inputs = run.inputs.dataset_inputs if run.inputs else []
    for dataset_input in inputs:
        if {tag.key: tag.value for tag in dataset_input.tags}.get(CONTEXT_TAG) != "training":
            continue
        try:
            classes = json.loads(dataset_input.dataset.schema or "{}").get("classes")
        except (ValueError, AttributeError):  # a schema some other tool wrote: not JSON, or not an object
            continue
        if isinstance(classes, list):
            return [str(name) for name in classes]
    return []


def add_histories(records: list[RunRecord], keys: list[str], tracking_uri: str = "") -> None:
    """Fill each record's ``histories`` with every step of ``keys`` that the run has (sorted by step)."""
    client = client_for(tracking_uri)
    for record in records:
        for key in keys:
            if key in record.metrics:
                points = client.get_metric_history(record.run_id, key)
                record.histories[key] = sorted((m.step, m.value) for m in points)

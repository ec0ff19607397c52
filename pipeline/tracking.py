"""MLflow tracking: the only module that imports mlflow.

A `Tracker` journals every record to its `Spool` on disk first and returns at once; a background
worker sends what is pending in batches. When the server is unreachable (at start or mid-run) the
worker keeps retrying every ``retry_interval_s`` while training goes on; `sync` replays a spool by
hand. The run itself is created by the worker, so a run can begin while the server is down.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput, LoggedModelStatus, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec

from pipeline.spool import REFUSED, Spool, original_name

LOG = logging.getLogger("pipeline.tracking")

MODEL_NAME = "model"
# log_batch limits of the MLflow REST API
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100
_BATCHED = {"metrics", "params", "tags"}
# Answers meaning "the server understood and refuses": resending the same record cannot succeed.
_REFUSALS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST", "INVALID_STATE"}


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


def _experiment_id(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment called ``name``, created (artifacts beside a SQLite store) when there is none."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=_local_artifact_root(uri))


def _now_ms() -> int:
    return int(time.time() * 1000)


class Tracker:
    """One MLflow run, fed without blocking and without losing records."""

    def __init__(
        self,
        spool_dir: str | Path,
        uri: str,
        experiment: str,
        run_name: str = "",
        flush_interval_s: float = 2.0,
        retry_interval_s: float = 15.0,
        request_timeout_s: float = 10.0,
    ):
        self.spool = Spool(spool_dir)
        saved = self.spool.state
        # A resumed or replayed spool keeps the server and experiment it was made for.
        self.uri = saved.get("uri") or resolve_tracking_uri(uri)
        self.experiment = saved.get("experiment") or experiment
        self.spool.update_state(uri=self.uri, experiment=self.experiment)
        self.run_name = run_name
        self.flush_interval_s = flush_interval_s
        self.retry_interval_s = retry_interval_s
        # Our own worker retries; a request should fail fast rather than back off inside the client.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        whole_seconds = max(1, math.ceil(request_timeout_s))  # mlflow reads this variable as an int
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(whole_seconds)
        self._client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._offline_since: float | None = None
        self._next_try = 0.0
        self.last_error: str | None = None

    # ---- the training side: journal and return ------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return self.spool.state.get("run_id")

    def open_run(self, tags: dict[str, str] | None = None) -> None:
        """Journal the run's creation, once per spool; on a spool that has its run, journal the tags only."""
        if not self.run_id and not self.spool.records("create_run"):
            self.spool.append(
                {"kind": "create_run", "run_name": self.run_name, "start_time": _now_ms(), "tags": tags or {}}
            )
        elif tags:
            self.set_tags(tags)

    def start(self, tags: dict[str, str] | None = None) -> None:
        """Open the run (see `open_run`) and start the background worker."""
        self.open_run(tags)
        self._worker = threading.Thread(target=self._work, name="mlflow-tracker", daemon=True)
        self._worker.start()
        self._wake.set()

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> None:
        values = {key: float(value) for key, value in metrics.items()}
        self.spool.append({"kind": "metrics", "step": int(step), "ts": timestamp_ms or _now_ms(), "metrics": values})

    def log_params(self, params: dict[str, Any]) -> None:
        self.spool.append({"kind": "params", "params": {k: str(v) for k, v in params.items()}})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.spool.append({"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload a file or a folder (copied now, so later changes to it are not recorded)."""
        self.spool.append({"kind": "artifact", "artifact_path": artifact_path}, files={"local": path})

    def log_dataset(
        self, name: str, digest: str, source: str, profile: dict[str, Any], schema: dict[str, Any], context: str
    ) -> None:
        """Record a dataset as an MLflow dataset input of the run (lineage: which data, which bytes)."""
        self.spool.append(
            {
                "kind": "dataset",
                "name": name,
                "digest": digest[:36],  # MLflow stores at most 36 characters of a digest
                "source": source,
                "profile": profile,
                "schema": schema,
                "context": context,
            }
        )

    def log_model(self, weights: str | Path, step: int = 0, extra_files: Iterable[str | Path] = ()) -> None:
        """Log YOLO weights as an MLflow pyfunc model named ``model`` (loadable by ``runs:/<id>/model``)."""
        files = {"weights": weights, **{f"extra{i}": f for i, f in enumerate(extra_files)}}
        self.spool.append({"kind": "model", "step": int(step)}, files=files)

    def finish(self, status: str = "FINISHED", timeout_s: float = 30.0) -> bool:
        """End the run, try to send everything, stop the worker; True when nothing is left in the spool."""
        self.spool.append({"kind": "end", "status": status, "end_time": _now_ms()})
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=timeout_s)  # lets a send in flight complete
        if self._worker is None or not self._worker.is_alive():
            # One last attempt from here, without waiting out the retry interval; if the server is
            # away it fails fast and `sync` sends the rest later.
            self.send_pending()
        done = not self.spool.pending()
        if not done:
            LOG.warning(
                "tracking: %d records kept in %s; send them with `yolo-pipeline sync %s`",
                len(self.spool.pending()),
                self.spool.dir,
                self.spool.dir,
            )
        return done

    # ---- the worker: send what is pending -----------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            if time.monotonic() >= self._next_try:
                self.send_pending()

    def send_pending(self) -> int:
        """Send every pending record in order; returns how many were sent. Never raises."""
        with self._send_lock:
            pending = self.spool.pending()
            sent = 0
            try:
                while pending:
                    count = self._send_group(pending)
                    sent += count
                    pending = pending[count:]
            except Exception as exc:  # noqa: BLE001 - any failure means: keep the records and retry later
                self._went_offline(exc)
                return sent
            if self._offline_since is not None and sent:
                LOG.warning("tracking: %s answers again; sent %d spooled records", self.uri, sent)
            self._offline_since = None
            return sent

    def _went_offline(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        self._next_try = time.monotonic() + self.retry_interval_s
        if self._offline_since is None:
            self._offline_since = time.monotonic()
            LOG.warning(
                "tracking: cannot reach %s (%s); training goes on, records are spooled in %s and retried every %.0fs",
                self.uri,
                self.last_error,
                self.spool.dir,
                self.retry_interval_s,
            )

    def _send_group(self, pending: list[dict[str, Any]]) -> int:
        """Send the first record, or the longest run of batchable records that fits one log_batch call."""
        group = self._batch(pending) if pending[0]["kind"] in _BATCHED else pending[:1]
        try:
            self._send(group)
        except MlflowException as exc:
            if exc.error_code not in _REFUSALS:
                raise  # unreachable or failing server: keep the records, retry later
            if len(group) > 1:  # find the record that was refused: only it is set aside
                for record in group:
                    self._send_group([record])
                return len(group)
            # The server answered and said no (a changed param, a deleted run): resending cannot help, and
            # one bad record must not hold back everything behind it. Keep it on disk and say so.
            reason = str(exc).splitlines()[0]
            self.spool.set_aside(group, reason=reason)
            LOG.warning(
                "tracking: the server refused %d record(s) (%s); kept in %s",
                len(group),
                reason[:200],
                self.spool.dir / REFUSED,
            )
        self.spool.acknowledge(group[-1]["seq"])
        return len(group)

    def _send(self, group: list[dict[str, Any]]) -> None:
        first = group[0]
        if first["kind"] == "create_run":
            if self.run_id is None:  # else: created before, and the acknowledgement was lost
                self._create_run(first)
            return
        run_id = self.run_id
        if run_id is None:
            raise RuntimeError("the journal has no run to log to")
        if first["kind"] in _BATCHED:
            metrics = [
                Metric(k, v, r["ts"], r["step"])
                for r in group
                if r["kind"] == "metrics"
                for k, v in r["metrics"].items()
            ]
            params = [Param(k, v) for r in group if r["kind"] == "params" for k, v in r["params"].items()]
            tags = [RunTag(k, v) for r in group if r["kind"] == "tags" for k, v in r["tags"].items()]
            self._client.log_batch(run_id, metrics=metrics, params=params, tags=tags, synchronous=True)
            return
        missing = [v for k, v in first.items() if k in {"local", "weights"} and not self.spool.path(v).exists()]
        if missing:
            LOG.warning(
                "tracking: skipping %s record %d, its spooled file %s is gone", first["kind"], first["seq"], missing[0]
            )
        elif first["kind"] == "artifact":
            local = self.spool.path(first["local"])
            name = original_name(local)
            # The spooled copy carries a sequence prefix; upload it under its real name.
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / name
                (shutil.copytree if local.is_dir() else shutil.copy2)(local, target)
                if target.is_dir():
                    self._client.log_artifacts(run_id, str(target), first["artifact_path"] or name)
                else:
                    self._client.log_artifact(run_id, str(target), first["artifact_path"])
        elif first["kind"] == "model":
            self._log_model(run_id, first)
        elif first["kind"] == "dataset":
            self._log_dataset(run_id, first)
        elif first["kind"] == "end":
            self._client.set_terminated(run_id, first["status"], first["end_time"])
        else:
            LOG.warning("tracking: skipping unknown journal record kind %r", first["kind"])

    @staticmethod
    def _batch(pending: list[dict[str, Any]]) -> list[dict[str, Any]]:
        group: list[dict[str, Any]] = []
        n_metrics = n_params = n_tags = 0
        for record in pending:
            if record["kind"] not in _BATCHED:
                break
            m = len(record.get("metrics", {}))
            p = len(record.get("params", {}))
            t = len(record.get("tags", {}))
            too_many = n_metrics + m > _MAX_METRICS or n_params + p > _MAX_PARAMS or n_tags + t > _MAX_TAGS
            if group and (too_many or n_metrics + n_params + n_tags + m + p + t > _MAX_METRICS):
                break
            group.append(record)
            n_metrics, n_params, n_tags = n_metrics + m, n_params + p, n_tags + t
        return group

    def _experiment_id(self) -> str:
        return _experiment_id(self._client, self.experiment, self.uri)

    def _log_dataset(self, run_id: str, record: dict[str, Any]) -> None:
        dataset = Dataset(
            name=record["name"],
            digest=record["digest"],
            source_type="local",
            source=json.dumps({"uri": record["source"]}),
            schema=json.dumps(record["schema"]),
            profile=json.dumps(record["profile"]),
        )
        tags = [InputTag("mlflow.data.context", record["context"])]
        self._client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags)])

    def _create_run(self, record: dict[str, Any]) -> None:
        run = self._client.create_run(
            self._experiment_id(),
            start_time=record["start_time"],
            tags=record["tags"],
            run_name=record["run_name"] or None,
        )
        self.spool.update_state(run_id=run.info.run_id, experiment_id=run.info.experiment_id)
        LOG.info("tracking: run %s in experiment %r at %s", run.info.run_id, self.experiment, self.uri)

    def _log_model(self, run_id: str, record: dict[str, Any]) -> None:
        """A pyfunc model, logged through the client API (no global active run), at most once per run."""
        experiment_id = self._client.get_run(run_id).info.experiment_id
        existing = [
            m
            for m in self._client.search_logged_models([experiment_id], filter_string=f"name = '{MODEL_NAME}'")
            if m.source_run_id == run_id and m.status == LoggedModelStatus.READY
        ]
        if existing:
            return  # sent before, and the acknowledgement was lost
        weights = self.spool.path(record["weights"])
        extras = {k: self.spool.path(v) for k, v in record.items() if k.startswith("extra")}
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / MODEL_NAME
            artifacts = {"weights": str(_inference_weights(weights, Path(tmp) / "weights"))}
            artifacts.update({k: str(_renamed_copy(p, Path(tmp) / k)) for k, p in extras.items()})
            with warnings.catch_warnings():
                # MLflow nudges towards models-from-code and type-hint signatures; neither fits a file-based model.
                warnings.simplefilter("ignore")
                logging.getLogger("mlflow.pyfunc").disabled = True
                try:
                    mlflow.pyfunc.save_model(
                        str(local),
                        python_model=YoloPyfuncModel(),
                        artifacts=artifacts,
                        pip_requirements=_requirements(),
                        signature=YoloPyfuncModel.signature(),
                    )
                finally:
                    logging.getLogger("mlflow.pyfunc").disabled = False
            model = self._client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
            self._client.log_model_artifacts(model.model_id, str(local))
            self._client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
            self._client.log_outputs(run_id, [LoggedModelOutput(model.model_id, record["step"])])


def _inference_weights(spooled: Path, folder: Path) -> Path:
    """The spooled checkpoint without its optimizer state (half the size), under its real name."""
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics.utils.torch_utils import strip_optimizer

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / original_name(spooled)
    strip_optimizer(spooled, str(target))
    return target


def _renamed_copy(spooled: Path, folder: Path) -> Path:
    """Copy a spooled file into ``folder`` under its real name (without the sequence prefix)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / original_name(spooled)
    shutil.copy2(spooled, target)
    return target


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("ultralytics", "torch", "torchvision", "mlflow")]


class YoloPyfuncModel(mlflow.pyfunc.PythonModel):
    """YOLO weights as an MLflow pyfunc model: image paths (or one image array) in, one row per detection out.

    ``params``: ``conf`` (score threshold, default 0.25) and ``imgsz`` (default: the training size).
    """

    COLUMNS = ["source", "class_id", "class_name", "confidence", "x0", "y0", "x1", "y1"]
    # Inputs are paths or arrays, outputs a DataFrame: nothing MLflow's type-hint validation can describe.
    _skip_type_hint_validation = True

    @staticmethod
    def signature() -> ModelSignature:
        return ModelSignature(
            inputs=None,
            outputs=None,
            params=ParamSchema([ParamSpec("conf", "double", 0.25), ParamSpec("imgsz", "long", 0)]),
        )

    def load_context(self, context):
        from pipeline.yolo_env import configure_ultralytics

        configure_ultralytics()
        from ultralytics import YOLO

        self.model = YOLO(context.artifacts["weights"], task="detect")
        self.imgsz = int((self.model.ckpt or {}).get("train_args", {}).get("imgsz", 640))

    def predict(self, context, model_input, params=None):  # no type hints: MLflow would build a schema from them
        import numpy as np
        import pandas as pd

        params = params or {}
        if isinstance(model_input, pd.DataFrame):
            sources = [str(v) for v in model_input.iloc[:, 0]]
        elif isinstance(model_input, np.ndarray):
            sources = [model_input]
        else:
            sources = [str(v) for v in model_input]
        conf = float(params.get("conf", 0.25))
        imgsz = int(params.get("imgsz") or self.imgsz)
        rows = []
        for index, source in enumerate(sources):
            label = source if isinstance(source, str) else str(index)
            for result in self.model.predict(source, conf=conf, imgsz=imgsz, verbose=False):
                boxes = result.boxes
                for xyxy, score, cls in zip(boxes.xyxy.tolist(), boxes.conf.tolist(), boxes.cls.tolist()):
                    rows.append([label, int(cls), result.names[int(cls)], score, *xyxy])
        return pd.DataFrame(rows, columns=self.COLUMNS)


class SystemMetricsSampler(SystemMetricsMonitor):
    """MLflow's own system-metric collectors (CPU, memory, disk, network, GPU), published through a Tracker.

    MLflow's monitor stops for good at the first failed request; publishing through the Tracker
    spools the samples like every other record instead.
    """

    def __init__(self, tracker: Tracker, interval_s: float = 10.0):
        super().__init__(run_id=tracker.run_id or "", sampling_interval=interval_s, tracking_uri=tracker.uri)
        self._tracker = tracker
        self._logging_step = _next_step(tracker.spool.records("metrics"), self._metrics_prefix)

    def monitor(self) -> None:
        while not self._shutdown_event.is_set():
            self.collect_metrics()
            self._shutdown_event.wait(self.sampling_interval)
            self.publish_metrics(self.aggregate_metrics())  # the last, partial interval is published too

    def publish_metrics(self, metrics: dict[str, float]) -> None:
        self._tracker.log_metrics({self._metrics_prefix + k: v for k, v in metrics.items()}, self._logging_step)
        self._logging_step += 1
        for monitor in self.monitors:
            monitor.clear_metrics()

    def finish(self) -> None:
        if self._process is not None:
            self._shutdown_event.set()
            self._process.join(timeout=5)
            self._process = None


def _next_step(records: list[dict[str, Any]], prefix: str) -> int:
    steps = [r["step"] for r in records if any(k.startswith(prefix) for k in r["metrics"])]
    return max(steps) + 1 if steps else 0


def sync(spool_dir: str | Path, timeout_s: float = 120.0) -> tuple[str | None, int, int]:
    """Send whatever a spool still holds; returns (run id, records sent, records left)."""
    spool = Spool(spool_dir)
    tracker = Tracker(spool_dir, spool.state.get("uri", ""), spool.state.get("experiment", ""))
    deadline = time.monotonic() + timeout_s
    sent = tracker.send_pending()
    while tracker.spool.pending() and time.monotonic() < deadline and tracker.last_error is None:
        sent += tracker.send_pending()
    return tracker.run_id, sent, len(tracker.spool.pending())


def client_for(uri: str = "") -> MlflowClient:
    """A plain MLflow client for read-only questions (tests, resume lookups)."""
    uri = resolve_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def run_output_dir(run_id: str, uri: str = "") -> str | None:
    """The training folder recorded on a run (tag ``pipeline.output_dir``), if the run has one."""
    return client_for(uri).get_run(run_id).data.tags.get("pipeline.output_dir")


def load_model(model_uri: str, tracking_uri: str = "") -> Any:
    """Load a logged model back as a pyfunc (``runs:/<id>/model``, ``models:/<name>@<alias>``, ...)."""
    with _using_tracking_uri(resolve_tracking_uri(tracking_uri)):
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


@contextmanager
def _using_tracking_uri(uri: str) -> Iterator[None]:
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


def log_prediction(
    summary: dict[str, Any],
    params: dict[str, Any],
    files: list[Path],
    experiment: str = "predictions",
    tracking_uri: str = "",
    model_run_id: str | None = None,
) -> str:
    """One finished run holding a prediction's summary: ``params``, numeric ``summary`` values as metrics,
    ``files`` as artifacts, tagged with the model's run (``pipeline.model_run_id``) when it came from one."""
    uri = resolve_tracking_uri(tracking_uri)
    client = client_for(uri)
    experiment_id = _experiment_id(client, experiment, uri)
    tags = {"pipeline.kind": "prediction"}
    if model_run_id:
        tags["pipeline.model_run_id"] = model_run_id
    run = client.create_run(experiment_id, tags=tags, run_name=f"predict {params.get('source', '')}"[:250])
    run_id = run.info.run_id
    metrics = [Metric(k, float(v), _now_ms(), 0) for k, v in summary.items() if isinstance(v, (int, float))]
    client.log_batch(run_id, metrics=metrics, params=[Param(k, str(v)[:6000]) for k, v in params.items()], tags=[])
    for path in files:
        if path.exists():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    return run_id


def best_run(
    experiment: str, metric: str, tracking_uri: str = "", lowest: bool = False
) -> tuple[str, float, list[str]]:
    """The finished training run of ``experiment`` with the highest (or lowest) ``metric``:
    (run id, its value, the ids of every run compared). Prediction runs and runs without the metric are left out."""
    client = client_for(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"experiment {experiment!r}: no such experiment at {resolve_tracking_uri(tracking_uri)}")
    runs = client.search_runs([found.experiment_id], filter_string="attributes.status = 'FINISHED'", max_results=5000)
    trainings = [run for run in runs if run.data.tags.get("pipeline.kind") != "prediction"]
    scored = [(run.info.run_id, run.data.metrics[metric]) for run in trainings if metric in run.data.metrics]
    scored = [(run_id, value) for run_id, value in scored if value == value]  # NaN never wins
    if not scored:
        raise LookupError(f"experiment {experiment!r}: no finished run has the metric {metric!r}")
    run_id, value = (min if lowest else max)(scored, key=lambda pair: pair[1])
    return run_id, value, [run_id for run_id, _ in scored]


def register_model(run_id: str, name: str, alias: str, reason: dict[str, str], tracking_uri: str = "") -> str:
    """Register the model logged by ``run_id`` as a new version of ``name``, point ``alias`` at it, and tag
    the version with ``reason`` (``pipeline.*`` keys); returns the version."""
    uri = resolve_tracking_uri(tracking_uri)
    with _using_tracking_uri(uri), warnings.catch_warnings():
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

"""The Tracker: one training's MLflow run, lossless when the server is away; and `sync`, which replays a spool.

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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelOutput, LoggedModelStatus, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.models.signature import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import ParamSchema, ParamSpec

from pipeline.checkpoints import SERVED_WEIGHTS, SERVING_MODULE
from pipeline.credentials import AUTH_HINT, is_auth_failure, strip_credentials
from pipeline.destinations import writer_lock
from pipeline.redact import redact_text
from pipeline.tracking.spool import REFUSED, Spool, original_name
from pipeline.tracking.store import get_or_create_experiment, new_client, now_ms, resolve_tracking_uri

LOG = logging.getLogger("pipeline.tracking")


MODEL_NAME = "model"
# The served model's one parameter: predict's conf (the lowest score kept, the threshold of an unnamed class).
SIGNATURE = ModelSignature(
    inputs=None,
    outputs=None,
    params=ParamSchema([ParamSpec("conf", "double", 0.25), ParamSpec("drift", "boolean", False)]),
)
# log_batch limits of the MLflow REST API
_MAX_METRICS, _MAX_PARAMS, _MAX_TAGS = 1000, 100, 100
_BATCHED = {"metrics", "params", "tags"}
# Answers meaning "the server understood and refuses": resending the same record cannot succeed.
_REFUSALS = {"INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "BAD_REQUEST", "INVALID_STATE"}


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
        # The spool is this process's alone until `finish` (or `close`): a `sync` of it, in another process,
        # waits or stops; a `sync` already sending it is waited for (it ends within its timeout).
        self._held = ExitStack()
        self._held.enter_context(writer_lock(spool_dir, "train", None, wait=True))
        try:
            self.spool = Spool(spool_dir)
            saved = self.spool.state
            # A resumed or replayed spool keeps the server and experiment it was made for. The URI kept (and
            # printed, and spooled) has no credentials: they go to this process's environment only.
            self.uri = strip_credentials(saved.get("uri") or resolve_tracking_uri(uri))
            self.experiment = saved.get("experiment") or experiment
            self.spool.update_state(uri=self.uri, experiment=self.experiment)
        except BaseException:
            self._held.close()
            raise
        self.run_name = run_name
        self.flush_interval_s = flush_interval_s
        self.retry_interval_s = retry_interval_s
        # Our own worker retries; a request should fail fast rather than back off inside the client.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        whole_seconds = max(1, math.ceil(request_timeout_s))  # mlflow reads this variable as an int
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(whole_seconds)
        self._client_made: MlflowClient | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._send_lock = threading.Lock()
        self._worker: threading.Thread | None = None
        self._offline_since: float | None = None
        self._next_try = 0.0
        self.last_error: str | None = None

    @property
    def _client(self) -> MlflowClient:
        """Made on first send, in the worker, where a failure (a store that cannot open) only delays records."""
        if self._client_made is None:
            self._client_made = new_client(self.uri)
        return self._client_made

    # ---- the training side: journal and return ------------------------------------------------------

    @property
    def run_id(self) -> str | None:
        return self.spool.state.get("run_id")

    def open_run(self, tags: dict[str, str] | None = None) -> None:
        """Journal the run's creation, once per spool; on a spool that has its run, journal the tags only."""
        if not self.run_id and not self.spool.records("create_run"):
            self.spool.append(
                {"kind": "create_run", "run_name": self.run_name, "start_time": now_ms(), "tags": tags or {}}
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
        self.spool.append({"kind": "metrics", "step": int(step), "ts": timestamp_ms or now_ms(), "metrics": values})

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

    def log_model(
        self,
        weights: str | Path,
        step: int = 0,
        extra_files: Iterable[str | Path] = (),
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Log YOLO weights as an MLflow pyfunc model named ``model`` (loadable by ``runs:/<id>/model``);
        ``metadata`` goes into its MLmodel file (e.g. the training size and image side)."""
        files = {"weights": weights, **{f"extra{i}": f for i, f in enumerate(extra_files)}}
        self.spool.append({"kind": "model", "step": int(step), "metadata": dict(metadata or {})}, files=files)

    def log_model_file(self, path: str | Path) -> None:
        """Add a file to the run's logged model, beside its ``MLmodel`` (what a served model reads there: the
        training's drift baseline); sent after the model, whose record comes first in the journal."""
        self.spool.append({"kind": "model_file"}, files={"local": path})

    def finish(self, status: str = "FINISHED", timeout_s: float = 30.0) -> bool:
        """End the run, try to send everything, stop the worker; True when nothing is left in the spool."""
        self.spool.append({"kind": "end", "status": status, "end_time": now_ms()})
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._wait_while_acknowledged(timeout_s)
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
        if self._worker is None or not self._worker.is_alive():  # a send still in flight keeps the spool held
            self.close()
        return done

    def _wait_while_acknowledged(self, stall_s: float) -> None:
        """Let the worker send what is left: wait as long as the server keeps acknowledging records, and
        give up once ``stall_s`` passes without one (a loaded machine may need minutes for a model; a server
        that went away acknowledges nothing)."""
        assert self._worker is not None
        acked = self.spool.state.get("acked", 0)
        quiet_since = time.monotonic()
        while self._worker.is_alive():
            self._worker.join(timeout=min(1.0, stall_s))
            now_acked = self.spool.state.get("acked", 0)
            if now_acked != acked:
                acked, quiet_since = now_acked, time.monotonic()
            elif time.monotonic() - quiet_since >= stall_s:
                return

    def close(self) -> None:
        """Let go of the spool (`finish` does, once everything is sent or kept); a tracker never started, too."""
        self._held.close()

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
        self.last_error = redact_text(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")[:300]
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
            if is_auth_failure(self.last_error):
                LOG.warning("tracking: %s refused the credentials; %s", self.uri, AUTH_HINT)

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
            with _under_real_name(self.spool.path(first["local"])) as target:
                if target.is_dir():
                    self._client.log_artifacts(run_id, str(target), first["artifact_path"] or target.name)
                else:
                    self._client.log_artifact(run_id, str(target), first["artifact_path"])
        elif first["kind"] == "model":
            self._log_model(run_id, first)
        elif first["kind"] == "model_file":
            self._log_model_file(run_id, first)
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
        return get_or_create_experiment(self._client, self.experiment, self.uri)

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

    def _logged_models(self, run_id: str, experiment_id: str) -> list[Any]:
        """The run's finished logged models named ``MODEL_NAME`` (one, once its model record is sent)."""
        return [
            m
            for m in self._client.search_logged_models([experiment_id], filter_string=f"name = '{MODEL_NAME}'")
            if m.source_run_id == run_id and m.status == LoggedModelStatus.READY
        ]

    def _log_model_file(self, run_id: str, record: dict[str, Any]) -> None:
        models = self._logged_models(run_id, self._client.get_run(run_id).info.experiment_id)
        local = self.spool.path(record["local"])
        if not models:  # its weights were gone from the spool: nothing to add the file to
            LOG.warning("tracking: run %s logged no model to add %s to", run_id, original_name(local))
            return
        with _under_real_name(local) as target:
            self._client.log_model_artifact(models[0].model_id, str(target))

    def _log_model(self, run_id: str, record: dict[str, Any]) -> None:
        """A pyfunc model, logged through the client API (no global active run), at most once per run."""
        experiment_id = self._client.get_run(run_id).info.experiment_id
        if self._logged_models(run_id, experiment_id):
            return  # sent before, and the acknowledgement was lost
        from importlib.metadata import PackageNotFoundError, version

        import pipeline

        try:  # which pipeline code the model carries
            project = version("yolo-pipeline")
        except PackageNotFoundError:
            project = "unknown"  # run from a source tree that was never installed
        weights = self.spool.path(record["weights"])
        extras = {k: self.spool.path(v) for k, v in record.items() if k.startswith("extra")}
        with tempfile.TemporaryDirectory() as tmp:
            local, data = Path(tmp) / MODEL_NAME, Path(tmp) / "yolo"  # MLflow copies it in as data/yolo
            checkpoint = _inference_weights(weights, data / SERVED_WEIGHTS)
            for spooled in extras.values():
                _renamed_copy(spooled, data)
            metadata = {**(record.get("metadata") or {}), "yolo_pipeline_version": project}
            metadata["weights"] = f"data/{data.name}/{SERVED_WEIGHTS}/{checkpoint.name}"  # where predict finds it
            with warnings.catch_warnings():
                # MLflow nudges towards models-from-code and type-hint signatures; neither fits a file-based model.
                warnings.simplefilter("ignore")
                logging.getLogger("mlflow.pyfunc").disabled = True
                try:
                    mlflow.pyfunc.save_model(
                        str(local),
                        # MLflow imports this module from the model's code/ folder and calls its _load_pyfunc: no
                        # pickle to trust, and the tracking package never imports the inference it names.
                        loader_module=SERVING_MODULE,
                        data_path=str(data),
                        # This project is on no package index: its code travels in the model (MLflow leaves out
                        # __pycache__), and the model's loader puts it first on sys.path.
                        code_paths=[str(Path(pipeline.__file__).parent)],
                        pip_requirements=_requirements(),
                        signature=SIGNATURE,
                        metadata=metadata,
                    )
                finally:
                    logging.getLogger("mlflow.pyfunc").disabled = False
            model = self._client.create_logged_model(experiment_id, name=MODEL_NAME, source_run_id=run_id)
            self._client.log_model_artifacts(model.model_id, str(local))
            self._client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
            self._client.log_outputs(run_id, [LoggedModelOutput(model.model_id, record["step"])])


@contextmanager
def _under_real_name(spooled: Path) -> Iterator[Path]:
    """A copy of a spooled file or folder under its own name (the spool's copy carries a sequence prefix), for as
    long as it is being uploaded."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / original_name(spooled)
        (shutil.copytree if spooled.is_dir() else shutil.copy2)(spooled, target)
        yield target


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
    """The model's pip requirements: what its predict path (`pipeline.inference.predict`) imports, pinned to the
    versions installed here, so a fresh environment (``mlflow models serve`` without ``--env-manager local``) runs it
    as this one does; a package not installed here is left out (the predict path runs without it, as here). The
    project itself is on no package index: its code travels in the model (``code_paths``)."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in (
        *("ultralytics", "torch", "torchvision", "mlflow", "numpy", "opencv-python", "onnxruntime", "onnx"),
        *("pydantic", "pyyaml", "pillow", "psutil", "tqdm", "scipy", "watchdog"),
    ):
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            continue
    return pinned


def sync(spool_dir: str | Path, timeout_s: float = 120.0) -> tuple[str | None, int, int]:
    """Send whatever a spool still holds; returns (run id, records sent, records left).

    The spool is held while it is sent: a training writing it, or another `sync` sending it, makes this one
    stop at once with `FolderBusy` (or, under ``--wait``, wait), so no record is sent twice."""
    with writer_lock(spool_dir, "sync", None):
        spool = Spool(spool_dir)  # read once held: what an earlier sender acknowledged is not sent again
        tracker = Tracker(spool_dir, spool.state.get("uri", ""), spool.state.get("experiment", ""))
        try:
            deadline = time.monotonic() + timeout_s
            sent = tracker.send_pending()
            while tracker.spool.pending() and time.monotonic() < deadline and tracker.last_error is None:
                sent += tracker.send_pending()
            return tracker.run_id, sent, len(tracker.spool.pending())
        finally:
            tracker.close()

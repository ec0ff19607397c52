"""MLflow tracking: the only package that imports mlflow, and the only one that reads or writes the journal.

- `tracker`: one training's run, journaled to disk and sent in the background (lossless when the server is away);
- `spool`: the write-ahead journal behind the tracker; `spool_status` tells others what a spool holds;
- `store`: the tracking URI, clients, experiments;
- `pyfunc`, `system_metrics`: the model flavour and system metrics a training logs;
- `registry`: models by URI, choosing and registering the best;
- `runs`: runs written in one go (prediction summaries, sweep parents) and runs read back for comparison.
"""

import os

# Before mlflow's first import (each module here imports it at its own): mlflow's telemetry would write an
# installation id into ~/.config/mlflow/ and send usage events from every process. A user's own setting stays.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from pipeline.tracking.registry import best_run, load_model, model_run_id, register_model, run_metric, run_output_dir  # noqa: E402
from pipeline.tracking.runs import log_prediction  # noqa: E402
from pipeline.tracking.spool import SpoolStatus, is_spool, spool_status  # noqa: E402
from pipeline.tracking.store import client_for, resolve_tracking_uri  # noqa: E402
from pipeline.tracking.system_metrics import SystemMetricsSampler  # noqa: E402
from pipeline.tracking.tracker import MODEL_NAME, Tracker, sync  # noqa: E402

__all__ = [
    "MODEL_NAME",
    "SpoolStatus",
    "SystemMetricsSampler",
    "Tracker",
    "best_run",
    "client_for",
    "is_spool",
    "load_model",
    "log_prediction",
    "model_run_id",
    "register_model",
    "resolve_tracking_uri",
    "run_metric",
    "run_output_dir",
    "spool_status",
    "sync",
]

"""Keep ultralytics to itself: a private settings folder, no auto-installs, its own integrations off.

Ultralytics writes a settings file into the user's home on import, may pip-install missing packages,
and attaches its own MLflow (and other) loggers to every trainer. The pipeline owns tracking, so all
of that is switched off here before anything imports ultralytics.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

_INTEGRATIONS = ("mlflow", "clearml", "comet", "dvc", "raytune", "tensorboard", "wandb", "sync")
_configured = False


def configure_ultralytics() -> None:
    """Idempotent; call before the first ``import ultralytics`` in a process, and before each checkpoint load."""
    global _configured
    from pipeline.load_policy import apply_load_policy
    from pipeline.telemetry import block_telemetry

    apply_load_policy()  # checkpoints are pickles: safe loading unless the user trusts them (re-read each call)
    if _configured:
        return
    block_telemetry()  # ultralytics' exporter and AutoBackend import ONNX Runtime and OpenVINO
    if "YOLO_CONFIG_DIR" not in os.environ:
        # A per-process folder (inherited by DDP workers through the environment), removed at exit.
        folder = tempfile.mkdtemp(prefix="yolo-pipeline-ultralytics-")
        os.environ["YOLO_CONFIG_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    from ultralytics.utils import SETTINGS

    # dict.update, not SETTINGS.update: change this process only, never write the user's settings file.
    dict.update(SETTINGS, dict.fromkeys(_INTEGRATIONS, False))
    _configured = True

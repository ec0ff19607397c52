"""The drift baseline a finished training records: what its best.pt sees of the validation split, so that `predict`
checks drift on a model fresh from training, before any calibration (``train.drift_baseline``).

The val images go through `predict` itself (`pipeline.inference.listed`, what calibrate screens a split with), at
predict's own default conf for every class: the thresholds a model without a screen screens at. The baseline is
``weights/drift_baseline.npz`` beside the checkpoint, with the checkpoint's SHA-256 (a baseline never applies to
other weights); the tracking callback also sends it to the training's run. Any failure is one warning line: the
training succeeded, and a missing baseline only costs predict's drift check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.data.dataset import images_in, read_data_yaml
from pipeline.drift import FILENAME, TRAINING, Baseline, rethresholded
from pipeline.inference.options import PredictOptions, RunOptions
from pipeline.messages import first_line

LOG = logging.getLogger("pipeline.training")
SPLIT = "val"


def record_baseline(weights: Path, data_yaml: str | Path, device: str) -> Baseline | None:
    """``weights`` (a finished training's best.pt) over the val split of ``data_yaml`` on ``device``, kept as the
    baseline beside it; None when the split gave nothing to keep. Raises what predict raises."""
    spec = read_data_yaml(data_yaml, require=(SPLIT,))
    images = [str(path) for path in images_in(spec.splits[SPLIT])]
    if not images:
        return None
    from pipeline.inference.listed import predict_listed

    conf = PredictOptions.model_fields["conf"].default  # predict's own, without a screen
    with _only_warnings("pipeline.inference", "ultralytics"):
        listed = predict_listed(images, str(weights), RunOptions(conf=conf, device=device))
    if listed.seen is None or not listed.seen.images:
        return None
    # Every class named at that conf, as calibrate's screen names each class at its threshold.
    thresholds = {str(name): conf for name in listed.settings["classes"]}
    baseline = Baseline(
        sample=rethresholded(listed.seen, thresholds),
        model_sha256=listed.settings["model_sha256"],
        data=str(spec.source),
        split=SPLIT,
        extra={"origin": TRAINING},
    )
    baseline.save(Path(weights).with_name(FILENAME))
    return baseline


def after_training(trainer: Any) -> Baseline | None:
    """`record_baseline` of a finished training (its best.pt, data.yaml and device), said in one line; None, with a
    warning, when it could not be made. Never raises: the training succeeded whatever happens here."""
    started = time.perf_counter()
    try:
        baseline = record_baseline(trainer.best, trainer.args.data, predict_device(trainer.device))
    except Exception as exc:  # noqa: BLE001 - a baseline that cannot be made costs the drift check, not the training
        LOG.warning("drift baseline: not recorded (%s: %s)", type(exc).__name__, first_line(exc, 200))
        return None
    if baseline is None:
        LOG.warning("drift baseline: not recorded (no image of the %s split could be read)", SPLIT)
        return None
    path = Path(trainer.best).with_name(FILENAME)
    LOG.info("drift baseline: %d %s images, %s (%.1f s)", baseline.images, SPLIT, path, time.perf_counter() - started)
    return baseline


class _WarningsOfThisThread(logging.Filter):
    """Drops what this thread logs below a warning; other threads' lines (a sweep's other trials) pass."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.thread != self.thread


@contextmanager
def _only_warnings(*loggers: str) -> Iterator[None]:
    """predict's own lines (the runtime it races, ultralytics loading the ONNX export) would read as the training's
    at its end: only their warnings are shown while this thread predicts the baseline."""
    found, quiet = [logging.getLogger(name) for name in loggers], _WarningsOfThisThread()
    for logger in found:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in found:
            logger.removeFilter(quiet)


def predict_device(device: object) -> str:
    """The device a training ran on (a torch device), as predict names it: ``cpu``, ``mps``, ``0`` (rank 0's GPU)."""
    kind, index = getattr(device, "type", str(device)), getattr(device, "index", None)
    if kind == "cuda":
        return str(index or 0)
    return kind if kind in {"cpu", "mps"} else "auto"

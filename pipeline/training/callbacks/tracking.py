"""A training's MLflow run: started with the training, one record per epoch exactly once, the model, the end.

Each epoch's record is made exactly once: ``on_metrics_saved`` (before the checkpoint) writes it to
``pending_epoch.json``; ``on_checkpoint_saved`` then journals it. A kill between the two leaves a pending record
that a resume keeps only if the checkpoint it resumes from includes that epoch (``on_setup``), so the epochs in
MLflow are 1..N with none missing and none twice. Only the process that tracks has a tracker; a failure to start
one costs the tracking, never the training.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from pipeline.drift import DIGEST_TAG, FILENAME, Baseline
from pipeline.files import write_atomic
from pipeline.redact import redact_text
from pipeline.training.artifacts import log_final_artifacts
from pipeline.training.callbacks.base import FINISHED, Callback
from pipeline.training.epoch_listener import STOPPED_BY_TAG, StoppedEarly
from pipeline.training.epoch_metrics import epoch_metrics, per_class_ap
from pipeline.training.session import Session

LOG = logging.getLogger("pipeline.training")
PENDING = "pending_epoch.json"


class Tracking(Callback):
    def __init__(self, session: Session | None):
        self.session = session
        self.tracker: Any = None
        self.sampler: Any = None  # the system metrics
        self.tracking_process = False  # set by on_fit_start: it runs in the single process or rank 0 only

    def on_fit_start(self, trainer: Any) -> None:
        """Start the tracker and the system metrics."""
        self.tracking_process = True
        if self.session is None or not self.session.tracking_enabled:
            return
        try:
            self.tracker = self.session.tracker()
            self.tracker.start(tags={"pipeline.resumed": "true"} if trainer.resume else None)
        except Exception as exc:  # noqa: BLE001 - whatever broke, the journal so far stays in the spool for `sync`
            LOG.warning(
                "tracking: could not start (%s); training goes on untracked; what was journaled is in %s",
                redact_text(f"{type(exc).__name__}: {exc}".splitlines()[0]),
                self.session.spool_dir,
            )
            if self.tracker is not None:
                self.tracker.close()  # the spool is let go: `sync` sends what was journaled
            self.tracker = None
            return
        if self.session.config.tracking.system_metrics:
            try:
                from pipeline.tracking import SystemMetricsSampler

                interval = self.session.config.tracking.system_metrics_interval_s
                self.sampler = SystemMetricsSampler(self.tracker, interval)
                self.sampler.start()
            except Exception as exc:  # noqa: BLE001 - system metrics are a nicety
                LOG.warning("tracking: no system metrics (%s: %s)", type(exc).__name__, exc)
                self.sampler = None

    def on_setup(self, trainer: Any) -> None:
        if self.tracker is None:
            return
        self._settle_pending_epoch(trainer, checkpoint_epoch=trainer.start_epoch - 1)
        if trainer.final_stage_only and not self.tracker.spool.records("model"):
            # The kill came between the last checkpoint and the model's journaling.
            self._journal_model(trainer, step=trainer.start_epoch)

    def on_metrics_saved(self, trainer: Any, metrics: dict[str, float]) -> None:
        """The epoch's record, pending until its checkpoint is written."""
        if self.tracker is None:
            return
        record = epoch_metrics(metrics, trainer.fitness, time.time() - trainer.epoch_time_start)
        if trainer.gradients is not None:
            record.update(trainer.gradients.metrics())
        box = trainer.validator.metrics.box if trainer.validator is not None else None
        if box is not None:
            record.update(per_class_ap(trainer.data["names"], box.ap_class_index, box.ap50, box.ap))
        pending = {"epoch": trainer.epoch, "metrics": record}
        write_atomic(Path(trainer.save_dir) / PENDING, json.dumps(pending))

    def on_checkpoint_saved(self, trainer: Any) -> None:
        if self.tracker is None:
            return
        self._settle_pending_epoch(trainer, checkpoint_epoch=trainer.epoch)
        if trainer.stop:
            self._journal_model(trainer, step=trainer.epoch + 1)

    def on_fit_end(self, trainer: Any, status: str, error: BaseException | None) -> None:
        # The baseline is predicted while the worker uploads the model (journaled at the last checkpoint).
        baseline = self._drift_baseline(trainer) if status == FINISHED else None
        if self.tracker is None:
            return
        if self.sampler is not None:
            self.sampler.finish()
        if isinstance(error, StoppedEarly):
            self.tracker.set_tags({STOPPED_BY_TAG: error.stopped_by})
        if status == FINISHED:
            try:
                log_final_artifacts(trainer, self.tracker)
            except Exception as exc:  # noqa: BLE001 - the training succeeded; a missing plot must not undo that
                LOG.warning("tracking: could not record the final artifacts (%s: %s)", type(exc).__name__, exc)
        if baseline is not None:
            self._journal_baseline(trainer, baseline)
        self.tracker.finish(status, timeout_s=self.session.config.tracking.finish_timeout_s)
        self.tracker = None

    def _drift_baseline(self, trainer: Any) -> Baseline | None:
        """A finished training's drift baseline beside best.pt (``train.drift_baseline``), in the tracking process
        only; None when not asked for, without a best.pt, or on a failure (one warning line)."""
        if self.session is None or not self.tracking_process or not self.session.config.train.drift_baseline:
            return None
        if not trainer.best.exists():  # no epoch had a finite fitness: no model to record for
            return None
        from pipeline.training.drift_baseline import after_training

        return after_training(trainer)

    def _journal_baseline(self, trainer: Any, baseline: Baseline) -> None:
        """The baseline as an artifact of the run (where predict looks for it), its digest as the run's tag."""
        try:
            from pipeline.tracking.screens import TRAINING_BASELINE_PATH

            path = trainer.best.with_name(FILENAME)
            self.tracker.log_artifact(path, TRAINING_BASELINE_PATH)
            self.tracker.set_tags({DIGEST_TAG: baseline.digest()})
            if self.session.config.tracking.log_model:  # beside MLmodel: what `mlflow models serve` compares with
                self.tracker.log_model_file(path)
        except Exception as exc:  # noqa: BLE001 - the file stays beside best.pt, where predict finds it too
            LOG.warning("tracking: could not record the drift baseline (%s: %s)", type(exc).__name__, exc)

    def _journal_model(self, trainer: Any, step: int) -> None:
        """After the last epoch the weights are final: journal them now, so they upload during the final validation."""
        # best.pt is missing only when no epoch ever had a finite fitness; the last weights are all there is then.
        weights = trainer.best if trainer.best.exists() else trainer.last
        if not (self.session.config.tracking.log_model and weights.exists()):
            return
        # The spool takes a copy now; the worker strips the optimizer state from it, off this thread.
        side, tile = self.session.dataset.get("image_side"), self.session.config.data.tile
        metadata = {"imgsz": int(trainer.args.imgsz), **({"training_image_side": int(side)} if side else {})}
        if tile is not None:
            metadata["training_tile"] = {"size": tile.size, "overlap": tile.overlap}
        extra = [Path(trainer.save_dir) / "config.yaml"]
        self.tracker.log_model(weights, step=step, extra_files=extra, metadata=metadata)

    def _settle_pending_epoch(self, trainer: Any, checkpoint_epoch: int) -> None:
        """Journal the pending epoch record if the checkpoint covers it; drop it if the epoch will be redone."""
        path = Path(trainer.save_dir) / PENDING
        if not path.exists():
            return
        pending = json.loads(path.read_text(encoding="utf-8"))
        if pending["epoch"] <= checkpoint_epoch:
            self.tracker.log_metrics(pending["metrics"], step=pending["epoch"] + 1)
        path.unlink()

"""The epoch listener of whoever drives the training (a Ray Tune trial; epoch_listener.py): after each epoch but the
last, with its checkpoint written and its record journaled, the listener hears the epoch and may stop the training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.training.callbacks.base import Callback
from pipeline.training.epoch_listener import EpochListener, EpochReport, StoppedEarly
from pipeline.training.epoch_metrics import epoch_metrics


class EpochListening(Callback):
    def __init__(self, listener: EpochListener | None = None):
        self.listener = listener

    def on_fit_epoch_end(self, trainer: Any) -> None:
        """Go on, or raise StoppedEarly as the listener says."""
        # on_fit_epoch_end also runs in the final validation (epoch == epochs there) and after the last epoch
        if self.listener is None or trainer.stop or trainer.epoch + 1 >= trainer.epochs:
            return
        report = EpochReport(
            epoch=trainer.epoch + 1,
            epochs=trainer.epochs,
            metrics=epoch_metrics(trainer.metrics, trainer.fitness),
            save_dir=Path(trainer.save_dir),
            run_id=trainer.tracker.run_id if trainer.tracker is not None else None,
        )
        if stopped_by := self.listener(report):
            raise StoppedEarly(stopped_by, report.epoch)

"""Positives per detection-head level, counted each epoch while the gradients are recorded (their diagnosis reads
them: the ``idle-level`` finding). The training loss's assigners are hooked at each epoch's start (the criterion
ultralytics would build at the first batch is built then); the counts are read at the epoch's end, before the
gradient record's epoch end takes them.
"""

from __future__ import annotations

import logging
from typing import Any

from pipeline.training.assignment import Assignment, AssignmentCounter
from pipeline.training.callbacks.base import Callback, unwrapped

LOG = logging.getLogger("pipeline.training")


class PositiveCounting(Callback):
    def __init__(self, counter: AssignmentCounter | None = None):
        self.counter = counter if counter is not None else AssignmentCounter()
        self.counts: Assignment | None = None  # the last epoch's, per assigner branch

    def on_train_epoch_start(self, trainer: Any) -> None:
        self.counts = None
        if trainer.gradients is None:
            return
        try:
            model = unwrapped(trainer.model)
            if getattr(model, "criterion", None) is None and hasattr(model, "init_criterion"):
                model.criterion = model.init_criterion()
            self.counter.attach(getattr(model, "criterion", None))
            self.counter.begin_epoch()
        except Exception as exc:  # noqa: BLE001 - the counts serve the diagnosis; the training goes on without them
            LOG.warning("gradients: positives per level not counted (%s: %s)", type(exc).__name__, exc)

    def on_train_epoch_end(self, trainer: Any) -> None:
        self.counts = self.counter.end_epoch() if trainer.gradients is not None else None

"""A hook between epochs for whoever drives a training (a Ray Tune trial): each epoch's metrics, and a way to stop.

The trainer calls the listener after an epoch's checkpoint is written and its record journaled, so a
training stopped there has every epoch it trained complete in MLflow. The listener returns the name of
what stops the training (``"asha"``) or None to go on; the trainer then raises `StoppedEarly`, and the
run ends as KILLED with the tag ``pipeline.stopped_by``. It is not called after the final epoch: that
training is ending anyway.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

STOPPED_BY_TAG = "pipeline.stopped_by"


@dataclass(frozen=True)
class EpochReport:
    epoch: int  # 1-based, as in MLflow's steps
    epochs: int  # the training's planned epochs
    metrics: dict[str, float]  # the epoch's record, under MLflow's names (mAP50_95, val.box_loss, fitness, ...)
    save_dir: Path  # the training folder (`resume` continues from it)
    run_id: str | None  # the MLflow run, when tracking started


EpochListener = Callable[[EpochReport], "str | None"]


class StoppedEarly(Exception):
    """The listener stopped the training between epochs (not an error of the training)."""

    def __init__(self, stopped_by: str, epoch: int):
        super().__init__(f"stopped by {stopped_by} after epoch {epoch}")
        self.stopped_by = stopped_by
        self.epoch = epoch

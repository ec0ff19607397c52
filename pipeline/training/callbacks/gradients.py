"""The training's gradient record (GradientRecorder), epoch by epoch, in the process that tracks.

The recorder is made after set-up (the model, its optimizer and AMP scaler built, a resume's epochs known). The
trainer's optimizer step feeds it; here each epoch is begun, reduced (before validation, with the epoch's mean
train loss and the positives each head level got) and, at the end of the training, reported. An epoch whose
gradients went non-finite stops the training when ``gradients.stop_on_nonfinite`` says so: every rank together.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from pipeline.config import GradientsConfig
from pipeline.training.callbacks.base import Callback, unwrapped
from pipeline.training.callbacks.positives import PositiveCounting
from pipeline.training.errors import NonFiniteGradients
from pipeline.training.gradient_recorder import GradientRecorder

LOG = logging.getLogger("pipeline.training")
CLIP_NORM = 10.0  # ultralytics' max_norm in its optimizer step


class GradientRecording(Callback):
    def __init__(self, settings: GradientsConfig | None, positives: PositiveCounting | None = None, rank: int = -1):
        self.settings = settings  # None: not recorded
        self.positives = positives  # runs its epoch end before this one's
        self.rank = rank  # -1: one process; under DDP every rank takes part in the stop decision
        self.recorder: GradientRecorder | None = None

    def on_setup(self, trainer: Any) -> None:
        if self.settings is None or not self.settings.enabled:
            return
        self.recorder = GradientRecorder(
            unwrapped(trainer.model),  # under DDP, names without the "module." prefix
            self.settings,
            Path(trainer.save_dir) / "gradients",
            amp=trainer.scaler.is_enabled(),
            clip_norm=CLIP_NORM,
            tracker=trainer.tracker,
            resumed_epochs=trainer.start_epoch,
            optimizer=trainer.optimizer,
        )

    def on_train_epoch_start(self, trainer: Any) -> None:
        if self.recorder is not None:
            self.recorder.begin_epoch()

    def on_train_epoch_end(self, trainer: Any) -> None:
        """Reduce the epoch's gradients; stop here if they went non-finite and that is asked."""
        fatal = None
        if self.recorder is not None:
            positives = self.positives.counts if self.positives is not None else None
            try:
                self.recorder.end_epoch(trainer.epoch + 1, epoch_loss(trainer.tloss), positives)
            except NonFiniteGradients as exc:
                kept = (
                    f"the last good checkpoint is {trainer.last} (epoch {trainer.epoch})"
                    if trainer.last.exists()
                    else "no checkpoint was saved before this epoch"
                )
                fatal = f"{exc}; {kept}"
        if self.rank != -1:  # every rank must stop together, or the others wait forever in the next all-reduce
            decision = [fatal]
            torch.distributed.broadcast_object_list(decision, 0)
            fatal = decision[0]
        if fatal:
            raise NonFiniteGradients(fatal)

    def on_fit_end(self, trainer: Any, status: str, error: BaseException | None) -> None:
        if self.recorder is None:
            return
        try:
            self.recorder.finish()
        except Exception as exc:  # noqa: BLE001 - the report must not hide how the training ended
            LOG.warning("gradients: could not write the report (%s: %s)", type(exc).__name__, exc)


def epoch_loss(tloss: Any) -> float | None:
    """The epoch's mean train loss (the sum of its items, ultralytics' running means), one read per epoch."""
    items = tloss.values() if isinstance(tloss, dict) else [tloss]
    tensors = [torch.as_tensor(v, dtype=torch.float32).sum().cpu() for v in items if v is not None]
    return float(torch.stack(tensors).sum()) if tensors else None

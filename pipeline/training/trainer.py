"""The ultralytics DetectionTrainer subclass that records a training in MLflow.

It lives in an importable module and reads its session (config, spool folder) from the file named by
``$YOLO_PIPELINE_SESSION``, so ultralytics' multi-GPU relaunch, which rebuilds the trainer class in
new processes from pickled arguments, rebuilds it with every hook. Only rank 0 (or the single
process) tracks; the DDP parent only launches.

The trainer keeps what overrides ultralytics' methods; each concern of a training (tracking with its
exactly-once epoch records, the gradient record, positives per head level, the epoch listener, the final
stage of a resume) is a callback in ``pipeline/training/callbacks/`` (base.py: the hooks and where they run).
``results.csv`` follows the epoch records' rule: a redone epoch's row replaces the one a kill left.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from pipeline.yolo_env import configure_ultralytics

# At import, not in a function: ultralytics reads its settings when first imported (below), and its multi-GPU
# relaunch imports this module in a new process. Harmless: ultralytics gets a temporary settings folder (named in
# this process' environment, removed at exit) and its integrations off in this process; no user file is written.
configure_ultralytics()

from ultralytics.models.yolo.detect import DetectionTrainer  # noqa: E402
from ultralytics.utils import DEFAULT_CFG, RANK  # noqa: E402

# Registers our transforms with albumentations' deserialiser, which ultralytics calls on the config's
# ``augmentations`` here and in resumed and multi-GPU trainings; an unknown name there would leave the
# training with no albumentations step at all (ultralytics logs the error and goes on).
import pipeline.augment.fast_transforms  # noqa: E402, F401
from pipeline.cpu import LoadProbe  # noqa: E402
from pipeline.files import write_atomic  # noqa: E402
from pipeline.training.callbacks import (  # noqa: E402
    Callback,
    EpochListening,
    FinalStage,
    GradientRecording,
    IgnoreRegions,
    PositiveCounting,
    PredictFacts,
    Tracking,
)
from pipeline.training.callbacks.base import ended_as  # noqa: E402
from pipeline.training.callbacks.gradients import CLIP_NORM  # noqa: E402
from pipeline.training.epoch_listener import EpochListener  # noqa: E402
from pipeline.training.session import Session  # noqa: E402
from pipeline.training.symmetry import add_symmetry  # noqa: E402
from pipeline.training.threads import use_cpu_share  # noqa: E402

LOG = logging.getLogger("pipeline.training")
SESSION_ENV = "YOLO_PIPELINE_SESSION"
__all__ = ["CLIP_NORM", "SESSION_ENV", "PipelineTrainer"]


class PipelineTrainer(DetectionTrainer):
    """DetectionTrainer + MLflow tracking with lossless, exactly-once epoch records."""

    def __init__(self, cfg: Any = DEFAULT_CFG, overrides: dict | None = None, _callbacks: dict | None = None):
        load = LoadProbe()  # over ultralytics' set-up: the share of the CPU other processes use, for the threads
        super().__init__(cfg, overrides, _callbacks)
        session_file = os.environ.get(SESSION_ENV)
        self.session = Session.load(session_file) if session_file else None
        if self.device.type == "cpu":  # ultralytics' select_device left min(8, cores - 1) threads
            asked = self.session.config.train.threads if self.session is not None else 0
            LOG.info("train: %s", use_cpu_share(asked, load))
        elif self.device.type == "cuda" and not self.args.deterministic and not self.args.multi_scale:
            torch.backends.cudnn.benchmark = True  # one input size: cuDNN times each convolution's algorithms once
        # Made here, in the class, so a trainer rebuilt by the multi-GPU relaunch has them too. Their hooks run in
        # this order (on_fit_end in the reverse): positives before gradients, whose epoch end takes their counts.
        self.tracking = Tracking(self.session)
        self.positives = PositiveCounting()
        gradients = self.session.config.gradients if self.session is not None else None
        self.gradient_recording = GradientRecording(gradients, self.positives, rank=RANK)
        self.listening = EpochListening()  # its listener is set by whoever drives the training (a Tune trial)
        self.final_stage = FinalStage()  # enabled by `resume` when every epoch was trained: validate best.pt, log, end
        self.ignore_regions = IgnoreRegions()  # on when the training dataset has them (data.tile.cut_boxes: ignore)
        self.pipeline_callbacks: list[Callback] = [
            PredictFacts(self.session),
            self.ignore_regions,
            self.tracking,
            self.positives,
            self.gradient_recording,
            self.listening,
            self.final_stage,
        ]
        # Ultralytics' events, by reference to this class' functions: the relaunch pickles this trainer's
        # callbacks and hands them to the rebuilt trainer, which must not run them twice.
        for event, hook in (
            ("on_train_epoch_start", PipelineTrainer._on_train_epoch_start),
            ("on_train_epoch_end", PipelineTrainer._on_train_epoch_end),
            ("on_fit_epoch_end", PipelineTrainer._on_fit_epoch_end),
        ):
            if hook not in self.callbacks.get(event, []):
                self.add_callback(event, hook)

    # ---- what the callbacks hold -------------------------------------------------------------------------

    @property
    def tracker(self) -> Any:
        """The MLflow tracker while the run is open (the tracking process only), else None."""
        return self.tracking.tracker

    @property
    def gradients(self) -> Any:
        """The GradientRecorder after set-up when gradients are recorded, else None."""
        return self.gradient_recording.recorder

    @property
    def epoch_listener(self) -> EpochListener | None:
        return self.listening.listener

    @epoch_listener.setter
    def epoch_listener(self, listener: EpochListener | None) -> None:
        self.listening.listener = listener

    @property
    def final_stage_only(self) -> bool:
        return self.final_stage.enabled

    @final_stage_only.setter
    def final_stage_only(self, enabled: bool) -> None:
        self.final_stage.enabled = enabled

    def _hooks(self, hook: str, *args: Any) -> None:
        for callback in self.pipeline_callbacks:
            getattr(callback, hook)(self, *args)

    def _on_train_epoch_start(self) -> None:
        self._hooks("on_train_epoch_start")

    def _on_train_epoch_end(self) -> None:
        self._hooks("on_train_epoch_end")

    def _on_fit_epoch_end(self) -> None:
        self._hooks("on_fit_epoch_end")

    # ---- ultralytics' methods ----------------------------------------------------------------------------

    def set_model_attributes(self) -> None:
        super().set_model_attributes()
        # Called by ultralytics' set-up after the model reaches its device and before the EMA copy, the
        # optimizer and any DDP wrapping. Ultralytics keeps a CPU model NCHW; oneDNN's convolutions train in
        # NHWC 1.25x faster per step on an AVX-512 CPU (scripts/benchmarks/train_throughput.py).
        if self.device.type == "cpu" and self.args.channels_last is not False:
            self.model = self.model.to(memory_format=torch.channels_last)

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        dataset = super().build_dataset(img_path, mode, batch)
        if mode == "train" and self.session is not None:
            if self.ignore_regions.present(dataset.im_files):  # data.tile.cut_boxes: ignore, or such a tile set
                self.ignore_regions.add_to(dataset, ignore_class=self.data["nc"])
            dataset = add_symmetry(dataset, self.session.config.augment.symmetry, self.args)
        return dataset

    def preprocess_batch(self, batch: dict) -> dict:
        return self.ignore_regions.take(super().preprocess_batch(batch))

    def get_class_counts(self) -> Any:
        with self.ignore_regions.left_out(self.train_loader.dataset):
            return super().get_class_counts()

    def plot_training_labels(self) -> None:
        with self.ignore_regions.left_out(self.train_loader.dataset):
            super().plot_training_labels()

    def _do_train(self) -> None:
        if RANK in {-1, 0}:
            self._hooks("on_fit_start")
        try:
            self.final_stage.run(self) if self.final_stage.enabled else super()._do_train()
        except BaseException as exc:
            for callback in reversed(self.pipeline_callbacks):
                callback.on_fit_end(self, ended_as(exc), exc)
            raise
        for callback in reversed(self.pipeline_callbacks):
            callback.on_fit_end(self, ended_as(None), None)

    def _setup_train(self) -> None:
        super()._setup_train()
        if RANK in {-1, 0}:
            self._hooks("on_setup")

    def resume_training(self, ckpt: dict | None) -> None:
        if not (self.final_stage.enabled and ckpt):
            return super().resume_training(ckpt)
        self.final_stage.load(self, ckpt)
        return None

    def validate(self) -> Any:
        # final_eval validates best.pt and draws every plot (curves, confusion matrix, batches) again: drawn by an
        # epoch's validation too (ultralytics does at the last epoch and at a patience stop), they are thrown away.
        if self.validator is not None:
            self.validator.args.plots = False
        return super().validate()

    def get_validator(self) -> Any:
        tile = self.session.config.data.tile if self.session is not None else None
        if tile is None:
            return super().get_validator()
        # A tiled training is scored on whole val images cut as predict cuts them, not shrunk whole to imgsz.
        from copy import copy

        from pipeline.training.tiled_validation import TiledDetectionValidator

        return TiledDetectionValidator(
            self.test_loader,
            save_dir=self.save_dir,
            args=copy(self.args),
            _callbacks=self.callbacks,
            tile_size=tile.size,
            overlap=tile.overlap,
            image_side=self.session.dataset.get("image_side"),
        )

    def save_metrics(self, metrics: dict[str, float]) -> None:
        _drop_rows_from(Path(self.csv), self.epoch + 1)  # a redone epoch replaces the row a kill left
        super().save_metrics(metrics)
        self._hooks("on_metrics_saved", metrics)

    def save_model(self) -> bool:
        # Ultralytics writes last.pt/best.pt in place; a kill mid-write would leave nothing to resume from.
        # Write them under a temporary name and rename, so a checkpoint on disk is always whole.
        final = {"last": self.last, "best": self.best}
        self.last, self.best = (path.with_name(path.name + ".partial") for path in final.values())
        try:
            saved = super().save_model()
        finally:
            partial = {"last": self.last, "best": self.best}
            self.last, self.best = final["last"], final["best"]
        for key, path in partial.items():
            if path.exists():
                os.replace(path, final[key])
        if saved:
            self._hooks("on_checkpoint_saved")
        return saved

    def optimizer_step(self) -> None:
        """Ultralytics' step (unscale, clip at 10, step, zero, EMA) with the gradients read between unscale and clip."""
        if self.gradients is None or not self.gradients.due():
            super().optimizer_step()
            return
        self.scaler.unscale_(self.optimizer)
        # The true gradients of the loss: unscaled, not yet clipped. The total norm computed for the statistics
        # is the one clipping needs, so clipping costs no second pass over the gradients.
        total_norm = self.gradients.observe_gradients(self.loss_items)
        torch.nn.utils.clip_grads_with_norm_(self.model.parameters(), CLIP_NORM, total_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad()
        self.gradients.observe_update()
        if self.ema:
            self.ema.update(self.model)


def _drop_rows_from(csv: Path, epoch: int) -> None:
    """Remove the rows of ``epoch`` and later from ultralytics' ``results.csv`` (rewritten only when needed)."""
    if not csv.exists():
        return
    header, *rows = csv.read_text(encoding="utf-8").splitlines(keepends=True)

    def epoch_of(row: str) -> float:
        try:
            return float(row.split(",", 1)[0])
        except ValueError:  # a row torn by a kill: it is redone
            return math.inf

    kept = [row for row in rows if row.endswith("\n") and epoch_of(row) < epoch]
    if len(kept) != len(rows):
        write_atomic(csv, header + "".join(kept))

"""The ultralytics DetectionTrainer subclass that records a training in MLflow.

It lives in an importable module and reads its session (config, spool folder) from the file named by
``$YOLO_PIPELINE_SESSION``, so ultralytics' multi-GPU relaunch, which rebuilds the trainer class in
new processes from pickled arguments, rebuilds it with every hook. Only rank 0 (or the single
process) tracks; the DDP parent only launches.

Each epoch's record is made exactly once: ``save_metrics`` (before the checkpoint) writes it to
``pending_epoch.json``; ``save_model`` (the checkpoint) then journals it. A kill between the two
leaves a pending record that a resume keeps only if the checkpoint it resumes from includes that
epoch, so the epochs in MLflow are 1..N with none missing and none twice. ``results.csv`` follows the
same rule: a redone epoch's row replaces the one the kill left.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
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
from ultralytics.utils.torch_utils import unwrap_model  # noqa: E402

# Registers our transforms with albumentations' deserialiser, which ultralytics calls on the config's
# ``augmentations`` here and in resumed and multi-GPU trainings; an unknown name there would leave the
# training with no albumentations step at all (ultralytics logs the error and goes on).
import pipeline.augment.fast_transforms  # noqa: E402, F401
from pipeline.checkpoints import record_image_side, record_training_tile  # noqa: E402
from pipeline.cpu import LoadProbe  # noqa: E402
from pipeline.files import write_atomic  # noqa: E402
from pipeline.redact import redact_text  # noqa: E402
from pipeline.train.artifacts import log_final_artifacts  # noqa: E402
from pipeline.train.assignment import AssignmentCounter  # noqa: E402
from pipeline.train.epoch_listener import STOPPED_BY_TAG, EpochListener, EpochReport, StoppedEarly  # noqa: E402
from pipeline.train.epoch_metrics import epoch_metrics, per_class_ap  # noqa: E402
from pipeline.train.errors import NonFiniteGradients  # noqa: E402
from pipeline.train.gradient_recorder import GradientRecorder  # noqa: E402
from pipeline.train.session import Session  # noqa: E402
from pipeline.train.symmetry import add_symmetry  # noqa: E402
from pipeline.train.threads import use_cpu_share  # noqa: E402

LOG = logging.getLogger("pipeline.train")
SESSION_ENV = "YOLO_PIPELINE_SESSION"
PENDING = "pending_epoch.json"
CLIP_NORM = 10.0  # ultralytics' max_norm in its optimizer step


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
        self.tracker = None
        self.sampler = None
        self.gradients: GradientRecorder | None = None
        self.assignment = AssignmentCounter()  # positives per head level, for the diagnosis (idle-level)
        self.epoch_listener: EpochListener | None = None  # set by whoever drives the training (a Tune trial)
        self.final_stage_only = False  # set by `resume` when every epoch was trained: validate best.pt, log, end
        # Registered here, in the class, so a trainer rebuilt by the multi-GPU relaunch has them too.
        self.add_callback("on_train_epoch_start", PipelineTrainer._begin_gradient_epoch)
        self.add_callback("on_train_epoch_end", PipelineTrainer._end_gradient_epoch)
        self.add_callback("on_fit_epoch_end", PipelineTrainer._tell_listener)

    def build_dataset(self, img_path: str, mode: str = "train", batch: int | None = None) -> Any:
        dataset = super().build_dataset(img_path, mode, batch)
        if mode == "train" and self.session is not None:
            dataset = add_symmetry(dataset, self.session.config.augment.symmetry, self.args)
        return dataset

    # ---- lifecycle -------------------------------------------------------------------------------------

    def _do_train(self) -> None:
        if RANK in {-1, 0}:
            self._open_tracking()
        try:
            self._final_stage() if self.final_stage_only else super()._do_train()
        except StoppedEarly as exc:
            self._finish_gradients()
            self._close_tracking("KILLED", {STOPPED_BY_TAG: exc.stopped_by})
            raise
        except BaseException as exc:
            self._finish_gradients()
            self._close_tracking("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
        self._finish_gradients()
        self._close_tracking("FINISHED")

    def _final_stage(self) -> None:
        """What ultralytics does after its last epoch (final validation of best.pt, plots, on_train_end), for a
        training killed there: every epoch is in last.pt, so none is trained again."""
        self._setup_train()
        self.epoch, self.stop = self.start_epoch - 1, True
        if self.tracker is not None and not self.tracker.spool.records("model"):
            self._journal_model()  # the kill came between the last checkpoint and the model's journaling
        self.final_eval()
        if self.args.plots:
            self.plot_metrics()
        self.run_callbacks("on_train_end")
        self._clear_memory()
        for loader in (self.train_loader, self.test_loader):
            if hasattr(loader, "close"):
                loader.close()

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

        from pipeline.train.tiled_validation import TiledDetectionValidator

        return TiledDetectionValidator(
            self.test_loader,
            save_dir=self.save_dir,
            args=copy(self.args),
            _callbacks=self.callbacks,
            tile_size=tile.size,
            overlap=tile.overlap,
            image_side=self.session.dataset.get("image_side"),
        )

    def resume_training(self, ckpt: dict | None) -> None:
        if not (self.final_stage_only and ckpt):
            return super().resume_training(ckpt)
        self._load_checkpoint_state(ckpt)  # ultralytics' resume refuses a checkpoint with no epoch left to train
        self.start_epoch = ckpt["epoch"] + 1
        return None

    def _open_tracking(self) -> None:
        """Start the tracker and the system metrics; a failure here costs the tracking, never the training."""
        if self.session is None or not self.session.tracking_enabled:
            return
        try:
            self.tracker = self.session.tracker()
            self.tracker.start(tags={"pipeline.resumed": "true"} if self.resume else None)
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

    def _close_tracking(self, status: str, tags: dict[str, str] | None = None) -> None:
        if self.tracker is None:
            return
        if self.sampler is not None:
            self.sampler.finish()
        if tags:
            self.tracker.set_tags(tags)
        if status == "FINISHED":
            try:
                log_final_artifacts(self, self.tracker)
            except Exception as exc:  # noqa: BLE001 - the training succeeded; a missing plot must not undo that
                LOG.warning("tracking: could not record the final artifacts (%s: %s)", type(exc).__name__, exc)
        self.tracker.finish(status, timeout_s=self.session.config.tracking.finish_timeout_s)
        self.tracker = None

    # ---- exactly-once epoch records --------------------------------------------------------------------

    def _setup_train(self) -> None:
        super()._setup_train()
        if RANK not in {-1, 0}:
            return
        side = self.session.dataset.get("image_side") if self.session is not None else None
        tile = self.session.config.data.tile if self.session is not None else None
        for network in (unwrap_model(self.model), self.ema.ema):  # saved with the weights, read by predict
            if side:  # predict infers tiles at the scale the model learns here
                record_image_side(network, side)
            if tile is not None:  # and cuts large images as the training data was cut
                record_training_tile(network, tile.size, tile.overlap)
        if self.tracker is not None:
            self._settle_pending_epoch(checkpoint_epoch=self.start_epoch - 1)
        if self.session is not None and self.session.config.gradients.enabled:
            self.gradients = GradientRecorder(
                unwrap_model(self.model),  # under DDP, names without the "module." prefix
                self.session.config.gradients,
                Path(self.save_dir) / "gradients",
                amp=self.scaler.is_enabled(),
                clip_norm=CLIP_NORM,
                tracker=self.tracker,
                resumed_epochs=self.start_epoch,
                optimizer=self.optimizer,
            )

    def save_metrics(self, metrics: dict[str, float]) -> None:
        _drop_rows_from(Path(self.csv), self.epoch + 1)  # a redone epoch replaces the row a kill left
        super().save_metrics(metrics)
        if self.tracker is None:
            return
        record = epoch_metrics(metrics, self.fitness, time.time() - self.epoch_time_start)
        if self.gradients is not None:
            record.update(self.gradients.metrics())
        box = self.validator.metrics.box if self.validator is not None else None
        if box is not None:
            record.update(per_class_ap(self.data["names"], box.ap_class_index, box.ap50, box.ap))
        pending = {"epoch": self.epoch, "metrics": record}
        write_atomic(Path(self.save_dir) / PENDING, json.dumps(pending))

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
        if self.tracker is not None and saved:
            self._settle_pending_epoch(checkpoint_epoch=self.epoch)
            if self.stop:
                self._journal_model()
        return saved

    def _journal_model(self) -> None:
        """After the last epoch the weights are final: journal them now, so they upload during the final validation."""
        # best.pt is missing only when no epoch ever had a finite fitness; the last weights are all there is then.
        weights = self.best if self.best.exists() else self.last
        if not (self.session.config.tracking.log_model and weights.exists()):
            return
        # The spool takes a copy now; the worker strips the optimizer state from it, off this thread.
        side, tile = self.session.dataset.get("image_side"), self.session.config.data.tile
        metadata = {"imgsz": int(self.args.imgsz), **({"training_image_side": int(side)} if side else {})}
        if tile is not None:
            metadata["training_tile"] = {"size": tile.size, "overlap": tile.overlap}
        self.tracker.log_model(
            weights, step=self.epoch + 1, extra_files=[self.save_dir / "config.yaml"], metadata=metadata
        )

    def _settle_pending_epoch(self, checkpoint_epoch: int) -> None:
        """Journal the pending epoch record if the checkpoint covers it; drop it if the epoch will be redone."""
        path = Path(self.save_dir) / PENDING
        if not path.exists():
            return
        pending = json.loads(path.read_text(encoding="utf-8"))
        if pending["epoch"] <= checkpoint_epoch:
            self.tracker.log_metrics(pending["metrics"], step=pending["epoch"] + 1)
        path.unlink()

    def _tell_listener(self) -> None:
        """After each epoch but the last (checkpoint written, record journaled): go on, or stop as the listener says."""
        # on_fit_epoch_end also runs in the final validation (self.epoch == self.epochs there) and after the last epoch
        if self.epoch_listener is None or self.stop or self.epoch + 1 >= self.epochs:
            return
        report = EpochReport(
            epoch=self.epoch + 1,
            epochs=self.epochs,
            metrics=epoch_metrics(self.metrics, self.fitness),
            save_dir=Path(self.save_dir),
            run_id=self.tracker.run_id if self.tracker is not None else None,
        )
        if stopped_by := self.epoch_listener(report):
            raise StoppedEarly(stopped_by, report.epoch)

    # ---- gradients ---------------------------------------------------------------------------------------

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

    def _begin_gradient_epoch(self) -> None:
        if self.gradients is not None:
            self.gradients.begin_epoch()
            self._count_assignments()

    def _count_assignments(self) -> None:
        """Hook the training loss's assigners (the criterion ultralytics would build at the first batch, built now)."""
        try:
            model = unwrap_model(self.model)
            if getattr(model, "criterion", None) is None and hasattr(model, "init_criterion"):
                model.criterion = model.init_criterion()
            self.assignment.attach(getattr(model, "criterion", None))
            self.assignment.begin_epoch()
        except Exception as exc:  # noqa: BLE001 - the counts serve the diagnosis; the training goes on without them
            LOG.warning("gradients: positives per level not counted (%s: %s)", type(exc).__name__, exc)

    def _epoch_loss(self) -> float | None:
        """The epoch's mean train loss (the sum of its items), one read per epoch."""
        items = self.tloss.values() if isinstance(self.tloss, dict) else [self.tloss]  # a dict of running means
        tensors = [torch.as_tensor(v, dtype=torch.float32).sum().cpu() for v in items if v is not None]
        return float(torch.stack(tensors).sum()) if tensors else None

    def _end_gradient_epoch(self) -> None:
        """Reduce the epoch's gradients (before validation); stop here if they went non-finite and that is asked."""
        fatal = None
        if self.gradients is not None:
            try:
                self.gradients.end_epoch(self.epoch + 1, self._epoch_loss(), self.assignment.end_epoch())
            except NonFiniteGradients as exc:
                kept = (
                    f"the last good checkpoint is {self.last} (epoch {self.epoch})"
                    if self.last.exists()
                    else "no checkpoint was saved before this epoch"
                )
                fatal = f"{exc}; {kept}"
        if RANK != -1:  # every rank must stop together, or the others wait forever in the next all-reduce
            decision = [fatal]
            torch.distributed.broadcast_object_list(decision, 0)
            fatal = decision[0]
        if fatal:
            raise NonFiniteGradients(fatal)

    def _finish_gradients(self) -> None:
        if self.gradients is None:
            return
        try:
            self.gradients.finish()
        except Exception as exc:  # noqa: BLE001 - the report must not hide how the training ended
            LOG.warning("gradients: could not write the report (%s: %s)", type(exc).__name__, exc)


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

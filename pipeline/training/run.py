"""Start and resume trainings: config in, trained detector and one MLflow run out."""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipeline.augment.spec import serialize, write_augment_spec
from pipeline.config import Config, ConfigError, save_config, warn_fine_tuning_rate, warn_ineffective_settings
from pipeline.data.training_data import TrainingData, prepare_training_data
from pipeline.destinations import writer_lock
from pipeline.devices import DeviceError, check_device
from pipeline.messages import UserError
from pipeline.redact import redact_text
from pipeline.training.epoch_listener import EpochListener
from pipeline.training.session import SESSION_FILE, Session
from pipeline.training.weights import ResolvedWeights, WeightsError, class_change_note, resolve_weights
from pipeline.yolo_env import configure_ultralytics

LOG = logging.getLogger("pipeline.training")


class ResumeError(UserError, ValueError):
    """Nothing to resume; the message says why in one line."""


@dataclass
class TrainResult:
    save_dir: Path
    run_id: str | None
    tracking_uri: str | None
    spool_dir: Path
    pending_records: int
    best_weights: Path | None
    epochs: list[dict[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gradient_health: str | None = None  # the diagnosis' worst severity (ok, info, warning, error); None if not recorded
    # The latest finding of each cause, worst first: cause, severity, message, remedy, layers, evidence (diagnosis.py).
    gradient_findings: list[dict[str, Any]] = field(default_factory=list)


def _device_description(device: str) -> str:
    import torch

    if device not in {"cpu", "mps"} and torch.cuda.is_available():
        return ", ".join(torch.cuda.get_device_name(int(i)) for i in device.split(","))
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def _versions() -> dict[str, str]:
    tags = {"version.python": platform.python_version()}
    for package in (
        "yolo-pipeline",
        "ultralytics",
        "torch",
        "torchvision",
        "mlflow",
        "albumentations",
        "opencv-python",
    ):
        try:
            tags[f"version.{package}"] = version(package)
        except PackageNotFoundError:
            pass
    return tags


def _new_save_dir(config: Config) -> tuple[Path, bool]:
    """The training folder, and whether it was made here. Without ``train.exist_ok``, a new numbered folder is
    made at once: of two trainings choosing the same number at the same moment, one makes it, the other
    takes the next number."""
    from ultralytics.utils.files import increment_path

    name = config.train.name or config.tracking.run_name or config.tracking.experiment or "train"
    base = Path(config.train.project).resolve() / name
    if config.train.exist_ok:
        return base, False
    while True:
        save_dir = Path(increment_path(base, exist_ok=False))
        try:
            save_dir.mkdir(parents=True)
        except FileExistsError:  # another training took this number a moment ago
            continue
        except OSError as exc:
            raise ConfigError(f"{config.source}: train.project: cannot create {save_dir} ({exc.strerror})") from None
        return save_dir, True


def ultralytics_args(
    config: Config, model: str, data_yaml: Path, save_dir: Path, device: str, augmentations: list[dict[str, Any]]
) -> dict[str, Any]:
    """Ultralytics' arguments; ``augmentations`` (``A.to_dict`` dicts) replaces its default albumentations block."""
    t = config.train
    return {
        "model": model,
        "data": str(data_yaml),
        "epochs": t.epochs,
        "imgsz": t.imgsz,
        "batch": t.batch,
        "device": device,
        "seed": t.seed,
        "deterministic": t.deterministic,
        "workers": t.workers,
        "patience": t.patience or 10**9,  # 0 means never stop early
        "optimizer": t.optimizer,
        "lr0": t.lr0,
        "lrf": t.lrf,
        "cos_lr": t.cos_lr,
        "warmup_epochs": t.warmup_epochs,
        "weight_decay": t.weight_decay,
        "amp": t.amp,
        "cache": t.cache,
        "plots": t.plots,
        "freeze": config.model.freeze,
        "project": str(save_dir.parent),
        "name": save_dir.name,
        "exist_ok": True,
        "save": True,
        "val": True,
        **config.augment.ultralytics_hyp(),
        "augmentations": augmentations,
    }


@contextmanager
def session_env(session_file: Path) -> Iterator[None]:
    """Point ``$YOLO_PIPELINE_SESSION`` at a session for the trainers built inside (and their DDP workers)."""
    from pipeline.training.trainer import SESSION_ENV

    previous = os.environ.get(SESSION_ENV)
    os.environ[SESSION_ENV] = str(session_file)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(SESSION_ENV, None)
        else:
            os.environ[SESSION_ENV] = previous


def _journal_data(tracker: Any, data: TrainingData) -> None:
    """The dataset as an MLflow dataset input (name, hash, card) and its card and validation report as artifacts."""
    card = data.card
    profile = {key: card[key] for key in ("images", "boxes", "boxes_per_class", "validation")}
    profile["splits"] = {split: {k: v[k] for k in ("images", "boxes")} for split, v in card["splits"].items()}
    schema = {"format": "yolo", "classes": card["classes"]}
    tracker.log_dataset(data.dataset.name, data.dataset.content_hash, str(data.source), profile, schema, "training")
    for name in ("card.json", "card.md", "validation.json"):
        tracker.log_artifact(data.folder / name, "dataset")


def _journal_run_start(
    session: Session, data: TrainingData, device: str, weights: ResolvedWeights, augment_file: Path
) -> None:
    """Params and tags go into the spool now; the trainer's tracker sends them with everything else."""
    tracker = session.tracker()
    dataset = data.dataset
    counts = data.report.counts()
    tags = {
        **session.config.tracking.tags,
        "pipeline.kind": "training",
        "pipeline.output_dir": str(session.save_dir),
        "device": device,
        "device.name": _device_description(device),
        "dataset.name": dataset.name,
        "dataset.hash": dataset.content_hash,
        **{f"dataset.images.{split}": str(n) for split, n in dataset.images.items()},
        **{f"dataset.{key}": str(counts[key]) for key in ("skipped_images", "dropped_boxes", "backgrounds")},
        **_versions(),
    }
    if commit := _git_commit():
        tags["mlflow.source.git.commit"] = commit
    if weights.note:
        tags["pipeline.weights_fallback"] = weights.note
    if weights.parent:  # the model this one is fine-tuned from, pinned to its version
        tags.update(weights.parent.tags())
    try:
        tracker.open_run(tags)
        tracker.log_params(session.config.flat())
        _journal_data(tracker, data)
        tracker.log_artifact(augment_file, "augment")
    finally:
        tracker.close()  # the spool is let go: the trainer's tracker (perhaps in a relaunched process) takes it


@dataclass
class PreparedTraining:
    """A training folder with its session written and run journaled: ready for a trainer to start."""

    session: Session
    session_file: Path
    ultralytics_args: dict[str, Any]
    notes: list[str]
    parent: bool = False  # starts from an MLflow model (model.weights: models:/... or runs:/...)


def _check_project(config: Config) -> None:
    """``train.project`` can hold a new training folder: its nearest existing ancestor is a writable folder."""
    project = Path(config.train.project).expanduser().absolute()
    existing = project
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    problem = (
        f"{existing} is a file, not a folder"
        if not existing.is_dir()
        else f"{existing} is not writable"
        if not os.access(existing, os.W_OK | os.X_OK)
        else ""
    )
    if problem:
        raise ConfigError(f"{config.source}: train.project: {config.train.project}: {problem}")


def _check_inputs(config: Config) -> tuple[ResolvedWeights, str]:
    """Everything a user can get wrong in the config itself, checked before a folder or a run is made."""
    if not config.data.path.strip():
        raise ConfigError(
            f"{config.source}: data.path: not set; name the dataset to train on "
            "(a data.yaml, a folder in YOLO layout, or a manifest datasets/<name>.yaml)"
        )
    try:
        weights = resolve_weights(config.model.weights, config.tracking.uri)
        device = check_device(config.train.device, "train.device")
    except (WeightsError, DeviceError) as exc:
        raise type(exc)(f"{config.source}: {exc}") from None
    _check_project(config)
    return weights, device


def _make_folder(save_dir: Path, config: Config) -> None:
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a read-only file system, a race with another process making a file there
        raise ConfigError(f"{config.source}: train.project: cannot create {save_dir} ({exc.strerror})") from None


def prepare_training(config: Config, held: ExitStack | None = None) -> PreparedTraining:
    """Check the config, data and weights, make the training folder, save the config and journal the run's start.

    ``held``: where the training folder's `writer_lock` is kept (`train` holds it until the training ends): a
    second training into the same folder (``train.exist_ok``) stops at once, or with ``--wait`` waits."""
    configure_ultralytics()
    weights, device = _check_inputs(config)
    augmentations = serialize(config.augment)
    save_dir, made = _new_save_dir(config)
    if held is not None:
        try:
            held.enter_context(writer_lock(save_dir, "train", "train.name"))
        except BaseException:
            if made:  # refused: leave no empty folder behind
                save_dir.rmdir()
            raise
    fresh = made or not save_dir.exists()  # looked at once held: the previous holder may have made it
    _make_folder(save_dir, config)
    try:
        data = prepare_training_data(config.data, save_dir)
    except BaseException:
        if fresh:  # bad input leaves no half-made training folder behind
            shutil.rmtree(save_dir, ignore_errors=True)
        raise
    warn_ineffective_settings(config, device)  # only for a training that will start
    if weights.pretrained:  # resolved: an offline release name that fell back to its architecture is not
        warn_fine_tuning_rate(config)
    save_config(config, save_dir / "config.yaml")
    augment_file = write_augment_spec(config.augment, augmentations, save_dir / "augment.yaml")
    dataset = data.dataset
    session = Session(
        config=config,
        save_dir=save_dir,
        dataset={
            "name": dataset.name,
            "hash": dataset.content_hash,
            "images": dataset.images,
            "image_side": data.card["train_image_side"],
        },
    )
    session_file = session.save()
    if config.tracking.enabled:
        try:
            _journal_run_start(session, data, device, weights, augment_file)
        except Exception as exc:  # noqa: BLE001 - tracking must never cost the training; the trainer tries again
            LOG.warning(
                "tracking: could not journal the run's start (%s: %s)", type(exc).__name__, redact_text(str(exc))
            )
    args = ultralytics_args(config, weights.model, dataset.data_yaml, save_dir, device, augmentations)
    notes = data.notes + ([weights.note] if weights.note else []) + _lineage_notes(weights, data.card["classes"])
    return PreparedTraining(session, session_file, args, notes=notes, parent=weights.parent is not None)


def _lineage_notes(weights: ResolvedWeights, classes: list[str]) -> list[str]:
    """Where a fine-tuning starts from, and what becomes of the parent's class layer when the classes differ."""
    if weights.parent is None:
        return []
    notes = [weights.parent.lineage()]
    if change := class_change_note(weights.parent.classes, classes):
        LOG.warning(change)
        notes.append(change)
    return notes


@contextmanager
def _transfer_counts(wanted: bool) -> Iterator[list[str]]:
    """Ultralytics' own count of what it took from the parent ("Transferred 493/499 items from pretrained
    weights", "Remapped 2/3 cls head rows ..."), logged when it loads the weights into the new model."""
    lines: list[str] = []

    class _Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage().strip()
            if message.startswith(("Transferred ", "Remapped ")):
                lines.append(message)

    logger, catch = logging.getLogger("ultralytics"), _Catch()
    if wanted:
        logger.addHandler(catch)
    try:
        yield lines
    finally:
        logger.removeHandler(catch)


def train(config: Config, on_epoch: EpochListener | None = None) -> TrainResult:
    """Train a detector as the config says and record it in one MLflow run.

    ``on_epoch`` hears each epoch but the last and may stop the training there (`StoppedEarly`)."""
    with ExitStack() as held:  # the training folder, this process's alone until the training ends
        prepared = prepare_training(config, held)
        from pipeline.training.trainer import PipelineTrainer

        with session_env(prepared.session_file), _transfer_counts(prepared.parent) as transferred:
            trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
            trainer.epoch_listener = on_epoch
            trainer.train()
        counts = [f"model.weights: ultralytics: {'; '.join(transferred)}"] if transferred else []
        return _result(prepared.session, notes=prepared.notes + counts)


def find_training(target: str, project: str = "runs/train", tracking_uri: str = "") -> Path:
    """A training folder from a folder, a checkpoint path, or an MLflow run id."""
    path = Path(target).expanduser()
    if path.is_file() and path.suffix == ".pt":
        path = path.parent.parent
    if path.is_dir():
        if not (path / SESSION_FILE).is_file():
            raise ResumeError(f"{path}: not a training folder of this pipeline (no {SESSION_FILE})")
        return path.resolve()
    from pipeline.tracking import spool_status

    for session_file in sorted(Path(project).glob(f"*/{SESSION_FILE}")):
        status = spool_status(session_file.parent / "tracking")
        if status is not None and status.run_id == target:
            return session_file.parent.resolve()
    from pipeline.tracking.registry import StoreUnavailable, run_output_dir

    try:  # a lookup only: a store that is not there is not created, a server that does not answer fails fast
        recorded = run_output_dir(target, tracking_uri)
    except StoreUnavailable as exc:
        raise ResumeError(f"{target}: no training folder under {project}, and {exc}") from None
    except Exception as exc:  # noqa: BLE001 - unknown run, a server error: same answer for the user
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ResumeError(f"{target}: no training folder under {project} and MLflow cannot say ({reason})") from None
    if recorded and (Path(recorded) / SESSION_FILE).is_file():
        return Path(recorded)
    raise ResumeError(f"{target}: run has no training folder on this machine")


def resume(
    target: str, project: str = "runs/train", tracking_uri: str = "", on_epoch: EpochListener | None = None
) -> TrainResult:
    """Continue an interrupted training from its last checkpoint, into the same MLflow run (``on_epoch``: as `train`'s)."""
    configure_ultralytics()
    from pipeline.checkpoints import CheckpointError, read_checkpoint
    from pipeline.training.trainer import PipelineTrainer

    save_dir = find_training(target, project, tracking_uri)
    with writer_lock(save_dir, "resume", None):  # one process per training folder: a second resume stops or waits
        last = save_dir / "weights" / "last.pt"
        if not last.is_file():
            raise ResumeError(f"{save_dir}: no weights/last.pt; the training stopped before its first epoch ended")
        try:  # under the safe-loading policy: a last.pt that would run code stops here
            checkpoint = read_checkpoint(last, "resume:")
        except CheckpointError as exc:
            raise ResumeError(str(exc)) from None
        if checkpoint.get("optimizer") is None or checkpoint.get("epoch", -1) < 0:
            raise ResumeError(f"{save_dir}: this training already finished; nothing to resume")
        train_args = checkpoint.get("train_args", {})
        done = checkpoint["epoch"] + 1
        # Killed after its last epoch (in the final validation): no epoch is trained again, only what follows them.
        final_stage = done >= int(train_args.get("epochs", 0))
        overrides = {"resume": str(last), "model": str(last)}
        if final_stage and "," in str(train_args.get("device", "")):  # a multi-GPU relaunch would lose the flag below
            overrides["device"] = str(train_args["device"]).split(",")[0]
        session = Session.load(save_dir / SESSION_FILE)
        with session_env(save_dir / SESSION_FILE):
            trainer = PipelineTrainer(overrides=overrides)
            trainer.epoch_listener = on_epoch
            trainer.final_stage_only = final_stage
            trainer.train()
        note = (
            f"all {done} epochs were trained; finished the final validation"
            if final_stage
            else f"resumed from epoch {done}"
        )
        return _result(session, notes=[note])


def _result(session: Session, notes: list[str]) -> TrainResult:
    import csv

    from pipeline.tracking import spool_status

    status = spool_status(session.spool_dir) if session.tracking_enabled else None
    results = session.save_dir / "results.csv"
    epochs = []
    if results.exists():
        with open(results, newline="", encoding="utf-8") as f:
            epochs = [{k.strip(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]
    best = session.save_dir / "weights" / "best.pt"
    diagnosis_file = session.save_dir / "gradients" / "diagnosis.json"
    diagnosis = json.loads(diagnosis_file.read_text(encoding="utf-8")) if diagnosis_file.exists() else {}
    return TrainResult(
        save_dir=session.save_dir,
        run_id=status.run_id if status else None,
        tracking_uri=status.uri if status else None,
        spool_dir=session.spool_dir,
        pending_records=status.pending if status else 0,
        best_weights=best if best.exists() else None,
        epochs=epochs,
        notes=notes,
        gradient_health=diagnosis.get("health"),
        gradient_findings=diagnosis.get("findings", []),
    )

"""Checkpoints are pickles: they are loaded safely unless the user says a file is trusted.

Safe loading is ultralytics' own restricted mode (``torch.load(weights_only=True)`` with an allow-list
of its model classes, no ``eval`` while building): it loads every checkpoint this pipeline writes and
refuses a pickle that would run code. ``YOLO_PIPELINE_TRUST_CHECKPOINTS=1`` (or the commands'
``--trust-checkpoint``) turns it off for a file the user trusts, e.g. one holding classes of its own.
Every load goes through ultralytics (``YOLO(path)``, the trainer, `read_checkpoint`), so the policy
(`pipeline.load_policy`, applied by `pipeline.yolo_env.configure_ultralytics`) covers them all; MLflow
models are loaded from their ``weights`` artifact the same way, never by unpickling the pyfunc wrapper.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path
from typing import Any

from pipeline.load_policy import TRUST_ENV, trusted
from pipeline.messages import UserError

# Where a model comes from besides a file: an MLflow registry version or a run's logged model.
MODEL_URI_SCHEMES = ("models:/", "runs:/")
MLFLOW_SCHEMES = (*MODEL_URI_SCHEMES, "mlflow-artifacts:/")  # and an artifact's, which predict also downloads
SERVED_SCREEN = "screen.json"  # in a logged model's folder, beside MLmodel: the screen the served model applies
SERVED_WEIGHTS = "weights"  # in a logged model's data folder: its checkpoint's folder
SERVING_MODULE = "pipeline.inference.serving"  # what MLflow loads a logged model with (its loader_module)
TRUST_OPTION = "--trust-checkpoint"


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be (safely) loaded; the message is one line naming the file."""


class _Trust(argparse.Action):
    """``--trust-checkpoint``: set the opt-out for this process as soon as it is parsed."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: Any) -> None:
        os.environ[TRUST_ENV] = "1"
        setattr(namespace, self.dest, True)


def add_trust_option(parser: argparse.ArgumentParser) -> None:
    """The opt-out as a command's option (predict, evaluate)."""
    parser.add_argument(
        TRUST_OPTION,
        action=_Trust,
        nargs=0,
        default=False,
        help=f"load .pt files without safe unpickling (they can run code): only for files you trust (= {TRUST_ENV}=1)",
    )


def refusal(path: str | Path) -> str:
    """Why a checkpoint was refused, and how to load it anyway: one line."""
    return (
        f"{path}: refused: the checkpoint references code outside the YOLO checkpoint format and could run it "
        f"when loaded; if you trust the file, set {TRUST_ENV}=1 (predict, evaluate: {TRUST_OPTION})"
    )


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is restricted loading refusing code (a global or call outside the allow-list).

    Ultralytics words every restricted-load failure the same, a text file renamed ``.pt`` too; the
    unpickler's own error, further down the chain, tells a refused global from bytes that are no pickle.
    """
    signs = ("unsupported global", "is blocked", "blocked during restricted", "unsafe getattr")
    seen: BaseException | None = exc
    while seen is not None:
        if any(sign in str(seen).lower() for sign in signs):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The checkpoint dict of a local ``.pt`` file, loaded under the policy above, or a one-line CheckpointError."""
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    from ultralytics.nn.tasks import torch_safe_load

    try:
        checkpoint, _ = torch_safe_load(str(path), safe_only=not trusted())
    except Exception as exc:  # noqa: BLE001 - torch and ultralytics report a bad file in many ways
        raise CheckpointError(f"{what} {load_error(exc, path)}") from None
    from torch import nn

    if not isinstance(checkpoint, dict) or not any(isinstance(checkpoint.get(k), nn.Module) for k in ("model", "ema")):
        raise CheckpointError(f"{what} {path}: not a YOLO checkpoint (it holds no model)")
    return checkpoint


def load_error(exc: BaseException, path: str | Path) -> str:
    """One line for a failed load of ``path`` (by `read_checkpoint`, ``YOLO(path)`` or the trainer), naming the file."""
    text = str(exc).replace("ERROR ❌️ ", "").strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if is_refusal(exc):
        return refusal(path)
    damaged = ("not a loadable checkpoint", "PytorchStreamReader", "invalid load key", "outside the supported")
    if any(sign in first for sign in damaged):
        return f"{path}: not a PyTorch checkpoint (empty, truncated or another kind of file)"
    return f"{path}: {first[:200]}"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (a checkpoint's identity: a retrained model at the same path differs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def trained_imgsz(yolo: Any) -> int:
    """The image size a loaded YOLO was trained at (its checkpoint's train_args), else 640."""
    return int(((yolo.ckpt or {}).get("train_args") or {}).get("imgsz", 0) or yolo.overrides.get("imgsz", 640))


# The typical long side (px) of the images a model was trained on, an attribute of the network itself
# so that it travels in every checkpoint (last.pt, best.pt, the MLflow model's weights) and survives
# ultralytics' optimizer stripping. With the training size it gives the scale the model learned.
IMAGE_SIDE_ATTRIBUTE = "training_image_side"


def record_image_side(network: Any, side: int) -> None:
    """Write the training images' typical long side into ``network`` (saved with it from then on)."""
    setattr(network, IMAGE_SIDE_ATTRIBUTE, int(side))


def training_image_side(yolo: Any) -> int | None:
    """The typical long side of a loaded YOLO's training images, if its checkpoint records one (this tool's do)."""
    return checked_image_side(getattr(getattr(yolo, "model", None), IMAGE_SIDE_ATTRIBUTE, None))


def checked_image_side(side: Any) -> int | None:
    """A recorded image side (a checkpoint's, a bundle's), or None when it is not a positive number."""
    return int(side) if isinstance(side, int | float) and side > 0 else None


# The tiles a model was trained on (``data.tile``), an attribute of the network as the image side is: predict (and
# what runs through it: calibrate, a screen) then cuts large images the same way by default.
TILE_ATTRIBUTE = "training_tile"


def record_training_tile(network: Any, size: int, overlap: float) -> None:
    """Write the training tiles' size and overlap into ``network`` (saved with it from then on)."""
    setattr(network, TILE_ATTRIBUTE, {"size": int(size), "overlap": float(overlap)})


def training_tile(yolo: Any) -> tuple[int, float] | None:
    """(size, overlap) of the tiles a loaded YOLO was trained on, if its checkpoint records them."""
    return checked_tile(getattr(getattr(yolo, "model", None), TILE_ATTRIBUTE, None))


def checked_tile(found: Any) -> tuple[int, float] | None:
    """(size, overlap) of recorded tiles (``{"size", "overlap"}``: a checkpoint's, a bundle's), or None."""
    if not isinstance(found, dict):
        return None
    size, overlap = found.get("size"), found.get("overlap")
    if not (isinstance(size, int) and size >= 32 and isinstance(overlap, int | float) and 0 <= overlap < 1):
        return None  # not ours, or hand-edited: as if none were recorded
    return size, float(overlap)

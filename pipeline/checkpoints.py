"""Checkpoints are pickles: they are loaded safely unless the user says a file is trusted.

Safe loading is ultralytics' own restricted mode (``torch.load(weights_only=True)`` with an allow-list
of its model classes, no ``eval`` while building): it loads every checkpoint this pipeline writes and
refuses a pickle that would run code. ``YOLO_PIPELINE_TRUST_CHECKPOINTS=1`` (or the commands'
``--trust-checkpoint``) turns it off for a file the user trusts, e.g. one holding classes of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TRUST_ENV = "YOLO_PIPELINE_TRUST_CHECKPOINTS"


class CheckpointError(ValueError):
    """A checkpoint that cannot be (safely) loaded; the message is one line naming the file."""


def trusted() -> bool:
    """Whether the user opted out of safe loading for this process."""
    return os.environ.get(TRUST_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def apply_load_policy() -> None:
    """Make ultralytics load checkpoints safely in this process, unless the user trusts them.

    The environment variable reaches ultralytics when it is first imported (and any worker process it
    starts); the module flags cover a process where it was imported already.
    """
    safe = not trusted()
    os.environ["ULTRALYTICS_SAFE_LOAD"] = "1" if safe else "0"
    import sys

    for module in ("ultralytics.utils", "ultralytics.nn.tasks"):
        if module in sys.modules:
            sys.modules[module].SAFE_LOAD = safe


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The checkpoint dict of a local ``.pt`` file, loaded under the policy above, or a one-line CheckpointError."""
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} {path}: no such file")
    from ultralytics.nn.tasks import torch_safe_load

    try:
        checkpoint, _ = torch_safe_load(str(path))
    except Exception as exc:  # noqa: BLE001 - torch and ultralytics report a bad file in many ways
        raise CheckpointError(f"{what} {path}: {_reason(exc)}") from None
    if not isinstance(checkpoint, dict) or (checkpoint.get("model") is None and checkpoint.get("ema") is None):
        raise CheckpointError(f"{what} {path}: not a YOLO checkpoint (it holds no model)")
    return checkpoint


def _reason(exc: BaseException) -> str:
    text = str(exc).replace("ERROR ❌️ ", "").strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "outside the supported" in first or "blocked during restricted" in first or "Unsupported global" in first:
        return (
            "refused: the file references code outside the known YOLO checkpoint format (it could run code when "
            f"loaded); if you trust it, set {TRUST_ENV}=1"
        )
    if "not a loadable checkpoint" in first or "PytorchStreamReader" in first or "invalid load key" in first:
        return "not a PyTorch checkpoint (empty, truncated or another kind of file)"
    return first[:200]

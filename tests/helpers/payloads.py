"""Checkpoints whose unpickling would run code: what safe loading must refuse."""

from __future__ import annotations

import os
import shlex
from pathlib import Path


class _Payload:
    """Unpickled, it runs a shell command: what a crafted checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo ran > {shlex.quote(str(self.marker))}",))


def write_payload(path: Path, marker: Path) -> Path:
    """A ``.pt`` shaped like a YOLO checkpoint whose model, once unpickled, writes ``marker``."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Payload(marker), "train_args": {"imgsz": 64}, "epoch": 0}, path)
    return path

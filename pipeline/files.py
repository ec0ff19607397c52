"""Files on disk: where this tool keeps its caches, and writing files so that a kill never leaves half of one."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "YOLO_PIPELINE_CACHE"


def cache_dir() -> Path:
    """The folder of this tool's caches (ONNX exports, downloaded weights): ``$YOLO_PIPELINE_CACHE``, else
    ``~/.cache/yolo-pipeline``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "yolo-pipeline")


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` beside ``path`` under a temporary name, then rename it over ``path``: whole or absent."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path

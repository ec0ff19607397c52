"""Files on disk: where this tool keeps its caches, and writing files so that a kill never leaves half of one."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "YOLO_PIPELINE_CACHE"


def cache_dir() -> Path:
    """The folder of this tool's caches (ONNX exports, downloaded weights): ``$YOLO_PIPELINE_CACHE``, else
    ``~/.cache/yolo-pipeline``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "yolo-pipeline")


def temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that no other process or thread uses: ``.<name>.tmp-<pid>-<thread>``.

    Two writers of the same file never write into, or rename, each other's temporary file."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")


@contextmanager
def replaced_whole(path: Path) -> Iterator[Path]:
    """Yield `temporary_name` of ``path`` to write; once the block finishes, rename it over ``path``: whole or
    absent. On any failure the temporary file is removed and ``path`` is left as it was."""
    tmp = temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> Path:
    """Write ``text`` beside ``path`` under a temporary name, then rename it over ``path``: whole or absent."""
    with replaced_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path

"""What the benchmarks share: the small synthetic-data training they time, and a note of the machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from pipeline.config import Config, build_config


def benchmark_config(data_yaml: Path, work: Path, train: dict[str, Any], **sections: dict[str, Any]) -> Config:
    """A yolo11n training from scratch on ``data_yaml`` into ``work/runs``; ``train`` and ``sections`` set the rest."""
    raw: dict[str, dict[str, Any]] = {
        "data": {"path": str(data_yaml)},
        "model": {"weights": "yolo11n.yaml"},
        # No drift baseline unless asked: a training's measured time stays its epochs' (as before it existed).
        "train": {
            "batch": 16,
            "workers": 0,
            "seed": 0,
            "drift_baseline": False,
            "project": str(work / "runs"),
            **train,
        },
        "augment": {"mosaic": 0.0, "close_mosaic": 0},
        **sections,
    }
    return build_config(raw, "<benchmark>")


def quiet_ultralytics() -> None:
    """Ultralytics set up as the pipeline sets it up, with its per-step logging turned down to warnings."""
    import logging

    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()  # sets up ultralytics' logger, which is then quietened
    logging.getLogger("ultralytics").setLevel(logging.WARNING)


def save_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """Write ``report`` to ``args.out`` as JSON, with the command's options and the machine."""
    options = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    report = report | {"config": options, "machine": machine()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")  # a Path in an option: its text


def machine() -> dict[str, str]:
    import torch

    return {
        "python": platform.python_version(),
        "processor": platform.processor(),
        "node": platform.node(),
        "torch": torch.__version__,
    }


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to ``source`` (a copy across file systems): a benchmark's data set from another's."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def work_folder(keep: Path | None, prefix: str) -> Path:
    """A benchmark's work folder (``keep``, else a new temporary one), with the pipeline's cache inside it unless
    the caller set one: tile sets and ONNX exports stay out of the user's cache."""
    from pipeline.files import CACHE_ENV

    work = keep or Path(tempfile.mkdtemp(prefix=prefix))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(CACHE_ENV, str(work / "cache"))
    return work

"""What the inference unit tests share."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained one-class YOLO11n checkpoint at 32 px: enough to load and run, whatever it finds."""
    import torch

    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    model = DetectionModel("yolo11n.yaml", nc=1, verbose=False).half()
    torch.save({"model": model, "train_args": {"imgsz": 32}, "epoch": -1}, path)
    return path

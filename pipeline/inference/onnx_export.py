"""The network as an ONNX Runtime model, for inference on the CPU.

On CPUs, ONNX Runtime runs a YOLO11n about twice as fast as PyTorch (53 against 117 ms per 640-px
image on two EPYC cores, batch 16), with the same results to within 1e-4. Each weights file is
exported once per image size, through ultralytics' own exporter with dynamic batch and image
shapes, and kept in this tool's cache folder (`pipeline.files.cache_dir`) under the hash of the
weights, so a retrained model never meets a stale export. The export carries a second output, ``embedding``: the
backbone's pooled features (`pipeline.inference.embedding`), which the drift check compares; the ``-emb`` in the
file name keeps an export made before it from being reused.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.checkpoints import file_sha256
from pipeline.files import cache_dir
from pipeline.inference.embedding import add_embedding_output, backbone_end
from pipeline.telemetry import block_telemetry


def onnx_available() -> bool:
    block_telemetry()
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _digest(path: Path) -> str:
    return file_sha256(path)[:20]


def onnx_model(weights: Path, imgsz: int) -> Path:
    """The ONNX export of ``weights`` at ``imgsz`` (dynamic shapes), with the ``embedding`` output, from the cache
    or made now."""
    import ultralytics

    target = cache_dir() / "onnx" / f"{_digest(weights)}-{imgsz}-ultralytics{ultralytics.__version__}-emb.onnx"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    from ultralytics import YOLO
    from ultralytics.utils import LOGGER

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        copy = Path(tmp) / "model.pt"  # the exporter writes beside its input, which may be read-only
        shutil.copyfile(weights, copy)
        level = LOGGER.level
        LOGGER.setLevel(logging.WARNING)  # the exporter's progress report is not this command's output
        try:
            yolo = YOLO(str(copy), task="detect")
            layer = backbone_end(yolo.model.yaml)
            exported = yolo.export(
                format="onnx", dynamic=True, simplify=False, imgsz=imgsz, device="cpu", verbose=False
            )
        finally:
            LOGGER.setLevel(level)
        add_embedding_output(exported, None, layer)
        os.replace(exported, target)  # whole or absent, even with two exports racing
    return target

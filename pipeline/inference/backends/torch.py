"""PyTorch: the network as trained, through ultralytics' ``AutoBackend`` (fused, eval mode); on a GPU
in half precision. It runs everywhere, so it is what a run falls back to when another backend fails to load.
A batch's embeddings come from a hook on the backbone's last layer (`pipeline.inference.embedding`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.cpu import use_torch_threads
from pipeline.inference.backends.base import AutoBackendRunner, LoadRequest
from pipeline.inference.embedding import PooledFeatures


class TorchBackend(AutoBackendRunner):
    name = "torch"
    label = "PyTorch"
    races = True
    # PyTorch must beat ONNX Runtime by more than the timed batches vary on a quiet machine
    race_margin = 1.05

    @classmethod
    def load(cls, request: LoadRequest) -> TorchBackend:
        from ultralytics.nn.autobackend import AutoBackend

        if request.device.type == "cpu":
            use_torch_threads(request.threads)
        auto = AutoBackend(model=request.network, device=request.device, fp16=request.half, fuse=True, verbose=False)
        return cls(auto.eval(), request.weights)

    def __init__(self, auto: Any, file: Path | None) -> None:
        super().__init__(auto, file)
        try:
            self.features: PooledFeatures | None = PooledFeatures(auto.model)
        except (AttributeError, TypeError, ValueError, IndexError):  # a network without an architecture's layers
            self.features = None

    def run(self, batch: Any) -> Any:
        if self.features is None:
            return self.auto(batch)
        with self.features.recording():
            return self.auto(batch)

    def embeddings(self) -> Any:
        return self.features.take() if self.features is not None else None

"""PyTorch: the network as trained, through ultralytics' ``AutoBackend`` (fused, eval mode); on a GPU
in half precision. It runs everywhere, so it is what a run falls back to when another backend fails to load."""

from __future__ import annotations

from pipeline.cpu import use_torch_threads
from pipeline.inference.backends.base import AutoBackendRunner, LoadRequest


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

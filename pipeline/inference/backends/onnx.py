"""ONNX Runtime, on the CPU: the network's ONNX export (`pipeline.inference.onnx_export`: made once per
weights and training size, with dynamic shapes) in a session of our options, through ultralytics' ``AutoBackend``.

ONNX Runtime's thread pool spins while it waits for work by default: on a machine whose cores are
busy with another job, the spinning threads compete with that job and with our decoding threads,
and throughput halves. Sessions here do not spin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.inference.backends.base import AutoBackendRunner, LoadRequest
from pipeline.inference.onnx_export import onnx_available, onnx_model
from pipeline.telemetry import block_telemetry


class OnnxBackend(AutoBackendRunner):
    name = "onnx"
    label = "ONNX Runtime"
    cpu_only = True
    races = True
    load_step = "ONNX export"

    @classmethod
    def available(cls) -> bool:
        return onnx_available()

    @classmethod
    def load(cls, request: LoadRequest) -> OnnxBackend:
        """The ONNX export (made once, at the training size: its shapes are dynamic) in a session of our options."""
        from ultralytics.nn.autobackend import AutoBackend

        exported = onnx_model(request.weights, request.trained_size)
        auto = AutoBackend(model=str(exported), device=request.device, fp16=False, fuse=True, verbose=False)
        use_session_options(auto, exported, request.threads)
        return cls(auto.eval(), exported)


def session_options(threads: int) -> Any:
    """ONNX Runtime session options for a CPU that other work may share: ``threads`` threads, no spinning."""
    block_telemetry()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def use_session_options(backend: Any, onnx_file: str | Path, threads: int) -> None:
    """Give an ONNX ``AutoBackend`` (which makes its session with the library's defaults) our session instead."""
    import onnxruntime as ort

    inner = backend.backend
    inner.session = ort.InferenceSession(str(onnx_file), session_options(threads), providers=["CPUExecutionProvider"])
    inner.output_names = [output.name for output in inner.session.get_outputs()]

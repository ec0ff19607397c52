"""OpenVINO, on the CPU: the same ONNX export ONNX Runtime runs (`pipeline.inference.onnx_export`), read and
compiled by OpenVINO's runtime in float32.

On 2 cores of an Intel Xeon with AVX-512 OpenVINO runs a YOLO11n network alone 1.8x as fast as ONNX Runtime at
the same precision (320 px, batch 8), but a whole `predict` only 1.08x as fast at 640 px and 0.90x at 320,
where decoding the images takes the cores (on 2 AMD EPYC cores it was no faster alone) (`scripts/benchmarks/predict_throughput.py`). So it is chosen by
``--runtime openvino`` and not raced by ``auto``: a third racer makes the race 9 batches long, and a run of
fewer batches (a small folder) would pay for loading all three every time. Its CPU plugin would run float32 networks in bfloat16 on a CPU
with AMX (its default there): faster, but with other scores and boxes than the checkpoint's, so the precision
is pinned to float32 here. OpenVINO's usage telemetry is off (`pipeline.telemetry`).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from pipeline.inference.backends.base import Backend, LoadRequest
from pipeline.inference.embedding import EMBEDDING_OUTPUT, split_embedding
from pipeline.inference.onnx_export import onnx_available, onnx_model
from pipeline.telemetry import block_telemetry


class OpenVinoBackend(Backend):
    name = "openvino"
    label = "OpenVINO"
    cpu_only = True
    races = False  # see above: chosen by --runtime openvino
    load_step = "ONNX export"

    def __init__(self, compiled: Any, file: Path, stride: int, end2end: bool, device: Any) -> None:
        self.compiled = compiled
        self.file = file
        self.stride = stride
        self.end2end = end2end
        self.device = device
        self.fp16 = False
        found = embedding_index(compiled)  # the output that holds the embeddings, if the export has one
        self.output_names = [EMBEDDING_OUTPUT if k == found else "" for k in range(len(compiled.outputs))]

    @classmethod
    def available(cls) -> bool:
        block_telemetry()
        try:
            import openvino  # noqa: F401
        except ImportError:
            return False
        return onnx_available()

    @classmethod
    def load(cls, request: LoadRequest) -> OpenVinoBackend:
        """The ONNX export (made once, at the training size; dynamic shapes) compiled for the CPU in float32."""
        block_telemetry()
        import openvino as ov

        exported = onnx_model(request.weights, request.trained_size)
        compiled = ov.Core().compile_model(str(exported), "CPU", compile_config(request.threads))
        stride, end2end = export_facts(exported)
        return cls(compiled, exported, stride, end2end, request.device)

    def run(self, batch: Any) -> Any:
        import torch

        outputs = list(self.compiled(batch.cpu().numpy()).values())
        tensors = [torch.from_numpy(output) for output in outputs]
        tensors, self.last_embeddings = split_embedding(tensors, self.output_names)  # kept for `embeddings`
        if isinstance(tensors, list) and len(tensors) == 1:
            return tensors[0]
        return tensors  # as ultralytics' AutoBackend returns an export's outputs


def embedding_index(compiled: Any) -> int | None:
    """Which output of a compiled OpenVINO model is the ``embedding`` (`pipeline.inference.embedding`), if any."""
    for index, output in enumerate(compiled.outputs):
        if EMBEDDING_OUTPUT in output.get_names():
            return index
    return None


def compile_config(threads: int) -> dict[str, Any]:
    """OpenVINO's CPU settings for predict: one batch at a time, ``threads`` threads, float32 wherever the network
    is not quantized (an INT8 network's quantized layers run in INT8 whatever this says)."""
    return {
        "PERFORMANCE_HINT": "LATENCY",  # one batch at a time, as predict hands them over
        "INFERENCE_PRECISION_HINT": "f32",  # not bfloat16 on AMX: the scores the checkpoint (or the gate) gave
        "INFERENCE_NUM_THREADS": max(1, threads),
    }


def export_facts(exported: Path) -> tuple[int, bool]:
    """The stride and the end-to-end flag ultralytics' exporter wrote into the ONNX file's metadata, read as its
    ``AutoBackend`` reads them (end-to-end: the head's own, or NMS exported into the graph)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(exported), load_external_data=False).metadata_props}
    args = ast.literal_eval(meta.get("args", "{}"))
    end2end = bool(ast.literal_eval(meta.get("end2end", "False")) or args.get("nms", False))
    return int(meta.get("stride", 32)), end2end

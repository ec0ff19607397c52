"""Image embeddings from the network itself, for the drift check (`pipeline.drift`): the output of the backbone's
last layer, averaged over height and width, one vector per image (256 values for a YOLO11n).

The backbone's last layer is read from the architecture (`backbone_end`), so P2 models and YOLO26 find theirs. In
PyTorch a forward hook on that layer records the pooled output (`PooledFeatures`); an ONNX export gets a second
graph output, ``embedding``, that pools the same tensor (`add_embedding_output`), so ONNX Runtime and OpenVINO
(and the INT8 networks quantized from it) return it beside the detections, which stay output 0. Nothing here
imports torch or onnx at module level: a bundle's line PC has neither torch nor necessarily onnx.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

EMBEDDING_OUTPUT = "embedding"  # the ONNX graph output's name
EMBEDDING_PREFIX = "/embedding/"  # the names of the nodes that compute it (left out of INT8 quantization)


def backbone_end(yaml_dict: Mapping[str, Any]) -> int:
    """The index of the backbone's last layer in an ultralytics architecture (its ``model.yaml``): layer 10 for
    YOLO11n and YOLO26n, 9 for YOLOv8 (P2 or not)."""
    backbone = yaml_dict.get("backbone")
    if not isinstance(backbone, Sequence) or not backbone:
        raise ValueError("the architecture has no 'backbone' list of layers")
    return len(backbone) - 1


def pooled(features: Any) -> np.ndarray:
    """A feature map (B, C, H, W), a torch tensor or an array -> (B, C) float32: its mean over H and W."""
    if hasattr(features, "detach"):  # torch: pooled where it is (a GPU), then one small copy
        return features.detach().float().mean(dim=(2, 3)).cpu().numpy()
    return np.asarray(features, dtype=np.float32).mean(axis=(2, 3), dtype=np.float32)


class PooledFeatures:
    """Records the pooled output of one layer of a PyTorch network while `recording` is active: a hook only for
    the duration of a forward pass, so the network is left without it (a network with our hook would pickle it)."""

    def __init__(self, network: Any) -> None:
        self.index = backbone_end(network.yaml)
        self.layer: torch.nn.Module = network.model[self.index]
        self.value: np.ndarray | None = None

    @contextmanager
    def recording(self) -> Iterator[None]:
        self.value = None
        handle = self.layer.register_forward_hook(self._record)
        try:
            yield
        finally:
            handle.remove()

    def _record(self, module: Any, inputs: Any, output: Any) -> None:
        self.value = pooled(output)

    def take(self) -> np.ndarray | None:
        """The last recorded embeddings (B, C) float32, once; None when nothing was recorded."""
        value, self.value = self.value, None
        return value


def checked_embeddings(embeddings: Any, batch: int) -> np.ndarray | None:
    """What a network gave as embeddings, as (batch, D) float32; None when it gave none or not one row per image."""
    if embeddings is None:
        return None
    if hasattr(embeddings, "detach"):
        embeddings = embeddings.detach().float().cpu().numpy()
    array = np.asarray(embeddings, dtype=np.float32)
    array = array.reshape(len(array), -1) if array.ndim > 1 else array
    if array.ndim != 2 or len(array) != batch:
        return None
    return np.ascontiguousarray(array)


def split_embedding(outputs: Any, names: Sequence[str]) -> tuple[Any, Any]:
    """An export's outputs, in the order of their ``names`` -> (the others, as the network gave them before the
    embeddings: one output alone as itself; the ``embedding`` output, or None where it has none)."""
    if not isinstance(outputs, (list, tuple)) or EMBEDDING_OUTPUT not in names or len(outputs) != len(names):
        return outputs, None
    index = list(names).index(EMBEDDING_OUTPUT)
    rest = [output for k, output in enumerate(outputs) if k != index]
    return (rest[0] if len(rest) == 1 else rest), outputs[index]


def module_output(graph: Any, index: int) -> str:
    """The name of the tensor that module ``model.{index}`` outputs in an ONNX graph of torch's exporter (whose node
    names follow the modules: ``/model.10/cv2/act/Mul``): the one tensor produced inside that prefix and consumed
    outside it (or a graph output). ValueError when there is not exactly one."""
    prefix = f"/model.{index}/"
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    graph_outputs = {output.name for output in graph.output}
    found = [
        name
        for node in graph.node
        if node.name.startswith(prefix)
        for name in node.output
        if name in graph_outputs or any(not user.startswith(prefix) for user in consumers.get(name, []))
    ]
    if len(set(found)) != 1:
        raise ValueError(
            f"the ONNX graph has {len(set(found))} tensors leaving module model.{index} ({', '.join(found[:4])}), "
            "not one: cannot tell its output"
        )
    return found[0]


def add_embedding_output(onnx_in: str | Path, onnx_out: str | Path | None, layer_index: int) -> Path:
    """The ONNX file ``onnx_in`` (ultralytics' export) with a second output, ``embedding`` (B, C): the global average
    pool of module ``model.{layer_index}``'s output, flattened. Written to ``onnx_out`` (None: in place); the
    detections stay output 0. A graph that already has the output is written unchanged."""
    import onnx
    from onnx import TensorProto, helper

    target = Path(onnx_out if onnx_out is not None else onnx_in)
    model = onnx.load(str(onnx_in))
    graph = model.graph
    if not any(output.name == EMBEDDING_OUTPUT for output in graph.output):
        features = module_output(graph, layer_index)
        pooled_name = f"{EMBEDDING_PREFIX}GlobalAveragePool_output_0"
        graph.node.extend(
            [
                helper.make_node(
                    "GlobalAveragePool", [features], [pooled_name], name=f"{EMBEDDING_PREFIX}GlobalAveragePool"
                ),
                helper.make_node(
                    "Flatten", [pooled_name], [EMBEDDING_OUTPUT], name=f"{EMBEDDING_PREFIX}Flatten", axis=1
                ),
            ]
        )
        kind = graph.output[0].type.tensor_type.elem_type or TensorProto.FLOAT  # float16 in a half export
        graph.output.append(helper.make_tensor_value_info(EMBEDDING_OUTPUT, kind, [_batch_dim(graph), None]))
        onnx.checker.check_model(model)
    partial = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    onnx.save(model, str(partial))
    os.replace(partial, target)  # whole or absent
    return target


def _batch_dim(graph: Any) -> str | int | None:
    """The first output's batch dimension (the exporter's ``batch`` name, or a number), for the new output's."""
    dims = graph.output[0].type.tensor_type.shape.dim
    if not dims:
        return None
    first = dims[0]
    return first.dim_param or (first.dim_value if first.HasField("dim_value") else None)

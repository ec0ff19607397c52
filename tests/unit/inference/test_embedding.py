"""The backbone's pooled features (`pipeline.inference.embedding`): the layer found from the architecture, and the
ONNX export's ``embedding`` output equal to what the PyTorch hook records for the same input."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.inference.embedding import (
    EMBEDDING_OUTPUT,
    PooledFeatures,
    add_embedding_output,
    backbone_end,
    checked_embeddings,
    module_output,
    split_embedding,
)


def _architecture(name: str) -> dict:
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    return yaml_model_load(name)


@pytest.mark.parametrize(("name", "index"), [("yolo11n.yaml", 10), ("yolov8n-p2.yaml", 9), ("yolo26n.yaml", 10)])
def test_the_backbone_end_is_read_from_the_architecture(name: str, index: int) -> None:
    architecture = _architecture(name)
    assert backbone_end(architecture) == index == len(architecture["backbone"]) - 1
    with pytest.raises(ValueError, match="backbone"):
        backbone_end({"head": []})


def test_embeddings_are_checked_to_one_row_per_input() -> None:
    assert checked_embeddings(None, 2) is None
    assert checked_embeddings(np.ones((3, 4)), 2) is None  # not one row per input: none rather than wrong rows
    found = checked_embeddings(np.ones((2, 4, 1, 1), np.float64), 2)
    assert found is not None and found.shape == (2, 4) and found.dtype == np.float32


def test_the_embedding_output_is_taken_apart_from_the_predictions() -> None:
    detections, embeddings = np.zeros((2, 7, 84)), np.ones((2, 256))
    assert split_embedding([detections, embeddings], ["output0", EMBEDDING_OUTPUT]) == (detections, embeddings)
    assert split_embedding(detections, ["output0"]) == (detections, None)  # an export made before: as it was
    other = np.zeros((2, 32, 16, 16))
    found, kept = split_embedding([detections, embeddings, other], ["output0", EMBEDDING_OUTPUT, "output1"])
    assert kept is embeddings and len(found) == 2 and found[1] is other


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    """An untrained YOLO11n (from its architecture: no download) and its ONNX export at 64 px, dynamic shapes."""
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("tiny")
    yolo = YOLO("yolo11n.yaml", task="detect")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the exporter writes beside its model, here the working folder
        path = yolo.export(format="onnx", dynamic=True, simplify=False, imgsz=64, device="cpu", verbose=False)
    return yolo, folder / Path(path).name


def test_the_onnx_embedding_output_is_the_hooks_pooled_features(exported: tuple[object, Path], tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    yolo, path = exported
    network = yolo.model.float().eval()  # type: ignore[attr-defined]
    layer = backbone_end(network.yaml)
    assert module_output(onnx.load(str(path)).graph, layer) == f"/model.{layer}/cv2/act/Mul_output_0"

    out = add_embedding_output(path, tmp_path / "with.onnx", layer)
    graph = onnx.load(str(out)).graph
    assert [output.name for output in graph.output] == ["output0", EMBEDDING_OUTPUT]  # the detections stay first
    again = add_embedding_output(out, None, layer)  # already there: unchanged, not a third output
    assert [output.name for output in onnx.load(str(again)).graph.output] == ["output0", EMBEDDING_OUTPUT]

    batch = np.random.default_rng(0).random((3, 3, 64, 96), dtype=np.float32)  # another batch and width
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    detections, embeddings = session.run(None, {session.get_inputs()[0].name: batch})
    plain = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(detections, plain.run(None, {plain.get_inputs()[0].name: batch})[0])

    features = PooledFeatures(network)
    with torch.no_grad(), features.recording():
        network(torch.from_numpy(batch))
    hooked = features.take()
    assert hooked is not None and hooked.shape == embeddings.shape == (3, 256)
    # An untrained network's deep features are tiny (about 1e-10 here): compared relative to their size, and to
    # the next layer's, so that pooling another tensor would show.
    scale = np.abs(hooked).max()
    np.testing.assert_allclose(embeddings / scale, hooked / scale, atol=1e-4)
    assert np.abs(hooked - hooked.mean(axis=0)).max() > 1e-3 * scale  # the images differ in it
    assert features.take() is None and not network.model[layer]._forward_hooks  # once, and no hook left behind


def test_a_graph_whose_module_output_is_ambiguous_is_refused() -> None:
    from onnx import helper

    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="/model.3/act/Relu"),
        helper.make_node("Sigmoid", ["x"], ["b"], name="/model.3/gate/Sigmoid"),
        helper.make_node("Add", ["a", "b"], ["y"], name="/model.4/Add"),
    ]
    graph = SimpleNamespace(node=nodes, output=[SimpleNamespace(name="y")])
    with pytest.raises(ValueError, match="2 tensors leaving module model.3"):
        module_output(graph, 3)
    with pytest.raises(ValueError, match="0 tensors leaving module model.7"):
        module_output(graph, 7)
    assert module_output(graph, 4) == "y"

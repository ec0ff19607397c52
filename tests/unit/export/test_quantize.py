"""INT8 and FP32-IR versions of a small ultralytics detection network: quantized, still dynamic, close to FP32,
quiet, and failing with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.export.quantize import QuantizeError, onnx_int8, openvino_int8, openvino_ir
from tests.helpers.tiny_network import small_detector

# A few layers of YOLO11's kinds and its Detect head, exported as ultralytics exports any model: seconds, not minutes.
_NETWORK = small_detector(nc=2)
CALIBRATION_SIZE = 64
OTHER_SHAPE = (2, 3, 96, 128)  # another batch and another letterboxed size than the calibration's


@pytest.fixture(scope="module")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The network's ONNX export with dynamic batch and image size, as `pipeline.inference.onnx_export` makes it."""
    import yaml

    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    folder = tmp_path_factory.mktemp("network")
    (folder / "net.yaml").write_text(yaml.safe_dump(_NETWORK), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the exporter writes into the working folder
        exported = YOLO(str(folder / "net.yaml"), task="detect").export(
            format="onnx", dynamic=True, simplify=False, imgsz=CALIBRATION_SIZE, device="cpu", verbose=False
        )
    return folder / Path(exported).name


@pytest.fixture(scope="module")
def samples() -> list[np.ndarray]:
    """Calibration inputs: smooth random images (blocks of colour with noise) in [0, 1], (1, 3, 64, 64)."""
    rng = np.random.default_rng(0)
    blocks = rng.random((8, 3, 8, 8), dtype=np.float32).repeat(8, axis=2).repeat(8, axis=3)
    images = np.clip(blocks + rng.normal(0, 0.05, blocks.shape).astype(np.float32), 0, 1)
    return [image[None] for image in images]


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(1).random(OTHER_SHAPE, dtype=np.float32)


def _ort(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def _openvino(xml: Path, batch: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(batch)[compiled.output(0)]


def _assert_close_to(reference: np.ndarray, output: np.ndarray) -> None:
    """Same shape; boxes and class scores each correlated with FP32's (scores rounded to 0 would fail)."""
    assert output.shape == reference.shape
    for channels in (slice(0, 4), slice(4, None)):
        correlation = np.corrcoef(reference[:, channels].ravel(), output[:, channels].ravel())[0, 1]
        assert correlation > 0.95, (channels, correlation)


def test_onnx_int8_is_quantized_dynamic_and_close_to_fp32(
    fp32: Path,
    samples: list[np.ndarray],
    batch: np.ndarray,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import onnx

    out = onnx_int8(fp32, tmp_path / "int8.onnx", samples)

    assert capfd.readouterr() == ("", "") and not caplog.records  # its quantizer's warnings do not reach the user
    assert out == tmp_path / "int8.onnx" and sorted(p.name for p in tmp_path.iterdir()) == ["int8.onnx"]
    graph = onnx.load(str(out)).graph
    kinds = [node.op_type for node in graph.node]
    assert kinds.count("QuantizeLinear") > 10 and kinds.count("DequantizeLinear") > 10
    producer = {output: node for node in graph.node for output in node.output}
    final = producer[graph.output[0].name]
    assert final.op_type == "Concat" and all(producer[i].op_type != "DequantizeLinear" for i in final.input)
    _assert_close_to(_ort(fp32, batch), _ort(out, batch))


def test_openvino_ir_is_the_fp32_network(fp32: Path, batch: np.ndarray, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    import openvino as ov

    out = openvino_ir(fp32, tmp_path / "network.xml")

    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert not [op for op in ov.Core().read_model(str(out)).get_ops() if op.get_type_name() == "FakeQuantize"]
    np.testing.assert_allclose(_openvino(out, batch), _ort(fp32, batch), rtol=1e-3, atol=1e-3)


def test_openvino_int8_is_quantized_dynamic_and_close_to_fp32(
    fp32: Path, samples: list[np.ndarray], batch: np.ndarray, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    import openvino as ov

    out = openvino_int8(fp32, tmp_path / "network.xml", samples)

    assert capfd.readouterr() == ("", "")  # NNCF's progress bars and log lines stay hidden
    assert out.is_file() and out.with_suffix(".bin").is_file()
    model = ov.Core().read_model(str(out))
    assert model.inputs[0].get_partial_shape().is_dynamic
    assert sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops()) > 10
    _assert_close_to(_ort(fp32, batch), _openvino(out, batch))


@pytest.mark.parametrize("function", ["onnx_int8", "openvino_ir", "openvino_int8"])
def test_a_missing_network_is_one_line(function: str, samples: list[np.ndarray], tmp_path: Path) -> None:
    missing = tmp_path / "absent.onnx"
    calls = {
        "onnx_int8": lambda: onnx_int8(missing, tmp_path / "int8.onnx", samples),
        "openvino_ir": lambda: openvino_ir(missing, tmp_path / "network.xml"),
        "openvino_int8": lambda: openvino_int8(missing, tmp_path / "network.xml", samples),
    }
    with pytest.raises(QuantizeError, match="absent.onnx") as raised:
        calls[function]()
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_library_failure_is_one_line_and_leaves_no_file(fp32: Path, tmp_path: Path) -> None:
    wrong_channels = [np.zeros((1, 1, 64, 64), dtype=np.float32)]
    with pytest.raises(QuantizeError, match="shape") as raised:
        onnx_int8(fp32, tmp_path / "int8.onnx", wrong_channels)
    assert "\n" not in str(raised.value)

    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(b"not a network")
    with pytest.raises(QuantizeError, match="damaged.onnx") as raised:
        onnx_int8(damaged, tmp_path / "int8.onnx", [np.zeros((1, 3, 64, 64), dtype=np.float32)])
    assert "\n" not in str(raised.value)

    foreign = tmp_path / "foreign.onnx"  # valid ONNX, but an operator ONNX Runtime does not know
    _write_foreign_network(foreign)
    with pytest.raises(QuantizeError, match="^foreign.onnx: ONNX Runtime quantization failed: ") as raised:
        onnx_int8(foreign, tmp_path / "int8.onnx", [np.zeros((1, 3, 64, 64), dtype=np.float32)])
    assert "\n" not in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.onnx", "foreign.onnx"]


def _write_foreign_network(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    tensor = [1, 3, 64, 64]
    graph = helper.make_graph(
        [helper.make_node("NoSuchOperator", ["images"], ["output0"], domain="example.nowhere")],
        "foreign",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, tensor)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, tensor)],
    )
    opsets = [helper.make_opsetid("", 18), helper.make_opsetid("example.nowhere", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))

"""Every detector `predict` uses leaves its images' embeddings (the backbone's pooled features, for the drift check)
in ``last_embeddings`` after each ``detect``: a checkpoint in PyTorch, ONNX Runtime and OpenVINO, FP32 bundles in
both runtimes, all the same values; INT8 networks close to FP32; and a bundle exported before the embeddings
gives None, with its detections as before.

The model is YOLO11n's architecture, untrained, with its batch norms' statistics taken from a few images so its
activations have a trained network's scale (an untrained one's deep features are about 1e-10, which quantizes
to 0): seconds, not a training.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.checkpoints import file_sha256
from pipeline.inference.embedding import EMBEDDING_OUTPUT
from pipeline.inference.opening import build_detector, open_model
from pipeline.inference.options import PredictOptions
from tests.helpers.tiny_network import small_detector

SIZE = 64
BATCH = 3


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 synthetic 64-px defect images in YOLO layout (train and val): its data.yaml."""
    from pipeline.data.synth import synthesize

    return synthesize(tmp_path_factory.mktemp("images"), images=12, seed=3, size=SIZE).data_yaml


@pytest.fixture(scope="module")
def images(data: Path) -> list[np.ndarray]:
    """The images (BGR), as predict decodes them."""
    import cv2

    paths = sorted((data.parent / "images").rglob("*.png")) + sorted((data.parent / "images").rglob("*.jpg"))
    return [cv2.imread(str(path)) for path in paths]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, images: list[np.ndarray]) -> Path:
    """A three-class YOLO11n checkpoint at 64 px, untrained but with its batch norms' statistics set on images."""
    import torch

    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # the running statistics become the plain average over the batches seen
    batch = torch.from_numpy(np.stack([image[:, :, ::-1].transpose(2, 0, 1) for image in images]).copy()) / 255
    model.train()
    with torch.no_grad():
        model(batch)
    model.eval()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save({"model": model, "train_args": {"imgsz": SIZE}, "epoch": -1}, path)
    return path


def _detector(model: str | Path, runtime: str = "auto") -> object:
    options = PredictOptions(runtime=runtime, device="cpu", batch=BATCH, conf=0.001)
    return build_detector(open_model(str(model)), options)


def _run(detector: object, images: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The detections and the embeddings of the first BATCH images, in one `detect` call."""
    chosen = images[:BATCH]
    inputs = np.stack([detector.prepare(image) for image in chosen])  # type: ignore[attr-defined]
    found = detector.detect(inputs, [image.shape[:2] for image in chosen])  # type: ignore[attr-defined]
    return found, detector.last_embeddings  # type: ignore[attr-defined]


def _close(these: np.ndarray | None, those: np.ndarray, tolerance: float = 1e-3) -> None:
    """Same shape, values within ``tolerance`` of the largest (the features' scale is the network's)."""
    assert these is not None and these.dtype == np.float32 and these.shape == those.shape
    np.testing.assert_allclose(these, those, atol=tolerance * float(np.abs(those).max()), rtol=0)


def _cosine(these: np.ndarray, those: np.ndarray) -> np.ndarray:
    return (these * those).sum(axis=1) / np.linalg.norm(these, axis=1) / np.linalg.norm(those, axis=1)


@pytest.fixture(scope="module")
def reference(checkpoint: Path, images: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """The checkpoint's detections and embeddings in PyTorch."""
    found, embeddings = _run(_detector(checkpoint, "torch"), images)
    assert embeddings is not None
    return found, embeddings


def test_a_checkpoint_gives_the_same_embeddings_in_every_runtime(
    checkpoint: Path, images: list[np.ndarray], reference: tuple[list[np.ndarray], np.ndarray]
) -> None:
    _, embeddings = reference
    assert embeddings.shape == (BATCH, 256) and embeddings.dtype == np.float32
    assert np.abs(embeddings).max() > 1e-2  # the network's scale, not an untrained one's vanishing features
    assert np.abs(embeddings - embeddings.mean(axis=0)).max() > 1e-3 * np.abs(embeddings).max()  # images differ
    for runtime in ("onnx", "openvino"):
        detector = _detector(checkpoint, runtime)
        assert detector.runtime == runtime and not detector.note  # type: ignore[attr-defined]
        found, these = _run(detector, images)
        _close(these, embeddings)
        assert [len(boxes) for boxes in found] == [len(boxes) for boxes in reference[0]]  # NMS read the detections
        one = detector.detect(np.stack([detector.prepare(images[0])]), [images[0].shape[:2]])  # type: ignore[attr-defined]
        assert len(one) == 1 and detector.last_embeddings.shape == (1, 256)  # type: ignore[attr-defined]
    racing = _detector(checkpoint)  # auto: PyTorch and ONNX Runtime in turn on the first batches
    for _ in range(4):
        _close(_run(racing, images)[1], embeddings)


@pytest.fixture(scope="module")
def onnx_bundle(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.export.bundles import export_bundle

    out = tmp_path_factory.mktemp("bundles") / "onnx"
    export_bundle(str(checkpoint), out, "onnx")
    return out


@pytest.mark.parametrize(("fmt", "runtime"), [("onnx", "auto"), ("onnx", "openvino"), ("openvino", "auto")])
def test_fp32_bundles_give_the_checkpoints_embeddings(
    fmt: str,
    runtime: str,
    onnx_bundle: Path,
    checkpoint: Path,
    images: list[np.ndarray],
    reference: tuple[list[np.ndarray], np.ndarray],
    tmp_path: Path,
) -> None:
    from pipeline.export.bundles import export_bundle

    bundle = onnx_bundle
    if fmt != "onnx":
        bundle = tmp_path / fmt
        export_bundle(str(checkpoint), bundle, fmt)
    detector = _detector(bundle, runtime)
    assert detector.runtime == (fmt if runtime == "auto" else runtime)  # type: ignore[attr-defined]
    found, embeddings = _run(detector, images)
    _close(embeddings, reference[1])
    for boxes, expected in zip(found, reference[0], strict=True):  # the detections as the checkpoint's
        assert len(boxes) == len(expected)
        np.testing.assert_allclose(boxes[:, 4], expected[:, 4], atol=1e-3)


def test_an_int8_bundle_gives_embeddings(
    checkpoint: Path, data: Path, images: list[np.ndarray], tmp_path: Path
) -> None:
    """The whole export, quantizer and gate included, keeps the output (its closeness to FP32: the test below)."""
    from pipeline.export.bundles import export_bundle

    bundle = tmp_path / "int8"
    export_bundle(
        str(checkpoint), bundle, "onnx-int8", data=data, calibration_images=4, max_recall_drop=1, max_map50_drop=1
    )
    detector = _detector(bundle)
    _, embeddings = _run(detector, images)
    assert embeddings is not None and embeddings.shape == (BATCH, 256) and np.isfinite(embeddings).all()


def test_a_bundle_exported_before_the_embeddings_gives_none(
    onnx_bundle: Path, images: list[np.ndarray], reference: tuple[list[np.ndarray], np.ndarray], tmp_path: Path
) -> None:
    """An old bundle's network has the detections as its only output: no embeddings, and no error."""
    import shutil

    import onnx

    old = tmp_path / "old"
    shutil.copytree(onnx_bundle, old)
    network = onnx.load(str(old / "network.onnx"))
    graph = network.graph
    kept = [node for node in graph.node if EMBEDDING_OUTPUT not in node.output and not node.name.startswith("/emb")]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.output[1:]
    onnx.save(network, str(old / "network.onnx"))
    document = json.loads((old / "screen.json").read_text(encoding="utf-8"))
    document["bundle"]["network_sha256"] = file_sha256(old / "network.onnx")
    (old / "screen.json").write_text(json.dumps(document), encoding="utf-8")

    for runtime in ("onnx", "openvino"):
        found, embeddings = _run(_detector(old, runtime), images)
        assert embeddings is None
        assert [len(boxes) for boxes in found] == [len(boxes) for boxes in reference[0]]


# A few layers of YOLO11's kinds and its Detect head: the untrained YOLO11n above quantizes badly as a whole (its
# class scores too), which says nothing about the embedding path; this one quantizes as a trained network does.
_SMALL_NETWORK = small_detector(nc=3, last_channels=32)


def test_int8_networks_keep_the_embeddings_close_to_fp32(images: list[np.ndarray], tmp_path: Path) -> None:
    """Both quantizers leave the pooling in float; the embeddings of INT8 and FP32 point the same way."""
    import onnxruntime as ort
    import openvino as ov
    import yaml

    from pipeline.export.quantize import onnx_int8, openvino_int8
    from pipeline.inference.backends.openvino import compile_config
    from pipeline.inference.embedding import add_embedding_output, backbone_end
    from pipeline.inference.steps import letterbox
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics import YOLO

    (tmp_path / "net.yaml").write_text(yaml.safe_dump(_SMALL_NETWORK), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)  # the exporter writes into the working folder
        exported = YOLO(str(tmp_path / "net.yaml"), task="detect").export(
            format="onnx", dynamic=True, simplify=False, imgsz=SIZE, device="cpu", verbose=False
        )
    fp32 = add_embedding_output(tmp_path / Path(exported).name, None, backbone_end(_SMALL_NETWORK))
    samples = [letterbox(image, SIZE, 32)[None].astype(np.float32) / 255 for image in images[BATCH:]]
    # Run at 128 px: OpenVINO 2026.4's CPU plugin crashes (SIGSEGV) running NNCF INT8 networks on 64-px inputs
    # under predict's settings, with or without the embedding output (ultralytics' small networks alike).
    batch = np.concatenate([letterbox(image, 2 * SIZE, 32)[None] for image in images[:BATCH]]).astype(np.float32) / 255

    def onnx_run(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run([EMBEDDING_OUTPUT], {session.get_inputs()[0].name: batch})[0]

    expected = onnx_run(fp32)
    quantized = onnx_run(onnx_int8(fp32, tmp_path / "int8.onnx", samples))
    compiled = ov.Core().compile_model(
        str(openvino_int8(fp32, tmp_path / "int8.xml", samples)), "CPU", compile_config(1)
    )
    output = next(o for o in compiled.outputs if EMBEDDING_OUTPUT in o.get_names())
    openvino = compiled(batch)[output]
    for these in (quantized, openvino):
        assert these.shape == expected.shape == (BATCH, 32)
        assert _cosine(these, expected).min() > 0.9

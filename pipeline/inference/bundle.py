"""A screen bundle: the folder `export` writes and a line PC runs with ONNX Runtime or OpenVINO, numpy and OpenCV.

A bundle is the network (``network.onnx``, or OpenVINO's ``network.xml`` and ``.bin``), FP32 or INT8, beside its
``screen.json``: the screen file `calibrate` writes (`pipeline.inference.screen`: the thresholds and where they
came from) with a ``bundle`` section saying how to run the network (class names in order, input size, stride,
the training tiles and scale) and where it came from (the checkpoint's SHA-256, its MLflow run and version, the
exporters' versions, what the INT8 accuracy gate measured). Nothing here imports torch, ultralytics or MLflow:
`predict --model DIR` runs a bundle through the same engine as a checkpoint, with the letterbox and NMS in numpy
(`pipeline.inference.steps`), so a bundle screens the same images the same way on a machine without them. A
network exported with the ``embedding`` output (`pipeline.inference.embedding`) also gives each batch's pooled
backbone features (`BundleDetector.last_embeddings`); one exported before it gives None there.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.checkpoints import checked_image_side, checked_tile, file_sha256
from pipeline.cpu import LoadProbe, cpu_threads, free_threads
from pipeline.inference.embedding import EMBEDDING_OUTPUT, checked_embeddings
from pipeline.inference.errors import ModelError
from pipeline.inference.options import PredictOptions
from pipeline.inference.screen import FILE_NAME, Screen, ScreenError, read_screen
from pipeline.inference.steps import detections, letterbox, scale_to_image
from pipeline.telemetry import block_telemetry

LOG = logging.getLogger("pipeline.inference")

BUNDLE_FORMAT = "yolo-pipeline bundle 1"
NETWORK_FILES = {"onnx": "network.onnx", "openvino": "network.xml"}  # a runtime -> the network file it reads
FORMATS = {  # export's --format -> (runtime, precision)
    "onnx": ("onnx", "fp32"),
    "onnx-int8": ("onnx", "int8"),
    "openvino": ("openvino", "fp32"),
    "openvino-int8": ("openvino", "int8"),
}
RUNTIME_LABELS = {"onnx": "ONNX Runtime", "openvino": "OpenVINO"}


@dataclass(frozen=True)
class BundleInfo:
    """The ``bundle`` section of a bundle's screen.json: how to run its network, and where it came from."""

    runtime: str  # onnx or openvino: what reads the network file
    precision: str  # fp32 or int8
    network: str  # the network's file name in the bundle
    network_sha256: str  # its bytes: a bundle whose network was replaced is refused
    names: list[str]  # the class names, in the network's order
    imgsz: int  # the training size: the letterbox's
    stride: int  # the letterbox pads to a multiple of it
    end2end: bool = False  # the network's output needs no NMS (end-to-end heads)
    tile: dict[str, Any] | None = None  # {"size", "overlap"} of the tiles it was trained on, if any
    training_image_side: int | None = None  # the training images' typical long side (the scale it learned)
    source: dict[str, Any] = field(default_factory=dict)  # model, sha256, run_id, version of the checkpoint
    exported: str = ""  # ISO 8601, UTC
    versions: dict[str, str] = field(default_factory=dict)  # this project's and the exporters'
    gate: dict[str, Any] = field(default_factory=dict)  # INT8: what the accuracy gate measured against FP32
    format: str = BUNDLE_FORMAT

    def describe(self) -> str:
        """``ONNX Runtime, int8, 64 px``."""
        return f"{RUNTIME_LABELS.get(self.runtime, self.runtime)}, {self.precision}, {self.imgsz} px"


class BundleError(ModelError):
    """A bundle that cannot be used: its screen.json or network is missing or wrong; one line."""


def is_bundle(source: str | Path) -> bool:
    """Whether ``source`` is a bundle: a folder holding a screen.json (checked fully when it is read)."""
    path = Path(os.fspath(source))
    return path.is_dir() and (path / FILE_NAME).is_file()


def bundle_section(info: BundleInfo) -> dict[str, Any]:
    return asdict(info)


def read_bundle(folder: str | Path) -> tuple[Screen, BundleInfo]:
    """The screen and the bundle section of a bundle folder, checked; BundleError naming the file and field."""
    folder = Path(folder)
    where = folder / FILE_NAME
    try:
        screen = read_screen(where)
        document = json.loads(where.read_text(encoding="utf-8"))
    except ScreenError as exc:
        raise BundleError(str(exc)) from None
    section = document.get("bundle")
    if not isinstance(section, dict) or section.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{where}: not a bundle's screen file (no 'bundle' section of format {BUNDLE_FORMAT!r})")
    try:
        info = BundleInfo(**{k: section[k] for k in BundleInfo.__dataclass_fields__ if k in section})
    except TypeError as exc:
        raise BundleError(f"{where}: bundle: {exc}") from None
    if info.runtime not in NETWORK_FILES:
        raise BundleError(f"{where}: bundle.runtime must be one of {', '.join(NETWORK_FILES)}, got {info.runtime!r}")
    if not (isinstance(info.names, list) and info.names and all(isinstance(n, str) for n in info.names)):
        raise BundleError(f"{where}: bundle.names must be the list of class names")
    if not (isinstance(info.imgsz, int) and info.imgsz >= 32 and isinstance(info.stride, int) and info.stride > 0):
        raise BundleError(f"{where}: bundle.imgsz and bundle.stride must be sizes in pixels")
    network = folder / info.network
    if Path(info.network).name != info.network or not network.is_file():
        raise BundleError(f"{folder}: its network {info.network!r} is missing")
    if file_sha256(network) != info.network_sha256:
        raise BundleError(f"{network}: not the network this bundle was exported with (its SHA-256 differs)")
    return screen, info


@dataclass
class OpenedBundle:
    """A bundle opened for prediction, and what identifies it (as `OpenedModel` for a checkpoint)."""

    folder: Path
    screen: Screen
    info: BundleInfo

    @property
    def source(self) -> str:
        return str(self.folder)

    @property
    def pinned(self) -> str:
        return str(self.folder)

    @property
    def run_id(self) -> str | None:
        return self.info.source.get("run_id")

    @property
    def names(self) -> dict[int, str]:
        return dict(enumerate(self.info.names))

    @property
    def weights_sha256(self) -> str:
        return self.info.network_sha256

    @property
    def identity(self) -> dict[str, Any]:
        """What a results folder pins: the network's bytes, and the checkpoint it was exported from."""
        found = {"model_sha256": self.info.network_sha256, "bundle": f"{self.info.runtime} {self.info.precision}"}
        for key in ("sha256", "run_id", "version"):
            if self.info.source.get(key):
                found[f"exported_from_{key}"] = self.info.source[key]
        return found

    @property
    def trained_imgsz(self) -> int:
        return self.info.imgsz

    @property
    def training_tile(self) -> tuple[int, float] | None:
        return checked_tile(self.info.tile)

    @property
    def training_image_side(self) -> int | None:
        return checked_image_side(self.info.training_image_side)


def open_bundle(folder: str | Path) -> OpenedBundle:
    folder = Path(os.path.abspath(os.fspath(folder)))
    screen, info = read_bundle(folder)
    return OpenedBundle(folder, screen, info)


@dataclass
class BundleDetector:
    """A bundle's network on the CPU, with the steps around it in numpy: what `Detector` is for a checkpoint."""

    session: Any  # run(inputs float32 (B, 3, h, w)) -> the raw output, or (it, the embeddings) where it has them
    names: dict[int, str]
    imgsz: int
    stride: int
    end2end: bool
    source: str
    runtime: str
    run_id: str | None = None
    note: str = ""
    reason: str = ""
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    # the last `detect` call's embeddings (B, D) float32, one row per input; None where the network gives none
    last_embeddings: np.ndarray | None = field(default=None, repr=False)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """BGR (H, W, 3) uint8 -> letterboxed RGB (3, h, w) uint8, as `Detector.prepare`."""
        return letterbox(image, self.imgsz, self.stride)

    def detect(self, inputs: np.ndarray, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Inputs (B, 3, h, w) uint8 of images of ``shapes`` (H, W) -> per image (N, 6): x1 y1 x2 y2 score class;
        their embeddings in `last_embeddings`."""
        self.last_embeddings = None
        raw = self.session(inputs.astype(np.float32) / 255)
        raw, embeddings = raw if isinstance(raw, tuple) else (raw, None)
        self.last_embeddings = checked_embeddings(embeddings, len(inputs))
        found = detections(raw, self.conf, self.iou, self.max_det, self.end2end)
        out = []
        for boxes, shape in zip(found, shapes, strict=True):
            boxes = boxes.astype(np.float32, copy=True)
            boxes[:, :4] = scale_to_image(boxes[:, :4], inputs.shape[2:], shape)
            out.append(boxes)
        return out


def build_bundle_detector(
    opened: OpenedBundle, options: PredictOptions, load: LoadProbe | None = None
) -> BundleDetector:
    """The bundle's network in its runtime on the CPU, on the cores other processes leave free."""
    info = opened.info
    if options.device not in ("auto", "cpu", ""):
        raise BundleError(f"{opened.folder}: a bundle runs on the CPU, not on device {options.device}")
    runtime = info.runtime if options.runtime == "auto" else options.runtime
    if runtime not in NETWORK_FILES or (runtime == "onnx" and info.runtime == "openvino"):
        raise BundleError(
            f"{opened.folder}: an {info.describe()} bundle runs on {RUNTIME_LABELS[info.runtime]}"
            + (", or OpenVINO for an ONNX one" if info.runtime == "onnx" else "")
            + f", not --runtime {options.runtime}"
        )
    cores = cpu_threads()
    others = (load or LoadProbe()).others()
    threads = free_threads(others, cores)
    network = opened.folder / info.network
    session = _onnx_session(network, threads) if runtime == "onnx" else _openvino_session(network, threads)
    reason = f"the bundle's {info.describe()} network" + (" read by OpenVINO" if runtime != info.runtime else "")
    if threads < cores:
        reason += f"; other processes keep {others:.0%} of the CPU busy, so it runs on {threads} of {cores} cores"
    return BundleDetector(
        session,
        opened.names,
        options.imgsz or info.imgsz,
        info.stride,
        info.end2end,
        opened.source,
        runtime,
        opened.run_id,
        reason=reason,
        conf=options.conf,
        iou=options.iou,
        max_det=options.max_det,
    )


def _onnx_session(network: Path, threads: int) -> Any:
    block_telemetry()
    try:
        import onnxruntime as ort
    except ImportError:
        raise BundleError(f"{network}: ONNX Runtime is not installed (pip install onnxruntime)") from None
    from pipeline.inference.backends.onnx import session_options

    try:
        session = ort.InferenceSession(str(network), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line naming it
        raise BundleError(f"{network}: ONNX Runtime cannot load it ({type(exc).__name__})") from None
    name = session.get_inputs()[0].name
    outputs = [output.name for output in session.get_outputs()]
    if EMBEDDING_OUTPUT not in outputs[1:]:  # a bundle exported before the embeddings: its detections alone
        return lambda batch: session.run(outputs[:1], {name: batch})[0]
    wanted = [outputs[0], EMBEDDING_OUTPUT]
    return lambda batch: tuple(session.run(wanted, {name: batch}))


def _openvino_session(network: Path, threads: int) -> Any:
    block_telemetry()
    try:
        import openvino as ov
    except ImportError:
        raise BundleError(f"{network}: OpenVINO is not installed (pip install openvino)") from None
    from pipeline.inference.backends.openvino import compile_config, embedding_index

    try:
        compiled = ov.Core().compile_model(str(network), "CPU", compile_config(threads))
    except Exception as exc:  # noqa: BLE001 - a damaged or foreign file: one line naming it
        raise BundleError(f"{network}: OpenVINO cannot load it ({type(exc).__name__})") from None
    output = compiled.output(0)
    found = embedding_index(compiled)
    if not found:  # a bundle exported before the embeddings: its detections alone
        return lambda batch: compiled(batch)[output]
    embedding = compiled.output(found)

    def run(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        results = compiled(batch)
        return results[output], results[embedding]

    return run

"""The detector a prediction runs: loaded from a path, an MLflow URI or an ultralytics name, and the
three steps around the network (letterbox, batched forward, NMS and scaling back to the image).

The steps are ultralytics' own (``LetterBox``, ``AutoBackend``, ``non_max_suppression``,
``scale_boxes``) with the arguments its predictor uses, so detections match ``YOLO.predict``; what
changes is where they run: the letterbox in the decoding threads, the network once per batch, and
on a CPU in whichever backend (`pipeline.inference.backends`: ONNX Runtime, PyTorch) is faster for
this model here (`pipeline.inference.runtime`). On a GPU the network runs in PyTorch, in half precision.
Each batch also leaves its images' embeddings in `Detector.last_embeddings` (the backbone's pooled features,
`pipeline.inference.embedding`), for the drift check.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.checkpoints import (
    MLFLOW_SCHEMES,
    file_sha256,
    is_refusal,
    load_error,
    trained_imgsz,
    training_image_side,
    training_tile,
)
from pipeline.cpu import LoadProbe, cpu_threads, free_threads
from pipeline.devices import resolve_device
from pipeline.inference.backends import AUTO, BACKENDS, FALLBACK, Backend, LoadRequest, Network, label, labels, racers
from pipeline.inference.embedding import checked_embeddings
from pipeline.inference.errors import ModelError
from pipeline.inference.options import PredictOptions
from pipeline.inference.runtime import Race, cached_choice, schedule
from pipeline.messages import first_line
from pipeline.yolo_env import configure_ultralytics

RACING = "+".join(racers())  # torch+onnx: the runtime while `--runtime auto` races them on the first batches
LOG = logging.getLogger("pipeline.inference")


@dataclass
class Detector:
    backends: dict[str, Network]  # runtime -> its loaded `Backend` (or an ultralytics AutoBackend); all while racing
    names: dict[int, str]
    imgsz: int
    source: str
    runtime: str = "torch"  # a backend's name (torch, onnx), or the racers' (RACING) until the race decides
    run_id: str | None = None  # the MLflow run the model came from, when it came from MLflow
    note: str = ""  # why the runtime asked for was not used, if it was not
    reason: str = ""  # why this runtime runs the network
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    race: Race | None = None  # while --runtime auto times both on the first batches
    # the last `detect` call's embeddings (B, D) float32, one row per input; None where the network gives none
    last_embeddings: np.ndarray | None = field(default=None, repr=False)
    _letterbox: Any = field(default=None, repr=False)

    @property
    def backend(self) -> Any:
        return self.backends.get(self.runtime) or next(iter(self.backends.values()))

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def half(self) -> bool:
        return bool(self.backend.fp16)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """BGR (H, W, 3) uint8 -> the network's input for it: letterboxed RGB (3, h, w) uint8, contiguous.

        As ultralytics' predictor does for a batch of equally sized images: scaled to ``imgsz`` and
        padded only to the stride, so equally sized images give equally sized inputs.
        """
        boxed = self._letterbox(image=image)
        return np.ascontiguousarray(boxed.transpose(2, 0, 1)[::-1])

    @torch.inference_mode()
    def detect(self, inputs: np.ndarray, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
        """Inputs (B, 3, h, w) uint8 of images of ``shapes`` (H, W) -> per image (N, 6): x1 y1 x2 y2 score class.

        Their embeddings are `last_embeddings` then: from the hook in PyTorch, from the export's second output in
        ONNX Runtime and OpenVINO (which the backend keeps apart from the detections NMS reads)."""
        from ultralytics.utils import nms, ops

        runtime = self.race.next() if self.race else self.runtime
        backend = self.backends[runtime]
        batch = torch.from_numpy(inputs).to(self.device, non_blocking=True)
        batch = (batch.half() if self.half else batch.float()).div_(255)
        self.last_embeddings = None
        raw = backend(batch)
        embeddings = getattr(backend, "embeddings", None)  # a bare AutoBackend or a stand-in gives none
        self.last_embeddings = checked_embeddings(embeddings() if callable(embeddings) else None, len(inputs))
        found = nms.non_max_suppression(
            raw, self.conf, self.iou, None, False, max_det=self.max_det, nc=0, end2end=backend.end2end
        )
        out = []
        for boxes, shape in zip(found, shapes, strict=True):
            boxes[:, :4] = ops.scale_boxes(batch.shape[2:], boxes[:, :4], (*shape, 3))
            out.append(boxes[:, :6].float().cpu().numpy())
        if self.race:
            self._raced(runtime, len(out))
        return out

    def _raced(self, runtime: str, images: int) -> None:
        """One more batch of the race done; once it decides, the rest run on the faster, and the line says why."""
        self.race.finished(runtime, images)
        if (choice := self.race.choice) is not None:
            self.runtime, self.reason, self.race = choice.runtime, choice.reason, None
            self.backends = {choice.runtime: self.backends[choice.runtime]}  # the other's memory goes
            LOG.info("predict: runtime %s: %s", self.runtime, self.reason)


@dataclass
class OpenedModel:
    """A model loaded for prediction, and what identifies it: a result folder pins the identity."""

    yolo: Any  # ultralytics YOLO
    source: str  # as given
    weights: Path  # the local checkpoint (for the ONNX export)
    run_id: str | None = None  # the MLflow run, when it came from MLflow
    pinned: str = ""  # the same model by a source that cannot move (a models:/ alias resolved to its version)
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> dict[int, str]:
        return {int(k): str(v) for k, v in self.yolo.names.items()}

    @property
    def weights_sha256(self) -> str:
        """The checkpoint's SHA-256, as its identity already holds it (hashed once, when it was opened)."""
        return self.identity.get("model_sha256") or file_sha256(self.weights)

    @property
    def trained_imgsz(self) -> int:
        return trained_imgsz(self.yolo)

    @property
    def training_tile(self) -> tuple[int, float] | None:
        return training_tile(self.yolo)

    @property
    def training_image_side(self) -> int | None:
        return training_image_side(self.yolo)


def build_checkpoint_detector(opened: OpenedModel, options: PredictOptions, load: LoadProbe | None = None) -> Detector:
    """The network of an opened model on its device, ready for batches: the expensive step (ONNX export, fuse).

    ``options.runtime``: a backend's name (`pipeline.inference.backends`: ``torch``, ``onnx``, CPU only), or
    ``auto``: PyTorch on a GPU; on a CPU the fastest of the racing backends for this model, size, batch and
    thread count: cached from an earlier run, else raced on this run's first batches (`pipeline.inference.runtime`).
    On a CPU the network gets the cores other processes leave free (``load``: a probe made before the model was
    opened). A backend that fails to load (an export that fails) falls back to PyTorch, with a note saying why.
    """
    configure_ultralytics()
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.torch_utils import select_device

    yolo, runtime = opened.yolo, options.runtime
    torch_device = select_device(resolve_device(options.device), verbose=False)
    size = options.imgsz or trained_imgsz(yolo)
    on_cpu = torch_device.type == "cpu"
    if runtime in BACKENDS and BACKENDS[runtime].cpu_only and not on_cpu:
        raise ModelError(f"runtime {runtime}: runs on the CPU only, not on {torch_device}")
    use_half = not on_cpu if options.half is None else options.half and not on_cpu
    cores = cpu_threads()
    others = (load or LoadProbe()).others() if on_cpu else 0.0
    threads = free_threads(others, cores)
    runtime, reason = _planned(runtime, on_cpu, opened.weights_sha256, size, options.batch, threads)
    request = LoadRequest(yolo.model, opened.weights, trained_imgsz(yolo), torch_device, use_half, threads)
    backends, note, failed = _loaded(runtime, request)
    reason = failed or reason
    race = None
    if len(backends) > 1:  # auto on a CPU, not measured before with these threads
        race = Race(opened.weights_sha256, size, options.batch, threads, tuple(backends))
    if threads < cores:
        reason += (
            f"; other processes keep {others:.0%} of the CPU busy, so the network runs on {threads} of {cores} cores"
        )
    nms = {"conf": options.conf, "iou": options.iou, "max_det": options.max_det}  # applied to each batch's output
    chosen = "+".join(backends) if race else next(iter(backends))
    detector = Detector(
        backends, opened.names, size, opened.source, chosen, opened.run_id, note, reason, race=race, **nms
    )
    # Padded only to the stride, as ultralytics' predictor pads a batch of equal images (every backend
    # takes any shape: the ONNX export has dynamic axes).
    detector._letterbox = LetterBox(size, auto=True, stride=int(detector.backend.stride))
    return detector


def _planned(runtime: str, on_cpu: bool, weights_sha256: str, size: int, batch: int, threads: int) -> tuple[str, str]:
    """What to build, and why: the runtime asked for; for ``auto``, PyTorch on a GPU; on a CPU the runtime
    measured faster before on these threads (cached), else ``auto`` still: the racers are built and raced."""
    if runtime != AUTO:
        return runtime, "as --runtime asks"
    if not on_cpu:
        return FALLBACK, f"a GPU: {label(FALLBACK)} in half precision"
    racing = racers(available=True)
    if len(racing) < 2:
        missing = [name for name in racers() if name not in racing]
        if not missing:
            return FALLBACK, f"no other runtime to race {label(FALLBACK)} against"
        return FALLBACK, f"{labels(missing)} {'is' if len(missing) == 1 else 'are'} not installed"
    if known := cached_choice(weights_sha256, size, batch, threads, racing):
        return known.runtime, known.reason
    return AUTO, (
        f"not measured before for this model, size, batch and thread count: the first {len(schedule(racing))} "
        f"batches run on {labels(racing)} in turn, timed end to end, and the rest on the faster"
    )


def _loaded(runtime: str, request: LoadRequest) -> tuple[dict[str, Backend], str, str]:
    """The backends `_planned` chose (the racers for ``auto``), loaded, in the registry's order; the note and the
    reason when one failed to load: the run goes on in PyTorch, which always loads."""
    wanted = racers(available=True) if runtime == AUTO else (runtime,)
    backends: dict[str, Backend] = {}
    note = reason = ""
    for name in wanted:
        backend = BACKENDS[name]
        if name == FALLBACK:  # its failure is the run's: nothing else to run
            backends[name] = backend.load(request)
            continue
        try:
            backends[name] = backend.load(request)
        except Exception as exc:  # noqa: BLE001 - any exporter failure leaves PyTorch, which always works
            step = backend.load_step or f"{backend.label} load"
            note = f"{step} failed ({type(exc).__name__}: {first_line(exc)}); running in {label(FALLBACK)}"
            reason = f"the {step} failed"
    if not backends:
        backends[FALLBACK] = BACKENDS[FALLBACK].load(request)
    for loaded in backends.values():
        LOG.debug("predict: backend %s", loaded.describe())
    return backends, note, reason


def open_checkpoint(source: str, tracking_uri: str = "") -> OpenedModel:
    """The model of ``source`` loaded (safely: `pipeline.checkpoints`), with its identity; ModelError in one line.

    An MLflow model is its ``weights`` artifact, downloaded and loaded as a local checkpoint: the
    pickled pyfunc wrapper is never loaded. A path that does not exist fails here, before any
    download is tried; only ultralytics' own release names (``yolo11n.pt``) are fetched.
    """
    configure_ultralytics()
    if source.startswith(MLFLOW_SCHEMES):
        return _open_mlflow(source, tracking_uri)
    path = Path(source)
    if path.suffix in {".yaml", ".yml"}:
        raise ModelError(f"{source}: an architecture without weights cannot predict; give a trained .pt")
    if path.exists() and (path.suffix != ".pt" or not path.is_file()):
        raise ModelError(f"{source}: not a .pt checkpoint file, an MLflow model URI or an ultralytics model name")
    if not path.exists():
        _check_release_name(source)
    yolo = _yolo(source)
    weights = Path(yolo.ckpt_path or source)
    return OpenedModel(yolo, source, weights, pinned=source, identity={"model_sha256": file_sha256(weights)})


def _check_release_name(source: str) -> None:
    """A missing file is an error at once, unless it is one of ultralytics' release assets (downloaded)."""
    from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

    path = Path(source)
    name = path.name if path.suffix else f"{path.name}.pt"
    if path.parent != Path(".") or name not in GITHUB_ASSETS_NAMES:
        raise ModelError(f"{source}: no such model file")


def _yolo(source: str) -> Any:
    from ultralytics import YOLO

    try:
        return YOLO(source, task="detect")
    except FileNotFoundError:
        raise ModelError(f"{source}: no such model file") from None
    except Exception as exc:  # noqa: BLE001 - a refused pickle, a damaged file, a download that failed
        if is_refusal(exc) or Path(source).exists():
            raise ModelError(load_error(exc, source)) from None
        raise ModelError(f"{source}: not found locally and could not be downloaded ({first_line(exc)})") from None


def _open_mlflow(source: str, tracking_uri: str) -> OpenedModel:
    from pipeline.tracking.registry import StoreUnavailable, model_weights

    try:
        found = model_weights(source, tracking_uri)
    except StoreUnavailable as exc:
        raise ModelError(f"{source}: {exc}" if not str(exc).startswith(source) else str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds; the user needs the one line
        raise ModelError(f"{source}: cannot load the model ({type(exc).__name__}: {first_line(exc)})") from None
    try:
        yolo = _yolo(str(found.path))
    except ModelError as exc:
        raise ModelError(f"{source}: {exc}") from None
    identity = {"model_sha256": file_sha256(found.path), "model_run_id": found.run_id, "model_version": found.version}
    return OpenedModel(yolo, source, found.path, found.run_id, found.pinned, identity)

"""`export`: a trained model and its screen written as a bundle a line PC runs (`pipeline.inference.bundle`).

The network is the checkpoint's ONNX export at its training size (dynamic batch and image shapes: the export
predict's ONNX runtime already uses, `pipeline.inference.onnx_export`), as is, as OpenVINO IR, or quantized to
INT8 on images of the training data (`pipeline.export.quantize`: ONNX Runtime's and NNCF's quantizers). An INT8
network must pass the accuracy gate (`pipeline.export.gate`) against the FP32 one before anything is written. The
bundle is built in a hidden folder and swapped in whole (`pipeline.destinations`): a refused gate, a failed
quantization or a kill leaves ``--out`` as it was, and a folder this tool did not make is never replaced. Every
network keeps the export's second output, ``embedding`` (the backbone's pooled features the drift check compares,
`pipeline.inference.embedding`): the IR carries it, and the quantizers leave its pooling in float.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.checkpoints import MLFLOW_SCHEMES, file_sha256
from pipeline.destinations import build_then_swap, check_replaceable
from pipeline.drift.baseline import FILENAME as BASELINE
from pipeline.drift.baseline import Baseline
from pipeline.export.gate import GateResult, gate, measure
from pipeline.inference.bundle import FORMATS, NETWORK_FILES, BundleInfo, bundle_section
from pipeline.inference.options import PredictOptions, RunOptions
from pipeline.inference.screen import FILE_NAME, UNCALIBRATED, Screen, read_screen
from pipeline.messages import UserError

if TYPE_CHECKING:
    from pipeline.tracking.screens import ScreenLookup

LOG = logging.getLogger("pipeline.export")
KIND = "export"  # the destination marker's kind
CALIBRATION_IMAGES = 100  # INT8: images of the training data the quantizer sees (spread evenly over the split)
EXPORT_TAG = "pipeline.export"  # with --track: pipeline.export.<format> on the model version (or run), JSON


class ExportError(UserError, ValueError):
    """An export that cannot be made as asked; one line."""


class GateRefused(UserError):
    """The INT8 network lost more accuracy than allowed: one line per failing class; nothing was written."""

    def __init__(self, result: GateResult) -> None:
        super().__init__(result.failures[0])
        self.result = result


@dataclass
class ExportResult:
    out: Path
    format: str
    info: BundleInfo
    screen: Screen
    screen_source: str  # where the thresholds came from, one line
    gate: GateResult | None
    seconds: float
    tracking_run_id: str | None = None  # with --track: the export's MLflow run
    note: str = ""  # why tracking failed, if it did
    baseline: str = ""  # the drift baseline the bundle carries (where it came from), or why it carries none


def export_bundle(
    model: str,
    out: str | Path,
    fmt: str = "onnx",
    *,
    screen: str | Path | None = None,
    data: str | Path | None = None,
    split: str = "val",
    max_recall_drop: float = 0.02,
    max_map50_drop: float = 0.01,
    calibration_images: int = CALIBRATION_IMAGES,
    track: bool = False,
    experiment: str = "exports",
    options: RunOptions | None = None,
) -> ExportResult:
    """Write ``model`` and its screen as a bundle of format ``fmt`` (`FORMATS`) into ``out`` (see the module doc).

    The thresholds are ``screen``'s (a screen.json), else those stored with an MLflow model's version (or run),
    else predict's default score threshold for every class, said as not calibrated. INT8 formats quantize on
    ``calibration_images`` images of the train split of ``data`` (default: the data the checkpoint was trained
    on, where that is still there) and are gated on ``split``: per-class recall at the thresholds may fall by at
    most ``max_recall_drop``, mAP50 by at most ``max_map50_drop``; else `GateRefused` and nothing is written.
    """
    options = options or RunOptions()
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: choose one of {', '.join(FORMATS)}")
    runtime, precision = FORMATS[fmt]
    check_replaceable(out, KIND)  # a refused --out costs nothing
    given = read_screen(screen) if screen else None
    start = time.perf_counter()
    from pipeline.inference.model import open_checkpoint

    opened = open_checkpoint(model, options.tracking_uri)
    names = [opened.names[i] for i in sorted(opened.names)]
    if precision == "int8":
        data = data or _training_data(opened)
        if data is None:
            raise ExportError(f"--format {fmt}: INT8 needs --data: images to quantize on and a split to gate on")
    chosen, source, lookup = _screen_for(model, opened, given, names, options)
    if not model.startswith(MLFLOW_SCHEMES):
        chosen = replace(chosen, model=chosen.model if given else os.path.abspath(model))
    from pipeline.inference.drift_check import find_baseline

    # The screen's drift baseline travels with it, so that a line PC's predict checks drift as the training machine's.
    found = find_baseline(given, str(screen or ""), opened, model, options.tracking_uri, lookup)
    baseline, about_baseline = found.baseline, found.where or f"none: {found.note}"
    chosen = replace(
        chosen,
        drift_baseline={"file": BASELINE, "sha256": baseline.digest(), "images": baseline.images} if baseline else {},
    )
    from pipeline.inference.backends.openvino import export_facts
    from pipeline.inference.onnx_export import onnx_model

    fp32 = onnx_model(opened.weights, opened.trained_imgsz)
    stride, end2end = export_facts(fp32)
    tile = opened.training_tile
    info = BundleInfo(
        runtime=runtime,
        precision=precision,
        network=NETWORK_FILES[runtime],
        network_sha256="",
        names=names,
        imgsz=opened.trained_imgsz,
        stride=stride,
        end2end=end2end,
        tile={"size": tile[0], "overlap": tile[1]} if tile else None,
        training_image_side=opened.training_image_side,
        source={
            "model": model if model.startswith(MLFLOW_SCHEMES) else os.path.abspath(model),
            "pinned": opened.pinned if model.startswith(MLFLOW_SCHEMES) else "",
            "sha256": opened.weights_sha256,
            "run_id": opened.run_id,
            "version": opened.identity.get("model_version"),
        },
        exported=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        versions=_versions(runtime, precision),
    )
    result_gate = None
    with build_then_swap(out, KIND, "--out", model=model, format=fmt) as staging:
        if baseline is not None:
            baseline.save(staging / BASELINE)  # the same bytes, so the digest screen.json names
        if precision == "fp32":
            info = _write(staging, info, chosen, _fp32_network(fp32, runtime, staging))
        else:
            with tempfile.TemporaryDirectory(prefix="yolo-pipeline-export-") as tmp:
                reference = Path(tmp) / "fp32"
                reference.mkdir()
                _write(reference, replace(info, precision="fp32"), chosen, _fp32_network(fp32, runtime, reference))
                samples = calibration_samples(data, info, calibration_images)
                quantized = _int8_network(fp32, runtime, staging, samples)
                info = _write(staging, info, chosen, quantized)  # a bundle now, so the gate runs it as predict would
                LOG.info("export: the accuracy gate: FP32 and INT8 screen %s of %s", split, data)
                result_gate = gate(
                    measure(reference, data, split, chosen.thresholds, options),
                    measure(staging, data, split, chosen.thresholds, options),
                    split=split,
                    data=str(data),
                    max_recall_drop=max_recall_drop,
                    max_map50_drop=max_map50_drop,
                )
            if not result_gate.passed:
                raise GateRefused(result_gate)
            if baseline is not None and (own := _int8_baseline(baseline, result_gate, data, split, fmt)) is not None:
                own.save(staging / BASELINE)  # in place of the calibration's copy
                baseline = own
                about_baseline += f", its embeddings and scores recorded again by the {fmt} network on {split}"
                chosen = replace(chosen, drift_baseline={**chosen.drift_baseline, "sha256": own.digest()})
            info = _write(staging, replace(info, gate=result_gate.to_dict()), chosen, staging / info.network)
    result = ExportResult(Path(out).resolve(), fmt, info, chosen, source, result_gate, time.perf_counter() - start)
    result.baseline = about_baseline
    if track:
        _track(result, model, experiment, options.tracking_uri)
    return result


def _int8_baseline(baseline: Baseline, result: GateResult, data: Any, split: str, fmt: str) -> Baseline | None:
    """The baseline as the INT8 network saw the calibration split, when the gate screened that very split: INT8 moves
    the embeddings (and scores) a little, and on a well-trained network more than images differ from each other, so
    a line running INT8 compared with what FP32 saw would show drift where there is none. None when the gate ran on
    other images than the baseline's (then the calibration's baseline is kept)."""
    from pipeline.drift import rethresholded

    seen = result.int8.seen
    same_split = baseline.split == split and Path(baseline.data).resolve() == Path(str(data)).resolve()
    if seen is None or not same_split or seen.images != baseline.images:
        return None
    return replace(
        baseline,
        sample=rethresholded(seen, baseline.thresholds),
        extra={**baseline.extra, "recorded_by": fmt},
        _digest=None,
    )


def _write(folder: Path, info: BundleInfo, screen: Screen, network: Path) -> BundleInfo:
    """screen.json with its bundle section (the network's SHA-256 filled in, unless known) into ``folder``; the info
    written."""
    info = replace(info, network_sha256=info.network_sha256 or file_sha256(network))
    document = {**json.loads(screen.to_json()), "bundle": bundle_section(info)}
    (folder / FILE_NAME).write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return info


def _fp32_network(fp32: Path, runtime: str, folder: Path) -> Path:
    target = folder / NETWORK_FILES[runtime]
    if runtime == "onnx":
        shutil.copyfile(fp32, target)
        return target
    from pipeline.export.quantize import openvino_ir

    return openvino_ir(fp32, target)


def _int8_network(fp32: Path, runtime: str, folder: Path, samples: list[np.ndarray]) -> Path:
    from pipeline.export.quantize import onnx_int8, openvino_int8

    target = folder / NETWORK_FILES[runtime]
    LOG.info("export: quantizing to INT8 on %d images of the training data", len(samples))
    return onnx_int8(fp32, target, samples) if runtime == "onnx" else openvino_int8(fp32, target, samples)


def calibration_samples(data: str | Path, info: BundleInfo, count: int) -> list[np.ndarray]:
    """Up to ``count`` network inputs from the train split of ``data``: images spread evenly over it, cut into the
    training tiles where the model was trained on tiles, letterboxed as predict letterboxes them and padded to the
    training size's square, float32 (1, 3, size, size) in [0, 1]."""
    from pipeline.data.tiles import tile_windows
    from pipeline.evaluation.evaluation import data_spec
    from pipeline.inference.decode import ImageError, read_image
    from pipeline.inference.discover import iter_images
    from pipeline.inference.steps import letterbox

    spec = data_spec(data, "train")
    paths = list(iter_images(spec.splits["train"]))
    if not paths:
        raise ExportError(f"--data {data}: no image in its train split to quantize on")
    chosen = [paths[int(i)] for i in np.linspace(0, len(paths) - 1, min(count, len(paths)))]
    tile = info.tile or {}
    samples: list[np.ndarray] = []
    for path in dict.fromkeys(chosen):
        try:
            image = read_image(path)
        except ImageError as exc:
            LOG.info("export: %s: left out of the quantizer's images (%s)", path, exc)
            continue
        height, width = image.shape[:2]
        windows = tile_windows(width, height, tile.get("size", 0), tile.get("overlap", 0.0))
        x1, y1, x2, y2 = windows[len(samples) % len(windows)]  # one tile per image, a different place each time
        boxed = letterbox(image[y1:y2, x1:x2], info.imgsz, info.stride)
        square = np.full((3, info.imgsz, info.imgsz), 114, np.uint8)
        square[:, : boxed.shape[1], : boxed.shape[2]] = boxed
        samples.append(square[None].astype(np.float32) / 255)
    if not samples:
        raise ExportError(f"--data {data}: no image of its train split could be read to quantize on")
    return samples


def _training_data(opened: Any) -> str | None:
    """The data.yaml the checkpoint was trained on, if it is still where the training found it."""
    found = ((opened.yolo.ckpt or {}).get("train_args") or {}).get("data")
    return str(found) if found and Path(str(found)).exists() else None


def _screen_for(
    model: str, opened: Any, given: Screen | None, names: list[str], options: RunOptions
) -> tuple[Screen, str, ScreenLookup | None]:
    """The screen the bundle carries, where it came from in one line, and the store's answer for an MLflow model
    (asked once: `find_baseline` takes it for the screen's baseline)."""
    if given is not None:
        unknown = sorted(set(given.thresholds) - set(names) - {"default"})
        if unknown:
            raise ExportError(f"--screen: a threshold for {unknown[0]!r}, which the model does not have")
        return given, given.describe(), None
    lookup = None
    if model.startswith(MLFLOW_SCHEMES):
        from pipeline.tracking.screens import ScreenLookup, stored_screen, stored_screen_file

        stored = stored_screen(opened.pinned or model, options.tracking_uri)  # a store that fails stops the export
        lookup = ScreenLookup(stored)
        if stored is not None:
            with tempfile.TemporaryDirectory() as tmp:
                path = stored_screen_file(stored, tmp, options.tracking_uri)
                if path is None:
                    raise ExportError(
                        f"{model}: its stored thresholds' screen.json (run {stored.calibration_run}) cannot be read; "
                        "give --screen"
                    )
                found = read_screen(path)
            about = f"{stored.about}, stored with {stored.source}"
            return replace(found, thresholds=stored.thresholds), about, lookup
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    default = PredictOptions.model_fields["conf"].default  # predict's own, without a screen
    plain = Screen({"default": default}, model, "", "", now, mode=UNCALIBRATED, model_sha256=opened.weights_sha256)
    return plain, plain.describe(), lookup


def _versions(runtime: str, precision: str) -> dict[str, str]:
    """This project's version and those of the libraries that made the network."""
    names = ["yolo-pipeline", "ultralytics", "torch", "onnx"]
    names += ["onnxruntime"] if runtime == "onnx" else ["openvino"]
    names += (["nncf"] if runtime == "openvino" else []) if precision == "int8" else []
    found = {}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def _track(result: ExportResult, model: str, experiment: str, tracking_uri: str) -> None:
    """An export run (screen.json and the gate as artifacts, the gate's figures as metrics), and a tag
    ``pipeline.export.<format>`` on the model version (or run) naming it; a server away costs a note."""
    from pipeline.tracking.runs import log_summary_run
    from pipeline.tracking.screens import tag_model

    summary: dict[str, Any] = {"seconds": result.seconds}
    if (found := result.gate) is not None:
        summary.update({"fp32.mAP50": found.fp32.map50, "int8.mAP50": found.int8.map50})
        for name, value in found.int8.recall.items():
            if value is not None and found.fp32.recall.get(name) is not None:
                summary[f"int8.recall.{name}"] = value
                summary[f"fp32.recall.{name}"] = found.fp32.recall[name]
    params = {"model": model, "format": result.format, "out": str(result.out), "thresholds": result.screen_source}
    tag = {
        "format": result.format,
        "network_sha256": result.info.network_sha256,
        "exported": result.info.exported,
        **({"gate_passed": found.passed, "int8_mAP50": found.int8.map50} if found else {}),
    }
    try:
        result.tracking_run_id = log_summary_run(
            "export", summary, params, [result.out / FILE_NAME], experiment, f"export {result.format}", tracking_uri
        )
        tag["run"] = result.tracking_run_id
        if model.startswith(MLFLOW_SCHEMES):
            tag_model(model, {f"{EXPORT_TAG}.{result.format}": json.dumps(tag, separators=(",", ":"))}, tracking_uri)
    except Exception as exc:  # noqa: BLE001 - the bundle is written whatever MLflow says
        result.note = (
            f"tracking: could not record the export ({type(exc).__name__}: {str(exc)[:150]}); the bundle holds it"
        )

"""Predict over a folder on this machine: decoding threads feed batches to the model, results go to files.

Reading, decoding and letterboxing run in a pool of threads (OpenCV releases the GIL), a bounded
window ahead of the model, so the model never waits for a disk and memory holds a few batches
whatever the folder's size. Images are batched in the order they are found; equally sized images
share a batch (a change of size closes one), so each batch is padded only to the model's stride.
Results are written as each batch finishes (`pipeline.inference.results`): a killed run loses at
most the batch in flight, and the same command again carries on where it stopped.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.inference.decode import ImageError, read_image
from pipeline.inference.discover import iter_images
from pipeline.inference.draw import write_annotated, write_crops
from pipeline.inference.errors import ResultsError
from pipeline.inference.model import Detector, load_detector
from pipeline.inference.results import (
    ERRORS,
    PREDICTIONS,
    AppendLog,
    DoneSet,
    Verdict,
    check_settings,
    write_summary,
)


@dataclass
class PredictResult:
    out: Path
    model: str
    images: int = 0  # predicted by this run
    errors: int = 0  # failed in this run
    skipped: int = 0  # done by an earlier run into the same folder
    seconds: float = 0.0
    total_images: int = 0  # in the folder, this run's and earlier ones'
    total_errors: int = 0
    detections: dict[str, int] = field(default_factory=dict)
    failed_verdicts: int = 0
    run_id: str | None = None  # the MLflow run of the model, when it came from MLflow

    @property
    def images_per_s(self) -> float:
        return (self.images + self.errors) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Prepared:
    path: str
    shape: tuple[int, int] = (0, 0)
    image: np.ndarray | None = None  # kept only when annotated images or crops are asked for
    network_input: np.ndarray | None = None
    error: str = ""


def predict(
    source: str | Path,
    model: str,
    out: str | Path,
    *,
    batch: int = 16,
    conf: float = 0.25,
    iou: float = 0.7,
    imgsz: int = 0,
    device: str = "auto",
    half: bool | None = None,
    workers: int = 0,
    thresholds: dict[str, float] | None = None,
    save_images: bool = False,
    save_crops: bool = False,
    max_det: int = 300,
    tracking_uri: str = "",
    progress: bool = True,
) -> PredictResult:
    """Run ``model`` over the images of ``source`` and write the results to ``out`` (see the module doc)."""
    if batch < 1:
        raise ValueError(f"batch: must be >= 1, got {batch}")
    detector = load_detector(
        model, device=device, half=half, imgsz=imgsz, conf=conf, iou=iou, max_det=max_det, tracking_uri=tracking_uri
    )
    names = [detector.names[i] for i in sorted(detector.names)]
    verdict = _verdict(thresholds or {}, names, conf)
    out = Path(out)
    check_settings(out, _settings(detector, names, verdict))
    result = PredictResult(out, model, run_id=detector.run_id)
    done = DoneSet.of(out)
    predictions, errors = AppendLog(out / PREDICTIONS), AppendLog(out / ERRORS)
    keep_images = save_images or save_crops
    start = time.perf_counter()
    try:
        todo = _not_done(iter_images(source, exclude=out), done, result)
        bar = _progress(progress)
        with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1), thread_name_prefix="decode") as pool:
            window = 2 * batch + (workers or 8)
            for chunk in _batches(_prepare_ahead(pool, todo, detector, keep_images, window), batch):
                ready = [p for p in chunk if not p.error]
                found = (
                    detector.detect(np.stack([p.network_input for p in ready]), [p.shape for p in ready])
                    if ready
                    else []
                )
                for item in chunk:
                    if item.error:
                        errors.append({"path": item.path, "reason": item.error})
                        result.errors += 1
                        continue
                    detections = _detections(found.pop(0), detector.names)
                    if save_images:
                        write_annotated(out, item.path, item.image, detections)
                    if save_crops:
                        write_crops(out, item.path, item.image, detections)
                    height, width = item.shape
                    predictions.append(
                        {
                            "image_id": predictions.lines + 1,
                            "path": item.path,
                            "width": width,
                            "height": height,
                            "detections": detections,
                        }
                    )
                    result.images += 1
                bar.update(len(chunk))
        bar.close()
    finally:
        predictions.close()
        errors.close()
        result.seconds = time.perf_counter() - start
    totals = write_summary(out, names, verdict)
    result.total_images, result.detections, result.failed_verdicts = (
        totals["images"],
        totals["detections"],
        totals["failed_verdicts"],
    )
    result.total_errors = errors.lines
    return result


def _verdict(thresholds: dict[str, float], names: list[str], conf: float) -> Verdict:
    unknown = sorted(set(thresholds) - set(names) - {"default"})
    if unknown:
        raise ResultsError(f"threshold {unknown[0]!r}: the model has no such class (it has {', '.join(names)})")
    for name, value in thresholds.items():
        if not 0 <= value <= 1:
            raise ResultsError(f"threshold {name}={value}: must be between 0 and 1")
    default = thresholds.get("default", conf)
    return Verdict({k: v for k, v in thresholds.items() if k != "default"}, default)


def _settings(detector: Detector, names: list[str], verdict: Verdict) -> dict[str, Any]:
    """What the results in a folder depend on: a rerun must match them to add to it."""
    return {
        "model": detector.source,
        "classes": names,
        "imgsz": detector.imgsz,
        "conf": detector.conf,
        "iou": detector.iou,
        "max_det": detector.max_det,
        "thresholds": {**verdict.thresholds, "default": verdict.default},
    }


def _not_done(paths: Iterable[Path], done: DoneSet, result: PredictResult) -> Iterator[str]:
    for path in paths:
        text = str(path)
        if len(done) and text in done:
            result.skipped += 1
        else:
            yield text


def _prepare(path: str, detector: Detector, keep_image: bool) -> _Prepared:
    try:
        image = read_image(Path(path))
    except ImageError as exc:
        return _Prepared(path, error=str(exc))
    return _Prepared(path, image.shape[:2], image if keep_image else None, detector.prepare(image))


def _prepare_ahead(
    pool: ThreadPoolExecutor, paths: Iterator[str], detector: Detector, keep_images: bool, window: int
) -> Iterator[_Prepared]:
    """Prepared images in the order of ``paths``, with up to ``window`` being prepared ahead."""
    ahead: deque[Future[_Prepared]] = deque()
    for path in paths:
        ahead.append(pool.submit(_prepare, path, detector, keep_images))
        if len(ahead) >= window:
            yield ahead.popleft().result()
    while ahead:
        yield ahead.popleft().result()


def _batches(items: Iterator[_Prepared], size: int) -> Iterator[list[_Prepared]]:
    """Runs of at most ``size`` readable images of one input shape, with the unreadable ones among them."""
    chunk: list[_Prepared] = []
    shape: tuple[int, ...] | None = None
    readable = 0
    for item in items:
        if not item.error:
            if readable and item.network_input.shape != shape:
                yield chunk
                chunk, readable = [], 0
            shape = item.network_input.shape
            readable += 1
        chunk.append(item)
        if readable == size:
            yield chunk
            chunk, readable = [], 0
    if chunk:
        yield chunk


def _detections(boxes: np.ndarray, names: dict[int, str]) -> list[dict[str, Any]]:
    return [
        {
            "class_id": int(c),
            "class": names[int(c)],
            "score": round(float(s), 6),
            "box": [round(float(v), 3) for v in (x1, y1, x2, y2)],
        }
        for x1, y1, x2, y2, s, c in boxes
    ]


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(unit="img", desc="predict", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

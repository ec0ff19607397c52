"""Benchmark: a bundle's network and its numpy steps on decoded images, FP32 against INT8, and ultralytics' predict.

What `predict_throughput.py` measures includes decoding the image files, which on 2 cores takes most of the
time at 320 px; here the images are decoded once beforehand, so what is timed is what a format changes: per
batch of 8 already-decoded 640-px frames, the letterbox, the network and the NMS. Sides:

- each bundle (`export` of YOLO11n from its architecture, 3 classes, trained size 320): ``onnx`` (FP32 ONNX
  Runtime: the baseline of the INT8 targets), ``onnx-int8``, ``openvino``, ``openvino-int8``, through
  `BundleDetector` (prepare + detect), on the cores other processes leave free, as predict runs it;
- ultralytics: ``YOLO(model).predict(frames, imgsz=S, batch=8)`` on the same decoded frames (PyTorch, a thread
  per core), the baseline of the "3x ultralytics" target.

At 320 and 640 px, quiet and beside a real CPU training; the sides alternate in a rotating order, every round
gives paired ratios. Targets: the faster INT8 bundle >= 1.8x the FP32 ONNX bundle in every condition, and >= 3x
ultralytics quiet.

    python scripts/benchmarks/bundle_network.py [--rounds 5] [--batches 4] [--loads quiet,training]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.benchmarks.common import quiet_ultralytics, save_report  # noqa: E402
from scripts.benchmarks.predict_throughput import BUNDLES, CompetingTraining, untrained_model  # noqa: E402

TARGET_INT8_OF_ONNX = 1.8
TARGET_INT8_OF_ULTRALYTICS = 3.0
BATCH = 8


def time_bundle(detector: object, frames: list, batches: int) -> float:
    """ms per image of ``batches`` batches of the frames through the bundle's letterbox, network and NMS."""
    import numpy as np

    shapes = [frame.shape[:2] for frame in frames]
    start = time.perf_counter()
    for _ in range(batches):
        detector.detect(np.stack([detector.prepare(frame) for frame in frames]), shapes)
    return 1000 * (time.perf_counter() - start) / (batches * len(frames))


def time_ultralytics(yolo: object, frames: list, size: int, batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        yolo.predict(frames, imgsz=size, batch=BATCH, conf=0.25, device="cpu", verbose=False)
    return 1000 * (time.perf_counter() - start) / (batches * len(frames))


def measure(sides: dict, frames: list, size: int, args: argparse.Namespace) -> dict:
    names = list(sides)
    ms: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # untimed: sessions' first-shape set-up, PyTorch's allocations
        run = sides[name]
        run(1)
    for round_ in range(args.rounds):
        order = names[round_ % len(names) :] + names[: round_ % len(names)]
        for name in order:
            ms[name].append(sides[name](args.batches))
    median = {name: statistics.median(values) for name, values in ms.items()}
    int8 = min((n for n in names if n.endswith("int8")), key=median.get)
    of_onnx = [ms["onnx"][i] / ms[int8][i] for i in range(args.rounds)]
    of_theirs = [ms["ultralytics"][i] / ms[int8][i] for i in range(args.rounds)]
    return {
        "size": size,
        "median_ms_per_image": {name: round(value, 2) for name, value in median.items()},
        "int8_bundle": int8,
        "int8_of_onnx": round(median["onnx"] / median[int8], 3),
        "int8_of_onnx_per_round": [round(min(of_onnx), 3), round(max(of_onnx), 3)],
        "int8_of_ultralytics": round(median["ultralytics"] / median[int8], 3),
        "int8_of_ultralytics_per_round": [round(min(of_theirs), 3), round(max(of_theirs), 3)],
        "onnx_of_ultralytics": round(median["ultralytics"] / median["onnx"], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", type=int, default=4, help="batches of 8 frames per timed run")
    parser.add_argument("--loads", default="quiet,training")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "bundle_network.json")
    args = parser.parse_args()
    quiet_ultralytics()
    import cv2
    import torch
    from ultralytics import YOLO

    from pipeline.cpu import cpu_threads
    from pipeline.data.synth import synthesize
    from pipeline.export.bundles import export_bundle
    from pipeline.inference.bundle import build_bundle_detector, open_bundle
    from pipeline.inference.options import PredictOptions

    conditions = []
    with tempfile.TemporaryDirectory(prefix="bundle-network-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("YOLO_PIPELINE_CACHE", str(work / "cache"))
        model = untrained_model(work / "yolo11n.pt", classes=3)
        made = synthesize(work / "frames", images=40, seed=0, size=640, val_fraction=0.2).data_yaml
        bundles = {fmt: export_bundle(str(model), work / fmt, fmt, data=made).out for fmt in BUNDLES}
        frames = [cv2.imread(str(p)) for p in sorted((made.parent / "images" / "train").glob("*.png"))[:BATCH]]
        torch.set_num_threads(cpu_threads())
        yolo = YOLO(str(model))
        for load in args.loads.split(","):
            with CompetingTraining(work) if load == "training" else contextlib.nullcontext():
                for size in (320, 640):
                    options = PredictOptions(imgsz=size, conf=0.25)
                    detectors = {fmt: build_bundle_detector(open_bundle(b), options) for fmt, b in bundles.items()}
                    sides = {fmt: (lambda n, d=d: time_bundle(d, frames, n)) for fmt, d in detectors.items()}
                    sides["ultralytics"] = lambda n, s=size: time_ultralytics(yolo, frames, s, n)
                    row = {"load": load, **measure(sides, frames, size, args)}
                    conditions.append(row)
                    print(row, flush=True)
    report = {
        "benchmark": "bundle_network",
        "baseline": "the FP32 ONNX bundle; ultralytics' YOLO(model).predict(frames, imgsz, batch=8) on the same frames",
        "targets": {"int8_of_onnx": f">= {TARGET_INT8_OF_ONNX}", "int8_of_ultralytics (quiet)": ">= 3.0"},
        "meets_targets": all(
            c["int8_of_onnx"] >= TARGET_INT8_OF_ONNX
            and (c["load"] != "quiet" or c["int8_of_ultralytics"] >= TARGET_INT8_OF_ULTRALYTICS)
            for c in conditions
        ),
        "conditions": conditions,
    }
    save_report(args, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

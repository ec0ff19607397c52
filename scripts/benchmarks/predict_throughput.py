"""Benchmark: images per second of `predict` over a folder, against ultralytics' own streaming predict.

Baseline: ``YOLO(model).predict(source=folder, stream=True, batch=B)`` iterated to the end, the way
ultralytics documents predicting over a folder. Ours: ``pipeline.inference.predict(folder, model,
out, batch=B)``, which also writes predictions.jsonl, summary.csv and coco_results.json. Both
load the model inside the timed call (a command's whole cost), use the same folder, model, batch,
confidence threshold and image size, and alternate within one process (ours, theirs; theirs,
ours; ...) so drift in the machine's speed hits both. Headline: median images/s ours / theirs.
On a CPU ours runs the network in ONNX Runtime; the one-time export of the weights happens in an
untimed first run (its time is reported beside the ratio).

    python scripts/benchmarks/predict_throughput.py [--folder ../shared/datasets/neu-det/images/train]
        [--model best.pt] [--batch 16] [--device cpu]

Without ``--folder``: the training images of 800 synthetic 200-px defect images. Without ``--model``: a YOLO11n built from
its architecture (the speed of a network does not depend on its weights; 6 classes, 640 px).
Target: ratio >= 1.5 on CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.files import CACHE_ENV  # noqa: E402
from pipeline.inference import predict  # noqa: E402
from scripts.benchmarks.common import quiet_ultralytics, save_report  # noqa: E402

TARGET = 1.5


def untrained_model(path: Path, classes: int = 6) -> Path:
    """A YOLO11n checkpoint from the architecture, as a training would save it before its first epoch."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    model = YOLO("yolo11n.yaml", task="detect")
    model.model = DetectionModel("yolo11n.yaml", nc=classes, verbose=False)
    model.model.names = {i: f"defect{i}" for i in range(classes)}
    model.save(str(path))
    return path


def run_ours(folder: Path, model: Path, args: argparse.Namespace, out: Path) -> tuple[int, float]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = predict(folder, str(model), out, batch=args.batch, conf=args.conf, device=args.device, progress=False)
    return result.images, time.perf_counter() - start


def run_theirs(folder: Path, model: Path, args: argparse.Namespace) -> tuple[int, float]:
    from ultralytics import YOLO

    start = time.perf_counter()
    stream = YOLO(str(model)).predict(
        source=str(folder), stream=True, batch=args.batch, conf=args.conf, device=args.device, verbose=False
    )
    images = sum(1 for _ in stream)
    return images, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="a folder of images (not recursive: ultralytics' predict is not)")
    parser.add_argument("--model", type=Path, help="a .pt checkpoint (default: YOLO11n from its architecture)")
    parser.add_argument("--images", type=int, default=800, help="synthetic images when no --folder is given")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "predict_throughput.json")
    args = parser.parse_args()
    quiet_ultralytics()

    with tempfile.TemporaryDirectory(prefix="predict-throughput-") as tmp:
        work = Path(tmp)
        folder = args.folder
        if folder is None:
            synthesize(work / "synth", images=args.images, seed=0, size=200, val_fraction=0.05)
            folder = work / "synth" / "images" / "train"
        model = args.model or untrained_model(work / "yolo11n-untrained.pt")
        # Warm-up: the file cache, first-use allocations, and our one-time ONNX export of these weights.
        os.environ.setdefault(CACHE_ENV, str(work / "cache"))
        first_images, first_seconds = run_ours(folder, model, args, work / "warm-up")
        rates: dict[str, list[float]] = {"ours": [], "ultralytics": []}
        counts = {}
        for repeat in range(args.repeats):
            for side in ("ours", "ultralytics") if repeat % 2 == 0 else ("ultralytics", "ours"):
                if side == "ours":
                    images, seconds = run_ours(folder, model, args, work / "out")
                else:
                    images, seconds = run_theirs(folder, model, args)
                counts[side] = images
                rates[side].append(images / seconds)
                print(
                    f"repeat {repeat + 1}, {side:11}: {images} images in {seconds:6.2f} s = {images / seconds:7.1f} images/s",
                    flush=True,
                )

    if counts["ours"] != counts["ultralytics"]:
        raise SystemExit(f"the two sides saw different image counts: {counts}")
    median = {side: statistics.median(v) for side, v in rates.items()}
    ratio = median["ours"] / median["ultralytics"]
    report = {
        "benchmark": "predict_throughput",
        "baseline": "YOLO(model).predict(source=folder, stream=True, batch=B), iterated to the end",
        "ratio": round(ratio, 3),
        "target": f">= {TARGET}",
        "meets_target": ratio >= TARGET,
        "median_images_per_s": {k: round(v, 2) for k, v in median.items()},
        "per_repeat_images_per_s": {k: [round(x, 2) for x in v] for k, v in rates.items()},
        "images": counts["ours"],
        "folder": str(args.folder or f"{args.images} synthetic 200-px images"),
        "model": str(args.model or "YOLO11n from yolo11n.yaml, 6 classes"),
        "ours_first_run_s": round(first_seconds, 2),
        "ours_first_run_note": "the first run over new weights also exports them to ONNX (cached); not in the ratio",
    }
    save_report(args, report)
    print(f"\nimages/s: ours {median['ours']:.1f}, ultralytics {median['ultralytics']:.1f}")
    print(f"ratio (ours / ultralytics): {ratio:.2f}  (target >= {TARGET}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: tiled prediction over large frames, `predict --tile` against SAHI's sliced prediction.

Frames: 1024 x 1024 images, each an 8 x 8 grid of 128-px synthetic defect images, so every defect's
true box is known and small against the frame. Model: a YOLO11n trained on 128-px synthetic defects
(``--model``, or trained here for ``--epochs`` on the CPU first, as `make demo` does).

Baseline: SAHI's ``get_sliced_prediction`` (its ultralytics wrapper, slices of ``--tile`` px with
``--overlap``, no extra full-frame pass, its default greedy merging), frame by frame. Ours:
``pipeline.inference.predict(..., tile=, overlap=)`` over the folder of frames, with ONNX Runtime
(our CPU default) and again with PyTorch, so the merge and batching show apart from the runtime.
Same frames, model, confidence threshold, tile and overlap. Reported: frames/s and the ratio to
SAHI, and precision, recall and F1 against the true boxes (IoU >= 0.5, same class).

    python scripts/benchmarks/tiling_vs_sahi.py [--model best.pt] [--frames 12]

Needs ``pip install -e ".[bench]"`` (SAHI).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.config import build_config  # noqa: E402
from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.files import CACHE_ENV  # noqa: E402
from pipeline.inference import predict  # noqa: E402
from pipeline.training.run import train  # noqa: E402
from scripts.benchmarks.common import quiet_ultralytics, save_report  # noqa: E402

CELL, GRID = 128, 8


def train_model(work: Path, epochs: int) -> Path:
    data = synthesize(work / "train-data", images=400, seed=0, size=CELL).data_yaml
    raw = {
        "data": {"path": str(data)},
        "model": {"weights": "yolo11n.yaml"},
        "train": {"epochs": epochs, "imgsz": CELL, "batch": 16, "optimizer": "AdamW", "lr0": 0.002},
        "augment": {"mosaic": 0.0, "close_mosaic": 0},
        "tracking": {"enabled": False},
        "gradients": {"enabled": False},
    }
    raw["train"] |= {"warmup_epochs": 0, "workers": 0, "project": str(work / "runs")}
    return train(build_config(raw, "<benchmark>")).best_weights


def make_frames(work: Path, frames: int) -> tuple[Path, dict[str, list[tuple[int, list[float]]]]]:
    """Frames of GRID x GRID synthetic cells, and each frame's true (class, xyxy) boxes in frame pixels."""
    needed = frames * GRID * GRID
    cells = synthesize(work / "cells", images=needed + needed // 50 + 2, seed=7, size=CELL, val_fraction=0.01)
    images = sorted((cells.data_yaml.parent / "images" / "train").glob("*.png"))
    folder = work / "frames"
    folder.mkdir()
    truth: dict[str, list[tuple[int, list[float]]]] = {}
    for f in range(frames):
        frame = np.zeros((CELL * GRID, CELL * GRID, 3), np.uint8)
        boxes = []
        for k in range(GRID * GRID):
            image_path = images[f * GRID * GRID + k]
            y, x = divmod(k, GRID)
            frame[y * CELL : (y + 1) * CELL, x * CELL : (x + 1) * CELL] = cv2.imread(str(image_path))
            label = image_path.parent.parent.parent / "labels" / "train" / f"{image_path.stem}.txt"
            for line in label.read_text().split("\n"):
                if line.strip():
                    c, cx, cy, w, h = (float(v) for v in line.split())
                    x1, y1 = (cx - w / 2) * CELL + x * CELL, (cy - h / 2) * CELL + y * CELL
                    boxes.append((int(c), [x1, y1, x1 + w * CELL, y1 + h * CELL]))
        path = folder / f"frame_{f:03d}.png"
        cv2.imwrite(str(path), frame)
        truth[str(path)] = boxes
    return folder, truth


def iou(a: list[float], b: list[float]) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def score(found: dict[str, list[tuple[int, float, list[float]]]], truth: dict) -> dict[str, float]:
    """Precision, recall and F1 at IoU >= 0.5 and the same class, each true box matched at most once."""
    hits = predicted = 0
    for path, boxes in truth.items():
        free = list(boxes)
        for cls, _, box in sorted(found.get(path, []), key=lambda d: -d[1]):
            predicted += 1
            match = max(
                ((i, iou(box, t)) for i, (c, t) in enumerate(free) if c == cls), key=lambda m: m[1], default=None
            )
            if match and match[1] >= 0.5:
                hits += 1
                free.pop(match[0])
    total = sum(len(b) for b in truth.values())
    precision, recall = hits / max(predicted, 1), hits / max(total, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "detections": predicted}


def run_ours(folder: Path, model: Path, args: argparse.Namespace, out: Path, runtime: str) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    predict(
        folder, str(model), out, conf=args.conf, tile=args.tile, overlap=args.overlap, runtime=runtime, progress=False
    )
    seconds = time.perf_counter() - start
    found: dict[str, list] = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        found[record["path"]] = [(d["class_id"], d["score"], d["box"]) for d in record["detections"]]
    return seconds, found


def run_sahi(folder: Path, model: Path, args: argparse.Namespace) -> tuple[float, dict]:
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    start = time.perf_counter()
    detector = AutoDetectionModel.from_pretrained(
        model_type="ultralytics", model_path=str(model), confidence_threshold=args.conf, device="cpu", image_size=CELL
    )
    found: dict[str, list] = {}
    for path in sorted(folder.glob("*.png")):
        result = get_sliced_prediction(
            str(path),
            detector,
            slice_height=args.tile,
            slice_width=args.tile,
            overlap_height_ratio=args.overlap,
            overlap_width_ratio=args.overlap,
            perform_standard_pred=False,
            verbose=0,
        )
        found[str(path)] = [
            (p.category.id, p.score.value, [p.bbox.minx, p.bbox.miny, p.bbox.maxx, p.bbox.maxy])
            for p in result.object_prediction_list
        ]
    return time.perf_counter() - start, found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, help="a YOLO .pt trained on 128-px synthetic defects (default: train one)"
    )
    parser.add_argument("--epochs", type=int, default=20, help="epochs when training the model here")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--tile", type=int, default=CELL)
    parser.add_argument("--overlap", type=float, default=0.25)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "tiling_vs_sahi.json")
    args = parser.parse_args()
    quiet_ultralytics()

    with tempfile.TemporaryDirectory(prefix="tiling-vs-sahi-") as tmp:
        work = Path(tmp)
        os.environ.setdefault(CACHE_ENV, str(work / "cache"))
        model = args.model
        if model is None:  # trained here, and kept beside the report for the next run's --model
            model = args.out.with_suffix(".pt")
            model.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(train_model(work, args.epochs), model)
        folder, truth = make_frames(work, args.frames)
        run_ours(folder, model, args, work / "warm-up", "auto")  # the one-time ONNX export, file cache
        seconds, results = {}, {}
        seconds["sahi"], results["sahi"] = run_sahi(folder, model, args)
        seconds["ours_onnx"], results["ours_onnx"] = run_ours(folder, model, args, work / "onnx", "onnx")
        seconds["ours_torch"], results["ours_torch"] = run_ours(folder, model, args, work / "torch", "torch")

    quality = {side: score(found, truth) for side, found in results.items()}
    rate = {side: args.frames / s for side, s in seconds.items()}
    report = {
        "benchmark": "tiling_vs_sahi",
        "baseline": "sahi.predict.get_sliced_prediction, frame by frame, no full-frame pass",
        "frames": args.frames,
        "frame_size": CELL * GRID,
        "true_boxes": sum(len(b) for b in truth.values()),
        "frames_per_s": {k: round(v, 3) for k, v in rate.items()},
        "speed_ratio_vs_sahi": {k: round(v / rate["sahi"], 2) for k, v in rate.items() if k != "sahi"},
        "quality": quality,
        "model": str(args.model or f"YOLO11n trained here for {args.epochs} epochs on 400 synthetic 128-px images"),
    }
    save_report(args, report)
    for side in ("sahi", "ours_onnx", "ours_torch"):
        q = quality[side]
        print(
            f"{side:11} {rate[side]:6.2f} frames/s  precision {q['precision']:.3f}  recall {q['recall']:.3f}  "
            f"F1 {q['f1']:.3f}  ({q['detections']} detections)"
        )
    print(f"speed vs SAHI: {report['speed_ratio_vs_sahi']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: images per second from the training loader with our augmentation pipeline, against ultralytics' stock loader.

Baseline: the same training dataset and DataLoader (same images, image size, mosaic and the rest of
ultralytics' transforms, same batch and workers) with ultralytics' own default albumentations block
in place of the config's (``--preset``). Both come from ``pipeline.train.loader``, built as a training
builds them, on the data a training would use (``prepare_training_data``).

1. Loader throughput. Each measurement makes a fresh loader (its workers start), pulls and discards
   2 warm-up batches, then times ``--batches`` batches and counts their images. The two sides
   alternate within one process (ours, stock; then stock, ours; ...), so drift in the machine's speed
   hits both. Headline: median images/s ours / median images/s stock; the per-repeat pairs beside it.
2. Per-sample cost, in the main process without workers: ``dataset[i]`` for a fixed list of indices,
   with ``random`` and ``numpy`` reseeded per index so both sides get the same images, mosaic
   partners and affine up to the albumentations step; that step is also timed on its own. Then each
   transform of ours alone (p=1) on the images that reached the step, to show where the time goes.

    python scripts/benchmarks/loader_throughput.py [--data ../shared/datasets/neu-det] [--preset surface] [--imgsz 640]

Target: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
import logging
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.augment import describe, serialize  # noqa: E402
from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.data.training_data import prepare_training_data  # noqa: E402
from pipeline.train.loader import STOCK, albumentations_block, training_dataset, training_loader  # noqa: E402
from scripts.benchmarks.common import benchmark_config, save_report  # noqa: E402

TARGET = 0.95
WARMUP_BATCHES = 2


def images_per_s(dataset: Any, args: argparse.Namespace) -> float:
    """Images per second from a fresh training loader over ``dataset``, after its workers have started."""
    loader = training_loader(dataset, args.batch, args.workers)
    try:
        stream = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch
        for _ in range(WARMUP_BATCHES):
            next(stream)
        images, start = 0, time.perf_counter()
        for _ in range(args.batches):
            images += len(next(stream)["img"])
        return images / (time.perf_counter() - start)
    finally:
        loader.close()  # join the workers before the next loader forks its own


class TimedStep:
    """Stands in for a dataset's transform step: times each call and keeps a copy of what came in."""

    def __init__(self, step: Any):
        self.step, self.seconds, self.inputs = step, [], []

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        self.inputs.append(copy.deepcopy(labels))
        start = time.perf_counter()
        out = self.step(labels)
        self.seconds.append(time.perf_counter() - start)
        return out


def per_sample(dataset: Any, indices: list[int]) -> tuple[float, float, TimedStep]:
    """Mean ms per ``dataset[i]`` and per albumentations step, each index with the same seeds on every call."""
    steps = dataset.transforms.transforms
    k = steps.index(albumentations_block(dataset))
    timed = steps[k] = TimedStep(steps[k])
    torch.manual_seed(0)  # albumentations' own generator; reseeding it per index would time the reseed
    total = 0.0
    try:
        for i in indices:
            random.seed(i)
            np.random.seed(i)
            start = time.perf_counter()
            dataset[i]
            total += time.perf_counter() - start - 0  # the copy in TimedStep is outside its own timing
    finally:
        steps[k] = timed.step
    copying = 0.0  # the deep copies of the inputs happen inside dataset[i]; take them back out
    for labels in timed.inputs[:8]:
        start = time.perf_counter()
        copy.deepcopy(labels)
        copying += time.perf_counter() - start
    total -= copying / min(8, len(timed.inputs)) * len(indices)
    return total / len(indices) * 1e3, sum(timed.seconds) / len(indices) * 1e3, timed


def transform_ms(block: Any, inputs: list[dict[str, Any]]) -> dict[str, float]:
    """Each transform of an albumentations step alone, forced on (p=1), mean ms per image on ``inputs``."""
    import albumentations as A

    out = {}
    for transform in block.transform.transforms:
        single = copy.deepcopy(transform)
        single.p = 1.0
        compose = A.Compose(
            [single], bbox_params=A.BboxParams(format="yolo", label_fields=["class_labels"]), seed=0
        )
        start = time.perf_counter()
        for labels in inputs:
            instances = copy.copy(labels["instances"])
            img = labels["img"]
            instances.convert_bbox("xywh")
            instances.normalize(img.shape[1], img.shape[0])
            compose(image=img, bboxes=instances.bboxes.clip(0, 1), class_labels=labels["cls"])
        out[type(transform).__name__] = (time.perf_counter() - start) / len(inputs) * 1e3
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help="a data.yaml or YOLO folder; default: 400 synthetic images of 200 px")
    parser.add_argument("--preset", default="surface")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30, help="batches timed per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mosaic", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=48, help="indices timed one by one for the per-sample cost")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "loader_throughput.json")
    args = parser.parse_args()
    logging.getLogger("ultralytics").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="loader-throughput-") as tmp:
        work = Path(tmp)
        source = args.data or synthesize(work / "synth", images=400, seed=0, size=200).data_yaml
        train = {"imgsz": args.imgsz, "batch": args.batch, "workers": args.workers}
        config = benchmark_config(Path(source), work, train, augment={"mosaic": args.mosaic, "preset": args.preset})
        data_yaml = prepare_training_data(config.data, work / "run").dataset.data_yaml
        sides = {
            "ours": training_dataset(config, data_yaml, serialize(config.augment), work / "run"),
            "stock": training_dataset(config, data_yaml, STOCK, work / "run"),
        }

        rates: dict[str, list[float]] = {"ours": [], "stock": []}
        for repeat in range(args.repeats):
            for side in ("ours", "stock") if repeat % 2 == 0 else ("stock", "ours"):
                rates[side].append(images_per_s(sides[side], args))
            print(f"repeat {repeat + 1}: ours {rates['ours'][-1]:.1f}, stock {rates['stock'][-1]:.1f} images/s")

        indices = random.Random(0).sample(range(len(sides["ours"])), min(args.samples, len(sides["ours"])))
        for dataset in sides.values():
            per_sample(dataset, indices)  # warm-up: file cache, first-use allocations
        sample_ms: dict[str, list[float]] = {"ours": [], "stock": []}
        block_ms: dict[str, list[float]] = {"ours": [], "stock": []}
        for repeat in range(args.repeats):
            for side in ("ours", "stock") if repeat % 2 == 0 else ("stock", "ours"):
                whole, block, timed = per_sample(sides[side], indices)
                sample_ms[side].append(whole)
                block_ms[side].append(block)
        breakdown = transform_ms(timed.step if side == "ours" else albumentations_block(sides["ours"]), timed.inputs)

    median = {side: statistics.median(v) for side, v in rates.items()}
    ratio = median["ours"] / median["stock"]
    paired = [o / s for o, s in zip(rates["ours"], rates["stock"], strict=True)]
    sample = {side: statistics.median(v) for side, v in sample_ms.items()}
    block = {side: statistics.median(v) for side, v in block_ms.items()}
    report = {
        "benchmark": "loader_throughput",
        "baseline": "the same training dataset and loader with ultralytics' default albumentations block",
        "ratio": round(ratio, 4),
        "paired_ratios": [round(r, 4) for r in paired],
        "target": f">= {TARGET}",
        "meets_target": ratio >= TARGET,
        "images_per_s": {side: [round(r, 2) for r in v] for side, v in rates.items()},
        "median_images_per_s": {side: round(v, 2) for side, v in median.items()},
        "per_sample_ms": {side: round(v, 3) for side, v in sample.items()},
        "albumentations_ms": {side: round(v, 3) for side, v in block.items()},
        "per_sample_ms_per_repeat": sample_ms,
        "albumentations_ms_per_repeat": block_ms,
        "ours_transform_ms_at_p1": {name: round(ms, 3) for name, ms in breakdown.items()},
        "train_images": len(sides["ours"]),
        "transforms": describe(config.augment),
    }
    save_report(args, report)
    print(f"\n{'':24}{'ours':>10}{'stock':>10}")
    print(f"{'images/s (median)':24}{median['ours']:>10.1f}{median['stock']:>10.1f}")
    print(f"{'per-sample cost (ms)':24}{sample['ours']:>10.2f}{sample['stock']:>10.2f}")
    print(f"{'  albumentations (ms)':24}{block['ours']:>10.2f}{block['stock']:>10.2f}")
    print("ours, each transform alone at p=1 (ms): " + ", ".join(f"{n} {ms:.2f}" for n, ms in breakdown.items()))
    print(f"paired ratios: {', '.join(f'{r:.3f}' for r in paired)}")
    print(f"ratio (ours / stock): {ratio:.2f}  (target >= {TARGET}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

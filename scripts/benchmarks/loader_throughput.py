"""Benchmark: images per second from the training loader with our augmentation pipeline, against ultralytics' stock loader.

Baseline: the same training dataset and DataLoader (same images, image size, mosaic and the rest of
ultralytics' transforms and keys, same batch and workers) with ultralytics' own default
albumentations block in place of the preset's (``--preset``) and without our symmetry step. Both come from ``pipeline.training.loader``, built as a training
builds them, on the data a training would use (``prepare_training_data``).

1. Loader throughput. Each measurement makes a fresh loader (its workers start), pulls and discards
   2 warm-up batches, then times ``--batches`` batches and counts their images. The two sides
   alternate within one process (ours, stock; then stock, ours; ...), so drift in the machine's speed
   hits both. Headline: median images/s ours / median images/s stock; the per-repeat pairs beside it.
   Each measurement also takes the CPU time its workers and this process spent per image. When
   something else loads the machine, the workers get less than ``--workers`` cores ("cores busy"
   says how many they had) and images/s drops with it, while CPU per image barely moves: the ratio of
   CPU ms per image (stock / ours) is reported beside the headline as the steadier figure.
2. Per-sample cost (CPU ms), in the main process without workers: ``dataset[i]`` for a fixed list
   of indices, with ``random`` and ``numpy`` reseeded per index so both sides get the same images,
   mosaic partners and affine up to the albumentations step; that step is also timed on its own.
   Then each transform of ours alone (p=1) on the images that reached the step: where the time goes.

    python scripts/benchmarks/loader_throughput.py [--data ../shared/datasets/neu-det] [--preset surface] [--imgsz 640]

Target: ratio >= 0.95.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import torch  # noqa: E402

from pipeline.augment.spec import describe, serialize  # noqa: E402
from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.data.training_data import prepare_training_data  # noqa: E402
from pipeline.training.loader import STOCK, albumentations_block, training_dataset, training_loader  # noqa: E402
from scripts.benchmarks.common import benchmark_config, quiet_ultralytics, save_report  # noqa: E402

TARGET = 0.95
WARMUP_BATCHES = 2
# The per-sample costs are this thread's CPU time, not wall time: a busy machine takes the core away
# now and then, which wall time would count; CPU time barely moves with it.
cpu_clock = time.thread_time


def rounded(values: Any, digits: int = 3) -> Any:
    """``values`` (a number, or a list or dict of them, nested) rounded for the report."""
    if isinstance(values, dict):
        return {key: rounded(v, digits) for key, v in values.items()}
    if isinstance(values, list):
        return [rounded(v, digits) for v in values]
    return round(values, digits)


def cores(images_per_s: float, cpu_ms: float) -> float:
    """How many cores the loader kept busy; well under ``--workers`` means something else had the machine."""
    return images_per_s * cpu_ms / 1e3


def cpu_seconds(processes: list[psutil.Process]) -> float:
    """User and system CPU time of ``processes`` so far (their threads included)."""
    return sum(t.user + t.system for t in (p.cpu_times() for p in processes))


def measure_loader(dataset: Any, args: argparse.Namespace) -> tuple[float, float]:
    """Images per second from a fresh training loader over ``dataset`` once its workers have started, and the
    CPU time per image (ms) of its workers and this process over the same interval."""
    loader = training_loader(dataset, args.batch, args.workers)
    try:
        stream = itertools.chain.from_iterable(itertools.repeat(loader))  # epoch after epoch
        for _ in range(WARMUP_BATCHES):
            next(stream)
        workers = getattr(loader.iterator, "_workers", [])  # none when --workers 0
        processes = [psutil.Process(), *(psutil.Process(w.pid) for w in workers)]
        images, cpu, start = 0, cpu_seconds(processes), time.perf_counter()
        for _ in range(args.batches):
            images += len(next(stream)["img"])
        wall, cpu = time.perf_counter() - start, cpu_seconds(processes) - cpu
        return images / wall, cpu / images * 1e3
    finally:
        loader.close()  # join the workers before the next loader forks its own


class TimedStep:
    """Stands in for a dataset's transform step: times each call and, when asked, keeps a copy of its input."""

    def __init__(self, step: Any, keep: bool):
        self.step, self.keep, self.seconds, self.inputs = step, keep, [], []

    def __call__(self, labels: dict[str, Any]) -> dict[str, Any]:
        if self.keep:
            self.inputs.append(copy.deepcopy(labels))
        start = cpu_clock()
        out = self.step(labels)
        self.seconds.append(cpu_clock() - start)
        return out


def per_sample(dataset: Any, indices: list[int], keep: bool = False) -> tuple[float, float, TimedStep]:
    """Mean ms per ``dataset[i]`` and per albumentations step; every index with the same seeds on every call."""
    steps = dataset.transforms.transforms
    k = steps.index(albumentations_block(dataset))
    timed = steps[k] = TimedStep(steps[k], keep)
    torch.manual_seed(0)  # albumentations' own generator; reseeding it per index would time the reseed
    total = 0.0
    try:
        for i in indices:
            random.seed(i)
            np.random.seed(i)
            start = cpu_clock()
            dataset[i]
            total += cpu_clock() - start
    finally:
        steps[k] = timed.step
    return total / len(indices) * 1e3, sum(timed.seconds) / len(indices) * 1e3, timed


def transform_ms(block: Any, inputs: list[dict[str, Any]]) -> dict[str, float]:
    """Each transform of an albumentations step alone, forced on (p=1), in a bbox-aware Compose of its own:
    mean ms per image over ``inputs`` (what reached the step); "(Compose alone)" is the wrapper's own cost."""
    import albumentations as A

    calls = []
    for labels in inputs:  # as ultralytics hands them over: normalised centre boxes
        h, w = labels["img"].shape[:2]
        labels["instances"].convert_bbox("xywh")
        labels["instances"].normalize(w, h)
        calls.append({"image": labels["img"], "bboxes": labels["instances"].bboxes, "class_labels": labels["cls"]})
    out = {}
    for transform in [None, *block.transform.transforms]:
        single = [] if transform is None else [copy.deepcopy(transform)]
        for t in single:
            t.p = 1.0
        bboxes = A.BboxParams(format="yolo", label_fields=["class_labels"])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an empty Compose with bbox_params warns that nothing uses them
            compose = A.Compose(single, bbox_params=bboxes, seed=0)
        start = cpu_clock()
        for call in calls:
            compose(**call)
        name = "(Compose alone)" if transform is None else type(transform).__name__
        out[name] = (cpu_clock() - start) / len(calls) * 1e3
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
    parser.add_argument("--samples", type=int, default=96, help="indices timed one by one for the per-sample cost")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "loader_throughput.json")
    args = parser.parse_args()
    quiet_ultralytics()

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
        cpu_ms: dict[str, list[float]] = {"ours": [], "stock": []}
        busy: dict[str, list[float]] = {"ours": [], "stock": []}
        for repeat in range(args.repeats):
            for side in ("ours", "stock") if repeat % 2 == 0 else ("stock", "ours"):
                rate, cpu = measure_loader(sides[side], args)
                rates[side].append(rate)
                cpu_ms[side].append(cpu)
                busy[side].append(cores(rate, cpu))
                print(
                    f"repeat {repeat + 1}, {side:5}: {rate:6.1f} images/s, {cpu:5.2f} CPU ms per image, "
                    f"{busy[side][-1]:.2f} cores busy",
                    flush=True,
                )

        indices = random.Random(0).sample(range(len(sides["ours"])), min(args.samples, len(sides["ours"])))
        for dataset in sides.values():
            per_sample(dataset, indices)  # warm-up: file cache, first-use allocations
        sample_ms: dict[str, list[float]] = {"ours": [], "stock": []}
        block_ms: dict[str, list[float]] = {"ours": [], "stock": []}
        for repeat in range(args.repeats):
            for side in ("ours", "stock") if repeat % 2 == 0 else ("stock", "ours"):
                whole, block, _ = per_sample(sides[side], indices)
                sample_ms[side].append(whole)
                block_ms[side].append(block)
        timed = per_sample(sides["ours"], indices, keep=True)[2]
        breakdown = transform_ms(timed.step, timed.inputs)

    median = {side: statistics.median(v) for side, v in rates.items()}
    ratio = median["ours"] / median["stock"]
    paired = [o / s for o, s in zip(rates["ours"], rates["stock"], strict=True)]
    cpu, sample, block = ({side: statistics.median(v) for side, v in d.items()} for d in (cpu_ms, sample_ms, block_ms))
    cpu_ratio = cpu["stock"] / cpu["ours"]
    report = {
        "benchmark": "loader_throughput",
        "baseline": "the same training dataset and loader with ultralytics' default albumentations block",
        "ratio": round(ratio, 4),
        "paired_ratios": rounded(paired),
        "target": f">= {TARGET}",
        "meets_target": ratio >= TARGET,
        "cpu_ratio": round(cpu_ratio, 4),
        "cpu_ratio_note": "median CPU ms per image in the loader (workers and main process), stock / ours",
        "median_images_per_s": rounded(median),
        "median_cpu_ms_per_image": rounded(cpu),
        "per_sample_ms": rounded(sample),
        "albumentations_ms": rounded(block),
        "per_repeat": {
            "images_per_s": rounded(rates),
            "cpu_ms_per_image": rounded(cpu_ms),
            "cores_busy": rounded(busy),
            "per_sample_ms": rounded(sample_ms),
            "albumentations_ms": rounded(block_ms),
        },
        "ours_transform_ms_at_p1": rounded(breakdown),
        "train_images": len(sides["ours"]),
        "transforms": describe(config.augment),
    }
    save_report(args, report)
    rows = [
        ("images/s (median)", median, ".1f"),
        ("loader CPU ms / image", cpu, ".2f"),
        ("per-sample cost (ms)", sample, ".2f"),
        ("  albumentations (ms)", block, ".2f"),
    ]
    print(f"\n{'':24}{'ours':>10}{'stock':>10}")
    for name, values, spec in rows:
        print(f"{name:24}{values['ours']:>10{spec}}{values['stock']:>10{spec}}")
    print("ours, each transform alone at p=1 (ms): " + ", ".join(f"{n} {ms:.2f}" for n, ms in breakdown.items()))
    print(f"paired ratios: {', '.join(f'{r:.2f}' for r in paired)}; from CPU time per image: {cpu_ratio:.2f}")
    print(f"ratio (ours / stock): {ratio:.2f}  (target >= {TARGET}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

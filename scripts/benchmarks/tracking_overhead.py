"""Benchmark: what tracking to a real MLflow server costs a training, against the same training untracked.

Baseline: the identical training (same data, seed, config) with ``tracking.enabled=false``. Both are
timed end to end (``pipeline.training``: data checks, training, final validation and, when tracked, the
upload of every record, artifact and the model). Runs alternate (off, on, off, on, ...) so drift in
the machine's speed hits both sides. Single runs on a shared 2-core machine vary by several percent,
so the headline ratio is the median of the per-pair ratios (tracked / the untracked run beside it),
which cancels slow drift; median/median and min/min are reported beside it.

Both runs record per-layer gradient statistics (``--gradients``): the default config sends the compact
record (per block and head level, 144 metrics per epoch for a yolo11n) and the full table as one
artifact; ``layer`` sends every statistic of every layer (about 2,500 metrics per epoch), which the
local server (on the same cores as the training) has to store.

    python scripts/benchmarks/tracking_overhead.py [--repeats 5] [--epochs 5] [--imgsz 96] \
        [--gradients default|layer|mean|off]

Target (issue: training spine): ratio <= 1.02.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.training import train  # noqa: E402
from scripts.benchmarks.common import benchmark_config, save_report  # noqa: E402
from tests.helpers.mlflow_server import MlflowServer  # noqa: E402


def timed_training(data_yaml: Path, work: Path, args: argparse.Namespace, tracking: dict) -> float:
    settings = {"epochs": args.epochs, "imgsz": args.imgsz, "device": args.device, "plots": True}
    gradients = {
        "default": {"enabled": True},
        "layer": {"enabled": True, "detail": "layer"},
        "mean": {"enabled": True, "reductions": ["mean"]},
        "off": {"enabled": False},
    }[args.gradients]
    config = benchmark_config(data_yaml, work, settings, tracking=tracking, gradients=gradients)
    start = time.perf_counter()
    result = train(config)
    elapsed = time.perf_counter() - start
    if tracking.get("enabled", True) and result.pending_records:
        raise RuntimeError(f"tracked run left {result.pending_records} records unsent")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--imgsz", type=int, default=96)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--gradients",
        choices=["default", "layer", "mean", "off"],
        default="default",
        help="gradient metrics in both runs: the default config (per block and head level, every reduction), "
        "every layer (detail: layer), the epoch mean only, none",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "tracking_overhead.json")
    args = parser.parse_args()
    logging.getLogger("ultralytics").setLevel(logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="tracking-overhead-") as tmp:
        work = Path(tmp)
        data_yaml = synthesize(work / "data", images=args.images, seed=0, size=args.imgsz).data_yaml
        (work / "server").mkdir()
        server = MlflowServer(work / "server")
        server.start()
        try:
            tracked = {"uri": server.uri, "experiment": "tracking-overhead"}
            # Warm-up, both ways: imports and first-use caches here, and the server's own lazy start-up
            # (its first requests cost seconds of CPU), which no steady-state training pays.
            timed_training(data_yaml, work, args, {"enabled": False})
            timed_training(data_yaml, work, args, tracked)
            off, on = [], []
            for repeat in range(args.repeats):
                off.append(timed_training(data_yaml, work, args, {"enabled": False}))
                on.append(timed_training(data_yaml, work, args, tracked))
                print(f"repeat {repeat + 1}: untracked {off[-1]:.2f}s, tracked {on[-1]:.2f}s", flush=True)
        finally:
            server.stop()

    ratio = statistics.median(t / u for t, u in zip(on, off))
    report = {
        "benchmark": "tracking_overhead",
        "baseline": "same training with tracking.enabled=false",
        "ratio": round(ratio, 4),
        "ratio_of_medians": round(statistics.median(on) / statistics.median(off), 4),
        "ratio_of_minimums": round(min(on) / min(off), 4),
        "untracked_spread": round((max(off) - min(off)) / statistics.median(off), 4),
        "target": "<= 1.02",
        "meets_target": ratio <= 1.02,
        "untracked_s": off,
        "tracked_s": on,
    }
    save_report(args, report)
    print(
        f"tracking overhead: tracked / untracked = {ratio:.4f} (median of {len(on)} pairs; target <= 1.02), "
        f"medians {report['ratio_of_medians']:.4f}, minimums {report['ratio_of_minimums']:.4f}, "
        f"untracked runs spread {report['untracked_spread']:.1%}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

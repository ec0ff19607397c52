"""Benchmark: one sweep run three ways (sequential, Ray in parallel, Ray with ASHA early stopping): wall time and epochs.

The same grid (default ``train.lr0=0.00001,0.000001,0.02,0.05``: 4 trials of 3 epochs on 120 synthetic
images of 64 px) is run in this process by the library functions, each way in a fresh temp folder with
its own SQLite store and ``train.project`` (so Ray's sweep state is new and nothing is resumed):

- ``sequential``, the baseline: ``pipeline.sweeps.sweep.sweep``, the local engine, one trial after another;
- ``ray``: ``pipeline.sweeps.ray_sweep.ray_sweep`` with ``--parallel`` trials at a time;
- ``ray_asha``: the same with ASHA (``--metric``, ``--grace``) stopping weak trials between epochs.

Wall time is the sweep call end to end (for the Ray ways that includes starting the local Ray, which is
shut down between ways). ``--rounds`` repeats the three ways, their order alternating (sequential, ray,
asha; then asha, ray, sequential; ...) since timings on a shared machine are noisy. Reported per way:
wall time per round, median and min/max spread, the ratio to the sequential run of the same round
(per round and median), epochs trained (steps of ``val.box_loss`` in each child's run) against the full
grid's, children finished/stopped/failed, and the best configuration: the sweep's own (``best.mAP50_95``)
and the one with the best last ``--metric`` among finished children, which is compared with the
sequential run's (``same_best_as_sequential``).

On a 2-core CPU machine parallel trials cannot be faster than one trial using both cores: the ratio is
reported anyway, and ASHA's saving shows in the epochs spent. On a GPU machine, share the GPU:

    python -m scripts.benchmarks.sweep_scaling [--rounds 3] [--epochs 3] [--grid train.lr0=...] [--data data.yaml]
    python -m scripts.benchmarks.sweep_scaling --device 0 --gpus-per-trial 0.25 --parallel 4
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the package

import yaml  # noqa: E402

from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.sweeps.ray_sweep import RayOptions, ray_sweep  # noqa: E402
from pipeline.sweeps.sweep import SweepResult, parse_grid, plan_sweep, sweep  # noqa: E402
from scripts.benchmarks.common import benchmark_config, quiet_ultralytics, save_report  # noqa: E402

WAYS = ("sequential", "ray", "ray_asha")
DEFAULT_GRID = ["train.lr0=0.00001,0.000001,0.02,0.05"]
EPOCH_METRIC = "val.box_loss"  # one step per trained epoch in every child's run


def sweep_config(data_yaml: Path, work: Path, args: argparse.Namespace) -> Path:
    """The sweep's config file in ``work``, tracking to ``work/mlflow.db`` and training into ``work/runs``."""
    train = {
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "device": args.device,
        "optimizer": "SGD",  # with no warmup, lr0 acts from the first step
        "warmup_epochs": 0,
    }
    tracking = {"uri": f"sqlite:///{work / 'mlflow.db'}", "experiment": "sweep-scaling", "system_metrics": False}
    config = benchmark_config(data_yaml, work, train, tracking=tracking, gradients={"enabled": False})
    raw = config.to_dict()
    raw["augment"] = {"mosaic": 0.0, "close_mosaic": 0}
    path = work / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def shutdown_ray() -> None:
    """End this process's Ray, if any, so the next Ray way starts its own local Ray."""
    try:
        import ray
    except ImportError:
        return
    if ray.is_initialized():
        ray.shutdown()


def ray_options(args: argparse.Namespace, asha: bool) -> RayOptions:
    return RayOptions(
        parallel=args.parallel,
        cpus_per_trial=args.cpus_per_trial,
        gpus_per_trial=args.gpus_per_trial,
        early_stop="asha" if asha else "",
        metric=args.metric,
        grace=args.grace,
    )


def best_by_metric(result: SweepResult, metric: str, client: Any) -> tuple[str | None, float | None]:
    """The finished child with the best last value of ``metric`` (lowest for a loss): its overrides and value."""
    sign = 1.0 if "loss" in metric else -1.0
    best: tuple[float, str] | None = None
    for child in result.finished:
        if not child.run_id:
            continue
        value = client.get_run(child.run_id).data.metrics.get(metric)
        if value is None or math.isnan(value):
            continue
        if best is None or sign * value < sign * best[0]:
            best = (value, " ".join(child.overrides))
    return (best[1], best[0]) if best else (None, None)


def run_way(way: str, data_yaml: Path, args: argparse.Namespace, round_index: int) -> dict[str, Any]:
    """One sweep, timed, in a fresh folder; what it trained and found, read back from its store."""
    from mlflow.tracking import MlflowClient

    with tempfile.TemporaryDirectory(prefix=f"sweep-scaling-{way}-") as tmp:
        work = Path(tmp)
        config_path = sweep_config(data_yaml, work, args)
        grid = parse_grid(args.grid)
        plan = plan_sweep(config_path, grid, args.override)
        full_grid_epochs = sum(config.train.epochs for _, config in plan.children)
        name = f"scaling-{way}-{round_index + 1}"
        shutdown_ray()
        start = time.perf_counter()
        if way == "sequential":
            result = sweep(config_path, grid, args.override, name=name)
        else:
            options = ray_options(args, asha=way == "ray_asha")
            result = ray_sweep(config_path, grid, args.override, name=name, options=options)
        wall = time.perf_counter() - start
        shutdown_ray()

        client = MlflowClient(result.tracking_uri)
        children = []
        for child in result.children:
            epochs = len(client.get_metric_history(child.run_id, EPOCH_METRIC)) if child.run_id else 0
            children.append(
                {"index": child.index, "overrides": " ".join(child.overrides), "status": child.status, "epochs": epochs}
            )
        best_config, best_value = best_by_metric(result, args.metric, client)
    return {
        "wall_s": round(wall, 2),
        "epochs_spent": sum(c["epochs"] for c in children),
        "full_grid_epochs": full_grid_epochs,
        "trials": len(plan.children),
        "finished": len(result.finished),
        "stopped": len(result.stopped),
        "failed": len(result.failed),
        "best_by_score": " ".join(result.best.overrides) if result.best else None,
        "best_by_metric": best_config,
        "best_metric_value": best_value,
        "children": children,
    }


def summarize(way: str, rounds: list[dict[str, dict[str, Any]]]) -> dict[str, Any]:
    """One way over the rounds: wall times, spread, ratios to the sequential run of the same round, epochs, best."""
    walls = [r[way]["wall_s"] for r in rounds]
    median = statistics.median(walls)
    summary: dict[str, Any] = {
        "wall_s": walls,
        "median_s": round(median, 2),
        "min_s": min(walls),
        "max_s": max(walls),
        "spread": round((max(walls) - min(walls)) / median, 4) if median else None,
        "epochs_spent": [r[way]["epochs_spent"] for r in rounds],
        "full_grid_epochs": rounds[0][way]["full_grid_epochs"],
        "children": [{k: r[way][k] for k in ("finished", "stopped", "failed")} for r in rounds],
        "best_by_score": [r[way]["best_by_score"] for r in rounds],
        "best_by_metric": [r[way]["best_by_metric"] for r in rounds],
        "rounds": [r[way] for r in rounds],
    }
    if way != "sequential":
        ratios = [r[way]["wall_s"] / r["sequential"]["wall_s"] for r in rounds]
        same = [r[way]["best_by_metric"] == r["sequential"]["best_by_metric"] for r in rounds]
        summary |= {
            "ratio_to_sequential": [round(x, 4) for x in ratios],
            "median_ratio_to_sequential": round(statistics.median(ratios), 4),
            "same_best_as_sequential": all(same),
            "same_best_as_sequential_per_round": same,
        }
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a data.yaml; default: --images synthetic images of --imgsz px")
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="train.device of every trial, e.g. cpu or 0")
    parser.add_argument(
        "--grid", action="append", help=f"section.key=v1,v2 (repeatable); default: {' '.join(DEFAULT_GRID)}"
    )
    parser.add_argument("--override", action="append", default=[], help="section.key=value for every trial")
    parser.add_argument("--parallel", type=int, default=2, help="Ray trials at a time")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0)
    parser.add_argument("--gpus-per-trial", type=float, default=0.0)
    parser.add_argument("--metric", default="val.box_loss", help="what ASHA follows and the best child is chosen by")
    parser.add_argument("--grace", type=int, default=1, help="epochs every trial trains before ASHA may stop it")
    parser.add_argument("--rounds", type=int, default=1, help="the three ways, repeated in alternating order")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "sweep_scaling.json")
    args = parser.parse_args()
    args.grid = args.grid or list(DEFAULT_GRID)
    quiet_ultralytics()

    rounds: list[dict[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="sweep-scaling-data-") as tmp:
        data_yaml = args.data or synthesize(Path(tmp) / "data", images=args.images, seed=0, size=args.imgsz).data_yaml
        for round_index in range(args.rounds):
            results: dict[str, dict[str, Any]] = {}
            for way in WAYS if round_index % 2 == 0 else tuple(reversed(WAYS)):
                results[way] = run_way(way, Path(data_yaml), args, round_index)
                r = results[way]
                print(
                    f"round {round_index + 1}, {way:10}: {r['wall_s']:7.1f}s, epochs {r['epochs_spent']}/"
                    f"{r['full_grid_epochs']}, finished {r['finished']} stopped {r['stopped']} failed {r['failed']}, "
                    f"best {r['best_by_metric']}",
                    flush=True,
                )
            rounds.append(results)

    ways = {way: summarize(way, rounds) for way in WAYS}
    report = {
        "benchmark": "sweep_scaling",
        "baseline": "the same sweep run sequentially in this process (pipeline.sweeps.sweep.sweep)",
        "note": "on a 2-core CPU machine parallel trials cannot be faster than one trial using both cores; "
        "the ratio is reported anyway, and ASHA's saving shows in the epochs spent",
        "grid": args.grid,
        "epoch_metric": EPOCH_METRIC,
        "ways": ways,
    }
    save_report(args, report)

    print(f"\nsweep scaling, {args.rounds} round(s), grid {' '.join(args.grid)}, {args.epochs} epochs per trial:")
    print(f"{'way':10}  {'median s':>9}  {'spread':>7}  {'/ seq':>6}  {'epochs':>9}  best ({args.metric}), same best")
    for way, s in ways.items():
        ratio = f"{s['median_ratio_to_sequential']:6.3f}" if way != "sequential" else f"{1:6.3f}"
        epochs = f"{statistics.median(s['epochs_spent']):g}/{s['full_grid_epochs']}"
        best = " | ".join(dict.fromkeys(str(b) for b in s["best_by_metric"]))
        same = "" if way == "sequential" else f", {'same' if s['same_best_as_sequential'] else 'different'}"
        spread = f"{s['spread']:.1%}" if s["spread"] is not None else "-"
        print(f"{way:10}  {s['median_s']:9.1f}  {spread:>7}  {ratio}  {epochs:>9}  {best}{same}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

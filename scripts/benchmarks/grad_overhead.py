"""Benchmark: what per-layer gradient instrumentation costs a training step, and how fast its statistics are.

1. Training step time. The same training (same synthetic data, seed and config) with
   ``gradients.enabled=true`` (every step sampled) and ``false``, alternating off/on so drift in the
   machine's speed hits both sides. ``nbs`` is set to the batch size, so every batch is an optimizer
   step and is instrumented (the worst case: ultralytics normally steps every 64 images). A step is
   timed from ``on_train_batch_start`` to ``on_train_batch_end`` (data already loaded; forward,
   backward, optimizer step); the first steps of each run are dropped as warm-up. Headline: the median
   over pairs of (median step time on / median step time off). Whole runs on a shared machine differ
   by several percent, so a low-noise cross-check is reported beside it: one run with
   ``gradients.every=2``, its sampled steps against its unsampled ones (the same process, adjacent in
   time). The epoch-end work (one transfer, health checks; the heatmaps draw on a thread of their own)
   is reported apart, per epoch.
2. The statistics function. On a yolo11n with a gradient in every parameter: ``gradient_stats`` (fused
   ``torch._foreach_*`` ops, results moved to the host once) against the way per-parameter tools do it,
   a Python loop with ``.norm().item()`` (and max |g|, non-finite count) per parameter. Same statistics,
   same grouping by layer. The two alternate; headline: the median of the per-round ratios loop / fused.

    python scripts/benchmarks/grad_overhead.py [--repeats 5] [--images 400] [--imgsz 128] [--device auto]

Targets (issue: gradient instrumentation): step ratio <= 1.03 on CPU (<= 1.02 on GPU); stats speed-up >= 4x.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

import torch  # noqa: E402

from pipeline.config import build_config  # noqa: E402
from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.train.run import prepare_training, resolve_device, session_env  # noqa: E402

WARMUP_STEPS = 3


class StepTimer:
    """Callbacks that time each training batch and the epoch-end gradient work."""

    def __init__(self, device: torch.device):
        self.device = device
        self.steps: list[float] = []
        self.sampled: list[bool] = []
        self.epoch_end: list[float] = []
        self._start = 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def batch_start(self, trainer) -> None:
        self._sync()
        self._start = time.perf_counter()

    def batch_end(self, trainer) -> None:
        self._sync()
        self.steps.append(time.perf_counter() - self._start)
        self.sampled.append(trainer.gradients is not None and trainer.gradients.monitor.sampling)

    def split(self) -> tuple[list[float], list[float]]:
        """Step times after warm-up: (sampled steps, unsampled steps)."""
        pairs = list(zip(self.steps, self.sampled, strict=True))[WARMUP_STEPS:]
        return [t for t, s in pairs if s], [t for t, s in pairs if not s]

    def timed_epoch_end(self, callback):
        def timed(trainer) -> None:
            start = time.perf_counter()
            callback(trainer)
            self.epoch_end.append(time.perf_counter() - start)

        return timed


def timed_training(
    data_yaml: Path, work: Path, args: argparse.Namespace, instrumented: bool, every: int = 1
) -> StepTimer:
    from pipeline.train.trainer import PipelineTrainer

    config = build_config(
        {
            "data": {"path": str(data_yaml)},
            "model": {"weights": "yolo11n.yaml"},
            "train": {
                "epochs": args.epochs,
                "imgsz": args.imgsz,
                "batch": args.batch,
                "device": args.device,
                "workers": 0,
                "seed": 0,
                "warmup_epochs": 0,
                "project": str(work / "runs"),
                "plots": False,
            },  # fmt: skip
            "augment": {"mosaic": 0.0, "close_mosaic": 0},
            "gradients": {"enabled": instrumented, "every": every},
            "tracking": {"enabled": False},
        },
        "<benchmark>",
    )
    prepared = prepare_training(config)
    prepared.ultralytics_args["nbs"] = args.batch  # one optimizer step per batch: every batch instrumented
    with session_env(prepared.session_file):
        trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
        timer = StepTimer(torch.device("cuda" if resolve_device(args.device) != "cpu" else "cpu"))
        trainer.add_callback("on_train_batch_start", timer.batch_start)
        trainer.add_callback("on_train_batch_end", timer.batch_end)
        epoch_end = trainer.callbacks["on_train_epoch_end"]
        i = epoch_end.index(PipelineTrainer._end_gradient_epoch)
        epoch_end[i] = timer.timed_epoch_end(epoch_end[i])
        trainer.train()
    return timer


def per_parameter_loop(model: torch.nn.Module, grouping: dict[str, str]) -> dict[str, list[float]]:
    """What per-parameter tools do: one small op and one host read per parameter and statistic."""
    squares: dict[str, float] = {}
    maxes: dict[str, float] = {}
    nonfinite: dict[str, float] = {}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        group = grouping[name]
        squares[group] = squares.get(group, 0.0) + p.grad.norm().item() ** 2
        maxes[group] = max(maxes.get(group, 0.0), p.grad.abs().max().item())
        nonfinite[group] = nonfinite.get(group, 0.0) + (~torch.isfinite(p.grad)).sum().item()
    return {"grad_norm": [math.sqrt(v) for v in squares.values()], "grad_max": list(maxes.values())}


def stats_benchmark(device: str, rounds: int) -> dict:
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    from pipeline.train.gradients import ParameterGroups, gradient_stats, group_name

    torch.manual_seed(0)
    target = torch.device("cuda:0" if resolve_device(device) != "cpu" else "cpu")
    model = DetectionModel("yolo11n.yaml", nc=6, verbose=False).to(target)
    for p in model.parameters():
        if p.requires_grad:  # ultralytics freezes the DFL layer
            p.grad = torch.randn_like(p)
    groups = ParameterGroups.of(model, "layer")
    grouping = {name: group_name(name, "layer") for name, _ in model.named_parameters()}
    grads = [p.grad for p in groups.params]
    scratch = [torch.empty_like(g) for g in grads]  # the monitor's model-sized buffer

    def fused() -> dict[str, list[float]]:
        stats = gradient_stats(grads, groups, scratch)
        host = torch.stack([stats.grad_norm, stats.grad_max, stats.grad_nonfinite]).cpu()  # the one transfer
        return {"grad_norm": host[0].tolist(), "grad_max": host[1].tolist()}

    def loop() -> dict[str, list[float]]:
        return per_parameter_loop(model, grouping)

    ours, theirs = fused(), loop()  # warm-up, and the two must agree
    for key in ours:
        assert all(math.isclose(a, b, rel_tol=1e-4) for a, b in zip(ours[key], theirs[key], strict=True)), key
    fused_s, loop_s = [], []
    for _ in range(rounds):
        for fn, out in ((fused, fused_s), (loop, loop_s)):
            if target.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            out.append(time.perf_counter() - start)
    return {
        "parameters": len(grads),
        "elements": sum(g.numel() for g in grads),
        "groups": len(groups),
        "fused_ms": round(statistics.median(fused_s) * 1e3, 3),
        "loop_ms": round(statistics.median(loop_s) * 1e3, 3),
        "speedup": round(statistics.median(b / a for a, b in zip(fused_s, loop_s, strict=True)), 2),
        "speedup_of_medians": round(statistics.median(loop_s) / statistics.median(fused_s), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="off/on pairs of trainings")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--stats-rounds", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "grad_overhead.json")
    args = parser.parse_args()
    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    device = resolve_device(args.device)

    stats = stats_benchmark(args.device, args.stats_rounds)
    print(
        f"stats function: fused {stats['fused_ms']} ms, per-parameter loop {stats['loop_ms']} ms -> "
        f"{stats['speedup']}x ({stats['parameters']} parameters, {stats['groups']} layers)",
        flush=True,
    )

    with tempfile.TemporaryDirectory(prefix="grad-overhead-") as tmp:
        work = Path(tmp)
        data_yaml = synthesize(work / "data", images=args.images, seed=0, size=args.imgsz, val_fraction=0.1).data_yaml
        timed_training(data_yaml, work, args, instrumented=True)  # warm-up: imports, first-use caches
        off, on, epoch_end = [], [], []
        for repeat in range(args.repeats):
            runs = {}
            for instrumented in (False, True):
                timer = timed_training(data_yaml, work, args, instrumented)
                runs[instrumented] = statistics.median(timer.steps[WARMUP_STEPS:])
                epoch_end.extend(timer.epoch_end if instrumented else [])
            off.append(runs[False])
            on.append(runs[True])
            print(f"repeat {repeat + 1}: median step off {off[-1] * 1e3:.1f} ms, on {on[-1] * 1e3:.1f} ms", flush=True)
        sampled, unsampled = timed_training(data_yaml, work, args, instrumented=True, every=2).split()
    in_run = statistics.median(sampled) / statistics.median(unsampled)
    print(f"one run, every=2: sampled steps / unsampled steps = {in_run:.4f}", flush=True)

    ratio = statistics.median(a / b for a, b in zip(on, off, strict=True))
    target = 1.03 if device == "cpu" else 1.02
    report = {
        "benchmark": "grad_overhead",
        "device": device if device == "cpu" else torch.cuda.get_device_name(0),
        "step_ratio": round(ratio, 4),
        "step_ratio_of_medians": round(statistics.median(on) / statistics.median(off), 4),
        "step_target": f"<= {target}",
        "step_meets_target": ratio <= target,
        "baseline": "same training with gradients.enabled=false",
        "in_run_ratio": round(in_run, 4),
        "in_run_baseline": "unsampled steps of the same run (gradients.every=2)",
        "step_off_ms": [round(t * 1e3, 2) for t in off],
        "step_on_ms": [round(t * 1e3, 2) for t in on],
        "epoch_end_ms": round(statistics.median(epoch_end) * 1e3, 1) if epoch_end else None,
        "stats": stats
        | {"baseline": "per-parameter .norm().item() loop", "target": ">= 4", "meets_target": stats["speedup"] >= 4},
        "config": vars(args) | {"out": str(args.out)},
        "machine": {"python": platform.python_version(), "processor": platform.processor(), "torch": torch.__version__},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(
        f"gradient instrumentation: step time on / off = {ratio:.4f} (median of {len(on)} pairs; target <= {target}), "
        f"in one run sampled / unsampled steps = {in_run:.4f}; "
        f"epoch-end work {report['epoch_end_ms']} ms per epoch; stats function {stats['speedup']}x faster than "
        f"a per-parameter loop (target >= 4); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

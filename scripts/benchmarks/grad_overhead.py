"""Benchmark: what per-layer gradient instrumentation costs a training step, and how fast its statistics are.

1. Training step time. Ultralytics' own batching is kept: with batch 16 it accumulates 4 batches
   (its nominal 64 images) into one optimizer step, so a training step is 4 forward/backward passes
   and one optimizer step; the instrumentation lives in the optimizer step.
   - Headline, paired: a training with ``gradients.every=2`` samples every other optimizer step, so
     instrumented and plain optimizer steps alternate in one process. Each optimizer step is timed
     on its own (it does the same work whatever the batch held, unlike forward and backward), and
     the extra cost is median(instrumented) - median(plain). The step ratio is
     (training step + extra) / training step, the training step being the mean time of the batches
     of that run times the batches per optimizer step. Headline: the median over ``--repeats``
     trainings. Whole runs on a shared 2-core machine differ by several percent from one another,
     more than the effect measured; timing within one run cancels that.
   - Worst case: the same with an optimizer step after every batch (``nbs`` = batch).
   - Separate runs, for reference: the same training with ``gradients.enabled`` true (``every=1``)
     and false, alternating; mean batch time on / off, median over pairs (noisy, see above). These
     also carry the heatmap thread's CPU time (on 2 cores it competes with training), so a third
     run per repeat has ``gradients.heatmaps=false`` to tell the two costs apart.
   The epoch-end work (one transfer, health checks; the heatmaps draw on a thread of their own) is
   reported per epoch.
2. The statistics function. On a yolo11n with a gradient in every parameter: ``gradient_stats`` (fused
   ``torch._foreach_*`` ops, results moved to the host once) against the way per-parameter tools do it,
   a Python loop with ``.norm().item()`` (and max |g|, non-finite count) per parameter. Same statistics,
   same grouping by layer. The two alternate; headline: the median of the per-round ratios loop / fused.

    python scripts/benchmarks/grad_overhead.py [--repeats 5] [--images 400] [--imgsz 128] [--device auto]

Targets: step ratio <= 1.02 (gradients and the diagnosis on, every step; CPU and GPU); stats speed-up >= 4x.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

import torch  # noqa: E402

from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.devices import resolve_device  # noqa: E402
from pipeline.training.run import prepare_training, session_env  # noqa: E402
from scripts.benchmarks.common import benchmark_config, save_report  # noqa: E402

WARMUP_STEPS = 2


class StepTimer:
    """Times each training batch, each optimizer step (and whether it was instrumented), and the epoch end."""

    def __init__(self, device: torch.device):
        self.device = device
        self.save_dir: Path | None = None
        self.batches: list[float] = []
        self.optimizer_steps: list[tuple[float, bool]] = []  # (seconds, instrumented)
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
        self.batches.append(time.perf_counter() - self._start)

    def time_optimizer_step(self, trainer) -> None:
        step = trainer.optimizer_step  # the class's method; the instance attribute below shadows it

        def timed() -> None:
            self._sync()
            start = time.perf_counter()
            step()
            self._sync()
            sampled = trainer.gradients is not None and trainer.gradients.monitor.sampling
            self.optimizer_steps.append((time.perf_counter() - start, sampled))

        trainer.optimizer_step = timed

    def timed_epoch_end(self, callback):
        def timed(trainer) -> None:
            start = time.perf_counter()
            callback(trainer)
            self.epoch_end.append(time.perf_counter() - start)

        return timed

    def step_ratio(self) -> tuple[float, float]:
        """(training step + instrumentation) / training step, and the instrumentation's cost in ms, after warm-up."""
        steps = self.optimizer_steps[WARMUP_STEPS:]
        extra = statistics.median(t for t, s in steps if s) - statistics.median(t for t, s in steps if not s)
        batches_per_step = len(self.batches) / len(self.optimizer_steps)
        training_step = statistics.fmean(self.batches) * batches_per_step - extra / 2  # half the steps carry it
        return (training_step + extra) / training_step, extra * 1e3


def timed_training(
    data_yaml: Path,
    work: Path,
    args: argparse.Namespace,
    instrumented: bool,
    every: int = 1,
    step_each_batch: bool = False,
    heatmaps: bool = True,
) -> StepTimer:
    from pipeline.training.trainer import PipelineTrainer

    config = benchmark_config(
        data_yaml,
        work,
        {"epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "device": args.device, "warmup_epochs": 0},
        gradients={"enabled": instrumented, "every": every, "heatmaps": heatmaps},
        tracking={"enabled": False},
    )
    prepared = prepare_training(config)
    if step_each_batch:
        prepared.ultralytics_args["nbs"] = args.batch  # one optimizer step per batch: the worst case
    with session_env(prepared.session_file):
        trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
        timer = StepTimer(torch.device("cuda" if resolve_device(args.device) != "cpu" else "cpu"))
        trainer.add_callback("on_train_batch_start", timer.batch_start)
        trainer.add_callback("on_train_batch_end", timer.batch_end)
        timer.time_optimizer_step(trainer)
        timer.save_dir = Path(prepared.session.save_dir)
        epoch_end = trainer.callbacks["on_train_epoch_end"]
        i = epoch_end.index(PipelineTrainer._on_train_epoch_end)
        epoch_end[i] = timer.timed_epoch_end(epoch_end[i])
        trainer.train()
    return timer


def heatmap_cpu_ms(save_dir: Path, rounds: int = 5) -> dict[str, float]:
    """CPU time of drawing a training's heatmaps (on the painter's thread, it competes for cores, not for the GIL
    alone): the first picture of a training renders the layer names, later ones reuse them."""
    from pipeline.training.gradient_report import _layer_labels, draw_heatmaps
    from pipeline.training.gradients import EpochGradients

    lines = (save_dir / "gradients" / "history.jsonl").read_text().splitlines()
    history = [EpochGradients.from_json(json.loads(line)) for line in lines]
    out = save_dir / "gradients" / "timed.png"

    def cpu_ms() -> float:
        start = time.thread_time()
        draw_heatmaps(history, out)
        return (time.thread_time() - start) * 1e3

    _layer_labels.cache_clear()
    first = cpu_ms()
    return {"first_ms": round(first, 1), "later_ms": round(statistics.median(cpu_ms() for _ in range(rounds)), 1)}


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

    from pipeline.training.gradients import ParameterGroups, gradient_stats, group_name

    torch.manual_seed(0)
    target = torch.device("cuda:0" if resolve_device(device) != "cpu" else "cpu")
    model = DetectionModel("yolo11n.yaml", nc=6, verbose=False).to(target)
    for p in model.parameters():
        if p.requires_grad:  # ultralytics freezes the DFL layer
            p.grad = torch.randn_like(p)
    groups = ParameterGroups.of(model, "layer")
    grouping = {name: group_name(name, "layer") for name, _ in model.named_parameters()}
    grads = [p.grad for p in groups.params]

    def fused() -> dict[str, list[float]]:
        stats = gradient_stats(grads, groups)
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
    parser.add_argument("--repeats", type=int, default=5, help="paired trainings, and off/on pairs of trainings")
    parser.add_argument("--epochs", type=int, default=3)
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
        ratios, extras, epoch_end = [], [], []
        for repeat in range(args.repeats):
            timer = timed_training(data_yaml, work, args, instrumented=True, every=2)
            ratio, extra = timer.step_ratio()
            ratios.append(ratio)
            extras.append(extra)
            epoch_end.extend(timer.epoch_end)
            print(f"paired {repeat + 1}: training step on / off = {ratio:.4f} (+{extra:.1f} ms per step)", flush=True)
        ratio, extra = statistics.median(ratios), statistics.median(extras)
        heatmaps = heatmap_cpu_ms(timer.save_dir)
        print(
            f"heatmaps: {heatmaps['first_ms']} ms CPU for the first picture, {heatmaps['later_ms']} ms later",
            flush=True,
        )
        worst, worst_ms = timed_training(data_yaml, work, args, True, every=2, step_each_batch=True).step_ratio()
        print(f"worst case, a step after every batch: {worst:.4f} (+{worst_ms:.1f} ms per step)", flush=True)
        off, on, bare = [], [], []
        for repeat in range(args.repeats):
            for times, instrumented, heatmaps in ((off, False, True), (on, True, True), (bare, True, False)):
                timer = timed_training(data_yaml, work, args, instrumented, heatmaps=heatmaps)
                times.append(statistics.fmean(timer.batches[4 * WARMUP_STEPS :]))
            print(
                f"separate runs {repeat + 1}: mean batch off {off[-1] * 1e3:.1f} ms, on {on[-1] * 1e3:.1f} ms, "
                f"on without heatmaps {bare[-1] * 1e3:.1f} ms",
                flush=True,
            )

    separate = statistics.median(a / b for a, b in zip(on, off, strict=True))
    separate_bare = statistics.median(a / b for a, b in zip(bare, off, strict=True))
    target = 1.02
    report = {
        "benchmark": "grad_overhead",
        "device": device if device == "cpu" else torch.cuda.get_device_name(0),
        "step_ratio": round(ratio, 4),
        "step_ratio_per_run": [round(r, 4) for r in ratios],
        "step_extra_ms": round(extra, 2),
        "step_extra_ms_per_run": [round(e, 2) for e in extras],
        "step_target": f"<= {target}",
        "step_meets_target": ratio <= target,
        "baseline": "plain (unsampled) optimizer steps of the same training (gradients.every=2, nbs 64)",
        "worst_case_ratio": round(worst, 4),
        "worst_case_extra_ms": round(worst_ms, 2),
        "worst_case": "the same with an optimizer step after every batch (nbs = batch)",
        "separate_runs_ratio": round(separate, 4),
        "separate_runs": "gradients.enabled true (every=1) vs false, whole trainings, mean batch time",
        "separate_runs_without_heatmaps_ratio": round(separate_bare, 4),
        "separate_off_ms": [round(t * 1e3, 2) for t in off],
        "separate_on_ms": [round(t * 1e3, 2) for t in on],
        "separate_on_without_heatmaps_ms": [round(t * 1e3, 2) for t in bare],
        "epoch_end_ms": round(statistics.median(epoch_end) * 1e3, 1) if epoch_end else None,
        "heatmap_cpu_ms": heatmaps,
        "stats": stats
        | {"baseline": "per-parameter .norm().item() loop", "target": ">= 4", "meets_target": stats["speedup"] >= 4},
    }
    save_report(args, report)
    print(
        f"gradient instrumentation: training step on / off = {ratio:.4f} (+{extra:.1f} ms per optimizer step, "
        f"median of {len(ratios)} trainings; "
        f"target <= {target}); worst case (a step every batch) {worst:.4f}; separate runs {separate:.4f} "
        f"({separate_bare:.4f} without heatmaps); "
        f"epoch-end work {report['epoch_end_ms']} ms per epoch; stats function {stats['speedup']}x faster than "
        f"a per-parameter loop (target >= 4); wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

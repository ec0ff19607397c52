"""Benchmark: a whole training by `yolo-pipeline train` against stock ultralytics' `YOLO(...).train(...)`.

Both sides train the same YOLO11n from its architecture on the same synthetic defect images, with the
same size, batch, seed, epochs and augmentation, on the CPU (or ``--device``), each in a fresh process
timed from its start to its exit:
- **ours**: `yolo-pipeline train --data DIR` with the default config (gradients recorded every step, the
  doctor, plots, tracking to a real `mlflow server` on 127.0.0.1 whose upload of every record, artifact
  and the model is waited for), everything it adds included;
- **stock**: `YOLO("yolo11n.yaml").train(...)` with ultralytics' defaults, its own integrations off (it
  would otherwise log to a local MLflow store of its own).
The two alternate (stock, ours, ours, stock, ...) so a drift in the machine's speed weighs on both. Per
side: whole wall time, per-epoch time and images/s (from each training's results.csv, ultralytics' own
clock), the final mAP50 (the learning must not change). Headline: the median of the per-pair ratios
ours / stock, with their spread.

``--beside``: a stock training runs in a loop beside the measured pairs (a second training on the
machine), which both sides then share the CPU with.

``--loaders``: instead of stock, our training with its data loaded in the training process (PyTorch on
every free core, the default) against a loader process beside the compute (``workers=1``, a core less
for PyTorch), paired the same way, at each ``--sizes``.

    python scripts/benchmarks/train_throughput.py [--sizes 320] [--epochs 2] [--pairs 3] [--images 240]
        [--beside] [--loaders] [--device cpu] [--out benchmark-results/train_throughput.json]

Target (2-core CPU, 256-320 px, 2 and 10 epochs): ours / stock <= 0.70; mAP50 within noise of stock's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

from pipeline.data.synth import synthesize  # noqa: E402
from scripts.benchmarks.common import save_report  # noqa: E402
from tests.helpers.mlflow_server import MlflowServer  # noqa: E402

TARGET = 0.70
CLI = Path(sys.executable).with_name("yolo-pipeline")

# Stock ultralytics in a fresh process: its settings in a temporary folder, no downloads, integrations off.
STOCK = """
import json, sys
from ultralytics import YOLO
from ultralytics.utils import SETTINGS
SETTINGS.update({k: False for k in ("sync", "mlflow", "tensorboard", "wandb", "clearml", "comet", "dvc", "raytune")})
YOLO("yolo11n.yaml").train(**json.loads(sys.argv[1]))
"""

# Our trainer in-process with a loader process beside the compute: ultralytics forces workers=0 on a CPU in the
# trainer's constructor, so the loader comparison sets it back after it (and takes a core from PyTorch).
OURS_WITH_LOADER = """
import sys
from pipeline.config import load_config
from pipeline.cpu import cpu_threads, use_torch_threads
from pipeline.training.run import prepare_training, session_env
from pipeline.training.trainer import PipelineTrainer
prepared = prepare_training(load_config(sys.argv[1], sys.argv[2:]))
with session_env(prepared.session_file):
    trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
    trainer.args.workers = 1
    use_torch_threads(max(1, cpu_threads() - 1))
    trainer.train()
"""


def hermetic_env(home: Path) -> dict[str, str]:
    """The environment of every training here: ultralytics' settings and downloads kept in ``home``, offline."""
    return {
        **os.environ,
        "YOLO_CONFIG_DIR": str(home / "ultralytics"),
        "YOLO_OFFLINE": "true",
        "YOLO_AUTOINSTALL": "false",
        "YOLO_PIPELINE_CACHE": str(home / "cache"),
        "MPLBACKEND": "Agg",
    }


def shared_settings(args: argparse.Namespace, imgsz: int) -> dict[str, Any]:
    """What both sides are given alike (the rest: each side's defaults, which for the augmentation are the same
    once mosaic's closing epochs are: ultralytics closes it for its last 10, our config for its last 2)."""
    return {
        "epochs": args.epochs,
        "imgsz": imgsz,
        "batch": args.batch,
        "seed": 0,
        "device": args.device,
        "close_mosaic": 10,
    }


def results_of(save_dir: Path) -> dict[str, Any]:
    """Per-epoch seconds (ultralytics' cumulative ``time`` column, differenced), the last mAP50 and the last
    epoch's train losses (box + cls + dfl: the learning, compared where a short training's mAP50 is still 0)."""
    with open(save_dir / "results.csv", newline="") as handle:
        rows = [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(handle)]
    times = [float(r["time"]) for r in rows]
    return {
        "epoch_s": [b - a for a, b in zip([0.0, *times], times, strict=False)],
        "mAP50": float(rows[-1]["metrics/mAP50(B)"]),
        "train_loss": sum(float(rows[-1][f"train/{k}_loss"]) for k in ("box", "cls", "dfl")),
    }


def run_stock(data_yaml: Path, work: Path, settings: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    name = f"stock-{time.monotonic_ns()}"
    given = {**settings, "data": str(data_yaml), "project": str(work), "name": name, "verbose": False}
    start = time.perf_counter()
    run_quietly([sys.executable, "-c", STOCK, json.dumps(given)], env, work)
    return {"wall_s": time.perf_counter() - start, **results_of(work / name)}


def run_ours(
    data_yaml: Path, work: Path, settings: dict[str, Any], env: dict[str, str], uri: str, loader: bool = False
) -> dict[str, Any]:
    name = f"ours-{time.monotonic_ns()}"
    overrides = [
        f"train.epochs={settings['epochs']}",
        f"train.imgsz={settings['imgsz']}",
        f"train.batch={settings['batch']}",
        f"train.seed={settings['seed']}",
        f"train.device={settings['device']}",
        f"augment.close_mosaic={settings['close_mosaic']}",
        f"train.project={work}",
        f"train.name={name}",
        f"tracking.uri={uri}",
        "tracking.experiment=train-throughput",
    ]
    if loader:
        config = work / "data-only.yaml"
        config.write_text(f"data:\n  path: {data_yaml}\n", encoding="utf-8")
        command = [sys.executable, "-c", OURS_WITH_LOADER, str(config), *overrides]
    else:
        command = [str(CLI), "train", "--data", str(data_yaml), *overrides]
    start = time.perf_counter()
    run_quietly(command, env, work)
    return {"wall_s": time.perf_counter() - start, **results_of(work / name)}


QUIET: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def run_quietly(command: list[str], env: dict[str, str], cwd: Path) -> None:
    """``command`` to its end, its output kept back unless it fails."""
    done = subprocess.run(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode:
        raise RuntimeError(f"{command[:2]} exited {done.returncode}:\n{done.stdout[-3000:]}")


def start_competitor(data_yaml: Path, work: Path, imgsz: int, env: dict[str, str]) -> subprocess.Popen:
    """A stock training of many epochs in its own process group, beside the measured ones."""
    given = {"data": str(data_yaml), "epochs": 1000, "imgsz": imgsz, "batch": 16, "device": "cpu"}
    given |= {"project": str(work), "name": "competitor", "verbose": False, "plots": False}
    return subprocess.Popen(
        [sys.executable, "-c", STOCK, json.dumps(given)], env=env, cwd=work, start_new_session=True, **QUIET
    )


def summary(runs: list[dict[str, Any]], images: int, epochs: int) -> dict[str, Any]:
    epoch_s = [s for r in runs for s in r["epoch_s"]]
    return {
        "wall_s": [round(r["wall_s"], 2) for r in runs],
        "wall_s_median": round(statistics.median(r["wall_s"] for r in runs), 2),
        "epoch_s_median": round(statistics.median(epoch_s), 2),
        "images_per_s": round(images / statistics.median(epoch_s), 2),
        "mAP50": [round(r["mAP50"], 4) for r in runs],
        "train_loss": [round(r["train_loss"], 3) for r in runs],
    }


def measure(args: argparse.Namespace, imgsz: int, root: Path, env: dict[str, str], uri: str) -> dict[str, Any]:
    data_yaml = synthesize(root / f"data-{imgsz}", images=args.images, seed=0, size=imgsz).data_yaml
    train_images = len(list((data_yaml.parent / "images" / "train").iterdir()))
    settings = shared_settings(args, imgsz)
    baseline, candidate = ("loader", "in-process") if args.loaders else ("stock", "ours")
    sides = {
        "stock": lambda: run_stock(data_yaml, root, settings, env),
        "ours": lambda: run_ours(data_yaml, root, settings, env, uri),
        "in-process": lambda: run_ours(data_yaml, root, settings, env, uri),
        "loader": lambda: run_ours(data_yaml, root, settings, env, uri, loader=True),
    }
    runs: dict[str, list[dict[str, Any]]] = {baseline: [], candidate: []}
    competitor = start_competitor(data_yaml, root, imgsz, env) if args.beside else None
    try:
        if competitor is not None:
            time.sleep(20)  # past its start-up, into its epochs
        for pair in range(args.pairs):
            order = (baseline, candidate) if pair % 2 == 0 else (candidate, baseline)
            for side in order:
                runs[side].append(sides[side]())
                print(f"{imgsz} px pair {pair + 1}: {side} {runs[side][-1]['wall_s']:.1f} s", flush=True)
    finally:
        if competitor is not None:
            os.killpg(competitor.pid, signal.SIGKILL)
            competitor.wait()
    ratios = [c["wall_s"] / b["wall_s"] for b, c in zip(runs[baseline], runs[candidate], strict=True)]
    return {
        "imgsz": imgsz,
        "train_images": train_images,
        baseline: summary(runs[baseline], train_images, args.epochs),
        candidate: summary(runs[candidate], train_images, args.epochs),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="320", help="comma-separated image sizes (multiples of 32)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--images", type=int, default=240, help="synthetic images drawn (80%% train)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--beside", action="store_true", help="a stock training runs beside the measured pairs")
    parser.add_argument("--loaders", action="store_true", help="in-process data against a loader process")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results/train_throughput.json"))
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        root = Path(tmp)
        env = hermetic_env(root)
        server = MlflowServer(root / "mlflow")
        (root / "mlflow").mkdir()
        server.start()
        try:
            for imgsz in (int(s) for s in args.sizes.split(",")):
                rows.append(measure(args, imgsz, root, env, server.uri))
        finally:
            server.stop()
    baseline, candidate = ("loader", "in-process") if args.loaders else ("stock", "ours")
    print(
        f"\n{'size':>5} {candidate + ' s/epoch':>18} {baseline + ' s/epoch':>16} {'ratio':>7} {'range':>13}  mAP50, loss"
    )
    for row in rows:
        ours, theirs = row[candidate], row[baseline]
        print(
            f"{row['imgsz']:>5} {ours['epoch_s_median']:>18.2f} {theirs['epoch_s_median']:>16.2f} "
            f"{row['ratio_median']:>7.3f} {row['ratio_range'][0]:>6.3f}-{row['ratio_range'][1]:<6.3f} "
            f"{ours['mAP50']} / {theirs['mAP50']}, {ours['train_loss']} / {theirs['train_loss']}"
        )
    if not args.loaders:
        met = all(row["ratio_median"] <= TARGET for row in rows)
        print(f"whole training, ours / stock (median of pairs): target <= {TARGET}: {'met' if met else 'NOT met'}")
    save_report(args, {"rows": rows, "target": TARGET})
    return 0


if __name__ == "__main__":
    sys.exit(main())

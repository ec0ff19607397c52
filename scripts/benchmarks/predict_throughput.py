"""Benchmark: images per second of `predict` in each runtime and as `auto` picks, against ultralytics' streaming predict.

Baseline: ``YOLO(model).predict(source=folder, stream=True, batch=B, imgsz=S)`` iterated to the end, the
way ultralytics documents predicting over a folder, with PyTorch on one thread (what ultralytics' import
leaves it: ``OMP_NUM_THREADS=1``) and on a thread per core; the faster of the two is the baseline. Ours: ``pipeline.inference.predict(folder, model,
out, batch=B, imgsz=S, runtime=R)`` for R in each installed backend (torch, onnx, openvino) and auto, which also writes predictions.jsonl,
summary.csv and coco_results.json; and the same call on the model's screen bundles (`export`: ONNX and OpenVINO, FP32
and INT8, quantized on the synthetic frames' train split and gated on their val split), as a line PC runs them. Every run loads the model inside the timed call (a command's whole
cost). Within one condition (source, size, load) the four alternate, in a rotating order, so drift in
the machine's speed hits all of them; each repeat gives paired ratios.

Conditions: each source (``--folder``, e.g. NEU-DET's val images, and synthetic 640-px frames) at the
model's own size and at 640 px, on a quiet machine and with a competing load: a real CPU training
(`yolo-pipeline train`, 128 px) running beside it in its own process group. On the quiet machine
``auto`` races the two runtimes on the first, untimed run per size and caches the answer, like a
user's first run; beside the training the network gets the cores the training leaves free (one
thread here), another key of the cache: the first round races the two on its first 6 batches and
caches that answer, the later rounds use it.

    python scripts/benchmarks/predict_throughput.py [--folder ../shared/datasets/neu-det/images/val]
        [--model best.pt] [--batch 16] [--limit 120] [--repeats 3] [--loads quiet,training]

Without ``--model``: a YOLO11n built from its architecture, saved as trained at 320 px (the speed of
a network does not depend on its weights). Targets: auto / the faster runtime >= 0.95 and
auto / ultralytics >= 1.5 in every condition; the faster INT8 bundle >= 1.8x our FP32 ONNX Runtime path (the
``onnx`` runtime) in every condition, and >= 3x ultralytics on the quiet machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

from pipeline.cpu import cpu_threads  # noqa: E402
from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.files import CACHE_ENV  # noqa: E402
from pipeline.inference import predict  # noqa: E402
from pipeline.inference.backends import BACKENDS, racers  # noqa: E402
from scripts.benchmarks.common import quiet_ultralytics, save_report  # noqa: E402

TARGET_AUTO_OF_BEST = 0.95
TARGET_AUTO_OF_ULTRALYTICS = 1.5
RUNTIMES = tuple(name for name, backend in BACKENDS.items() if backend.available())  # torch, onnx, openvino
RACERS = racers(available=True)  # what auto chooses among: auto is measured against the faster of these
OURS = (*RUNTIMES, "auto")
THEIRS = ("ultralytics-1", "ultralytics-all")  # PyTorch on one thread, and on a thread per core
BUNDLES = ("onnx", "onnx-int8", "openvino", "openvino-int8")  # export's formats, run as `bundle:<format>`
TARGET_INT8_OF_ONNX = 1.8
TARGET_INT8_OF_ULTRALYTICS = 3.0
OWN_SIZE = 320  # the untrained default model's recorded training size


def untrained_model(path: Path, classes: int = 6, imgsz: int = OWN_SIZE) -> Path:
    """A YOLO11n checkpoint from the architecture, recorded as trained at ``imgsz``."""
    import torch
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolo11n.yaml", nc=classes, verbose=False)
    model.names = {i: f"defect{i}" for i in range(classes)}
    torch.save({"model": model.half(), "train_args": {"imgsz": imgsz}, "epoch": -1}, path)
    return path


def limited(folder: Path, limit: int, into: Path) -> Path:
    """The first ``limit`` images of ``folder`` (sorted), linked into a folder of their own."""
    into.mkdir(parents=True)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".bmp"})[:limit]
    for image in images:
        (into / image.name).symlink_to(image.resolve())
    return into


def run_ours(folder: Path, model: Path, runtime: str, size: int, args: argparse.Namespace, out: Path) -> tuple:
    """``runtime``: a backend's name or auto, on the checkpoint; ``bundle:<format>``: that bundle, as exported."""
    shutil.rmtree(out, ignore_errors=True)
    source, runtime = (
        (args.bundles[runtime.removeprefix("bundle:")], "auto") if runtime.startswith("bundle:") else (model, runtime)
    )
    start = time.perf_counter()
    result = predict(
        folder, str(source), out, batch=args.batch, conf=args.conf, imgsz=size, runtime=runtime, progress=False
    )
    return result.images, time.perf_counter() - start, result.runtime


def exported_bundles(model: Path, data: Path, work: Path) -> dict[str, Path]:
    """The model's bundle in each of `BUNDLES`, INT8 quantized on ``data``'s train split and gated on its val."""
    from pipeline.export.bundles import export_bundle

    found = {}
    for fmt in BUNDLES:
        start = time.perf_counter()
        found[fmt] = export_bundle(str(model), work / f"bundle-{fmt}", fmt, data=data).out
        print(f"exported {fmt} in {time.perf_counter() - start:.1f} s", flush=True)
    return found


def run_theirs(folder: Path, model: Path, size: int, args: argparse.Namespace, threads: int) -> tuple:
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)  # this process's PyTorch: ours sets it for its own runs
    start = time.perf_counter()
    stream = YOLO(str(model)).predict(
        source=str(folder), stream=True, batch=args.batch, conf=args.conf, imgsz=size, device="cpu", verbose=False
    )
    images = sum(1 for _ in stream)
    return images, time.perf_counter() - start, "ultralytics"


class CompetingTraining:
    """A real CPU training in its own process group, started and stopped by the group's id."""

    def __init__(self, work: Path) -> None:
        data = synthesize(work / "load-data", images=400, seed=3, size=128).data_yaml
        config = work / "load.yaml"
        config.write_text(
            f"data: {{path: {data}}}\nmodel: {{weights: yolo11n.yaml}}\n"
            f"train: {{epochs: 1000, imgsz: 128, batch: 16, device: cpu, project: {work / 'load-runs'}}}\n"
            "tracking: {enabled: false}\n",
            encoding="utf-8",
        )
        self.command = [sys.executable, "-m", "pipeline.cli", "train", str(config)]
        self.cwd = work
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> CompetingTraining:
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(20)  # past its data checks and start-up: training steps from here on
        if self.process.poll() is not None:
            raise SystemExit(f"the competing training exited early (code {self.process.returncode})")
        return self

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def measure(folder: Path, model: Path, size: int, args: argparse.Namespace, work: Path) -> dict:
    """Images/s of each side over ``args.repeats`` rotating rounds, and the paired ratios."""
    sides = [*OURS, *(f"bundle:{fmt}" for fmt in args.bundles), *THEIRS]
    rates: dict[str, list[float]] = {side: [] for side in sides}
    picked: list[str] = []
    counts = set()
    for repeat in range(args.repeats):
        order = sides[repeat % len(sides) :] + sides[: repeat % len(sides)]
        for side in order:
            if side in THEIRS:
                threads = 1 if side == "ultralytics-1" else cpu_threads()
                images, seconds, ran = run_theirs(folder, model, size, args, threads)
            else:
                images, seconds, ran = run_ours(folder, model, side, size, args, work / "out")
                if side == "auto":
                    picked.append(ran)
            counts.add(images)
            rates[side].append(images / seconds)
            print(f"  round {repeat + 1} {side:21}: {images} images in {seconds:6.2f} s = {images / seconds:6.1f}/s")
    if len(counts) != 1:
        raise SystemExit(f"the sides saw different image counts: {sorted(counts)}")
    median = {side: statistics.median(v) for side, v in rates.items()}
    best = max(median[name] for name in RACERS)
    theirs = max(THEIRS, key=median.get)  # ultralytics' faster thread count here
    median["ultralytics"], rates["ultralytics"] = median[theirs], rates[theirs]
    # Per round too, for the spread: auto against the faster runtime of the same round, and against ultralytics.
    auto_of_best = [rates["auto"][i] / max(rates[name][i] for name in RACERS) for i in range(args.repeats)]
    auto_of_theirs = [rates["auto"][i] / rates["ultralytics"][i] for i in range(args.repeats)]
    int8 = max((f"bundle:{fmt}" for fmt in args.bundles if fmt.endswith("int8")), key=median.get, default=None)
    bundles = {}
    if int8:  # the faster INT8 bundle, against our FP32 ONNX Runtime path and ultralytics, per round too
        of_onnx = [rates[int8][i] / rates["onnx"][i] for i in range(args.repeats)]
        of_theirs = [rates[int8][i] / rates["ultralytics"][i] for i in range(args.repeats)]
        bundles = {
            "int8_bundle": int8,
            "int8_of_onnx": round(median[int8] / median["onnx"], 3),
            "int8_of_onnx_per_round": [round(min(of_onnx), 3), round(max(of_onnx), 3)],
            "int8_of_ultralytics": round(median[int8] / median["ultralytics"], 3),
            "int8_of_ultralytics_per_round": [round(min(of_theirs), 3), round(max(of_theirs), 3)],
        }
    return {
        "images": counts.pop(),
        "median_images_per_s": {side: round(v, 2) for side, v in median.items()},
        "per_round_images_per_s": {side: [round(x, 2) for x in v] for side, v in rates.items()},
        "auto_picked": picked,
        "ultralytics_baseline": theirs,
        "auto_of_best": round(median["auto"] / best, 3),  # medians: auto / the faster racer's
        "auto_of_best_per_round": [round(min(auto_of_best), 3), round(max(auto_of_best), 3)],
        "auto_of_ultralytics": round(median["auto"] / median["ultralytics"], 3),
        "auto_of_ultralytics_per_round": [round(min(auto_of_theirs), 3), round(max(auto_of_theirs), 3)],
        **bundles,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, help="a folder of images, e.g. ../shared/datasets/neu-det/images/val")
    parser.add_argument("--model", type=Path, help="a .pt checkpoint (default: YOLO11n from its architecture)")
    parser.add_argument("--frames", type=int, default=120, help="synthetic 640-px frames, the second source")
    parser.add_argument("--limit", type=int, default=120, help="images of --folder used")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--loads", default="quiet,training", help="quiet, training, or both")
    parser.add_argument("--no-bundles", action="store_true", help="leave out the exported bundles")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "predict_throughput.json")
    args = parser.parse_args()
    quiet_ultralytics()
    from pipeline.checkpoints import trained_imgsz

    with tempfile.TemporaryDirectory(prefix="predict-throughput-") as tmp:
        work = Path(tmp)
        os.environ.setdefault(CACHE_ENV, str(work / "cache"))
        sources = {}
        if args.folder:
            sources[args.folder.name if args.folder.name != "val" else "neu-det val"] = limited(
                args.folder, args.limit, work / "folder"
            )
        synthesize(work / "frames", images=args.frames, seed=0, size=640, val_fraction=0.05)
        sources["640-px frames"] = work / "frames" / "images" / "train"
        model = args.model or untrained_model(
            work / "yolo11n-untrained.pt", classes=3
        )  # the synthetic frames' classes: the INT8 gate screens them
        from ultralytics import YOLO

        own = trained_imgsz(YOLO(str(model)))
        args.bundles = {} if args.no_bundles else exported_bundles(model, work / "frames" / "data.yaml", work)
        sizes = sorted({own, 640})
        # Untimed first runs: the one-time ONNX export, and auto's one-time measurement, per size.
        first = {}
        for size in sizes:
            start = time.perf_counter()
            run_ours(next(iter(sources.values())), model, "auto", size, args, work / "warm-up")
            first[size] = round(time.perf_counter() - start, 2)
        conditions = []
        for load in args.loads.split(","):
            with CompetingTraining(work) if load == "training" else contextlib.nullcontext():
                for name, folder in sources.items():
                    for size in sizes:
                        print(f"{name}, {size} px, {load}:", flush=True)
                        row = {"source": name, "size": size, "load": load}
                        conditions.append(row | measure(folder, model, size, args, work))

    worst_best = min(c["auto_of_best"] for c in conditions)
    worst_theirs = min(c["auto_of_ultralytics"] for c in conditions)
    int8_ok = all(
        c["int8_of_onnx"] >= TARGET_INT8_OF_ONNX
        and (c["load"] != "quiet" or c["int8_of_ultralytics"] >= TARGET_INT8_OF_ULTRALYTICS)
        for c in conditions
        if "int8_of_onnx" in c
    )
    report = {
        "benchmark": "predict_throughput",
        "baseline": "YOLO(model).predict(source=folder, stream=True, batch=B, imgsz=S), iterated to the end",
        "targets": {
            "auto_of_best": f">= {TARGET_AUTO_OF_BEST}",
            "auto_of_ultralytics": f">= {TARGET_AUTO_OF_ULTRALYTICS}",
            "int8_of_onnx": f">= {TARGET_INT8_OF_ONNX}",
            "int8_of_ultralytics (quiet)": f">= {TARGET_INT8_OF_ULTRALYTICS}",
        },
        "meets_targets": worst_best >= TARGET_AUTO_OF_BEST and worst_theirs >= TARGET_AUTO_OF_ULTRALYTICS,
        "meets_int8_targets": int8_ok,
        "conditions": conditions,
        "model": str(args.model or f"YOLO11n from yolo11n.yaml, 3 classes, recorded as trained at {OWN_SIZE} px"),
        "first_run_s": first,
        "first_run_note": "the first run over new weights exports them to ONNX and races the runtimes on its first batches (cached)",
    }
    save_report(args, report)
    print(
        f"\nsource          size  load     {''.join(f'{name:>9}' for name in RUNTIMES)}   auto (picked)   "
        "ultra-1 ultra-all  auto/best  auto/ultralytics"
    )
    for c in conditions:
        rate = c["median_images_per_s"]
        picked = ",".join(sorted(set(c["auto_picked"])))
        print(
            f"{c['source']:15} {c['size']:4}  {c['load']:8} {''.join(f'{rate[name]:9.1f}' for name in RUNTIMES)} "
            f"{rate['auto']:6.1f} ({picked:10}) {rate['ultralytics-1']:7.1f} {rate['ultralytics-all']:9.1f}  "
            f"{c['auto_of_best']:9.3f}  {c['auto_of_ultralytics']:6.3f}"
        )
    for c in conditions:
        if "int8_bundle" in c:
            rate = c["median_images_per_s"]
            line = "  ".join(f"{fmt} {rate[f'bundle:{fmt}']:.1f}" for fmt in args.bundles)
            print(
                f"{c['source']:15} {c['size']:4}  {c['load']:8} bundles: {line}; {c['int8_bundle']} / onnx "
                f"{c['int8_of_onnx']:.2f}x, / ultralytics {c['int8_of_ultralytics']:.2f}x"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measurement: what a line PC installs to screen with a bundle, against the whole tool, and that it screens.

Two fresh virtual environments, each by a real ``pip install`` of this checkout (from the package index, so this
needs it): the line PC's, ``pip install .`` (the project's own dependencies: ONNX Runtime, OpenCV, numpy, ...),
and the whole tool's, ``pip install '.[train]'`` (torch, ultralytics, MLflow, ...), the baseline. Reported: the
size of each environment on disk and its install time; then the line PC's environment screens a folder with an
FP32 ONNX bundle exported here (a YOLO11n from its architecture, 320 px), and its verdicts are compared with this
environment's ``predict`` of the checkpoint.

    python scripts/benchmarks/line_install.py [--skip-train-env]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from scripts.benchmarks.common import quiet_ultralytics, save_report  # noqa: E402
from scripts.benchmarks.predict_throughput import untrained_model  # noqa: E402


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def verdicts_and_counts(table: Path) -> list[tuple[str, str, str]]:
    """Per image of a summary.csv: its path, detection count and verdict (scores may differ in the last digits)."""
    with open(table, encoding="utf-8", newline="") as f:
        return [(row["path"], row["detections"], row["verdict"]) for row in csv.DictReader(f)]


def source_copy(into: Path) -> Path:
    """The checkout's files a wheel is built from, copied: pip builds in the source folder, and leaves build/ there."""
    ignored = shutil.ignore_patterns(
        ".*", "build", "*.egg-info", "__pycache__", "benchmark-results", "datasets", "runs"
    )
    return Path(shutil.copytree(ROOT, into, ignore=ignored))


def fresh_install(folder: Path, source: Path, target: str) -> tuple[Path, float, int]:
    """A new venv in ``folder`` with ``pip install target`` from ``source`` (not editable); (its python, seconds,
    bytes)."""
    subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    python = folder / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    start = time.perf_counter()
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", target], check=True, env=env, cwd=source)
    return python, time.perf_counter() - start, folder_size(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-train-env", action="store_true", help="measure the line PC's environment only")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "line_install.json")
    args = parser.parse_args()
    quiet_ultralytics()
    from pipeline.data.synth import synthesize
    from pipeline.export.bundles import export_bundle
    from pipeline.inference import predict

    with tempfile.TemporaryDirectory(prefix="line-install-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("YOLO_PIPELINE_CACHE", str(work / "cache"))
        model = untrained_model(work / "yolo11n.pt")
        bundle = export_bundle(str(model), work / "bundle", "onnx").out
        frames = synthesize(work / "frames", images=40, seed=0, size=640).data_yaml.parent / "images" / "train"
        # The bundle carries one threshold for every class (uncalibrated, 0.25): the checkpoint's verdicts at the same.
        theirs = predict(
            frames, str(model), work / "checkpoint", runtime="torch", conf=0.01, thresholds={"default": 0.25},
            progress=False,
        )  # fmt: skip

        source = source_copy(work / "source")
        python, seconds, size = fresh_install(work / "line-venv", source, ".")
        listed = subprocess.run(
            [str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True
        )
        packages = sorted(p["name"] for p in json.loads(listed.stdout))
        stack = [name for name in ("torch", "ultralytics", "mlflow") if name in packages]
        screened = subprocess.run(
            [str(python), "-m", "pipeline.cli", "predict", str(frames), "--model", str(bundle), "--conf", "0.01",
             "--out", str(work / "line"), "--no-progress"],
            capture_output=True, text=True, cwd=work,
        )  # fmt: skip
        verdicts = [verdicts_and_counts(work / name / "summary.csv") for name in ("line", "checkpoint")]
        report = {
            "benchmark": "line_install",
            "baseline": "pip install '.[train]': the whole tool's environment",
            "line_pc": {
                "install": "pip install .",
                "seconds": round(seconds, 1),
                "megabytes": round(size / 2**20),
                "packages": packages,
                "training_stack_installed": stack,
                "screened": screened.returncode == 0,
                "same_verdicts_as_checkpoint": verdicts[0] == verdicts[1],
                "images": theirs.total_images,
            },
        }
        if not args.skip_train_env:
            _, train_seconds, train_size = fresh_install(work / "train-venv", source, ".[train]")
            report["whole_tool"] = {"seconds": round(train_seconds, 1), "megabytes": round(train_size / 2**20)}
            report["line_of_whole"] = round(size / train_size, 3)
    save_report(args, report)
    print(json.dumps(report, indent=1))
    return 0 if report["line_pc"]["screened"] and not report["line_pc"]["training_stack_installed"] else 1


if __name__ == "__main__":
    sys.exit(main())

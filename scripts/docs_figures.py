"""Regenerate the manual's pictures (docs/img/) from the project's own outputs, with one command:

    .venv/bin/python scripts/docs_figures.py [--out docs/img] [--work DIR]

It draws a small synthetic defect set (`yolo-pipeline data synth`, a fifth of it defect-free), trains two tiny
detectors on it (YOLO11n from its architecture, 128 px, 10 epochs, CPU; tracked to a SQLite MLflow store in a
temporary folder), and from what they leave:

- gradient-heatmaps.png   the gradient doctor's heatmaps of the first training (gradients/heatmaps.png)
- compare-report.png      `compare --out`'s report.html, screenshot by headless Chromium
- pr-curves.png           `calibrate`'s pr_curves.png ...
- operating-curve.png     ... and operating_curve.png, of the better model's screen
- review-crops.png        a sheet of `evaluate --review`'s crops (missed objects, false alarms) at that screen
- mlflow-run.png          the first training's run page in the MLflow UI (`mlflow server` on 127.0.0.1, its own
                          process group, stopped by its id), screenshot by headless Chromium

A picture it cannot make on this machine (no Chromium, a step that failed) is named in one line and skipped; the
exit status is 1 when a step failed, 0 when every picture was made or skipped for a missing tool. Each picture is
kept under about 300 KB (downscaled, then reduced to 256 colours where needed). About six minutes on 2 CPU cores
(5m 37s on 2026-12-06).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the tests package

from tests.helpers.mlflow_server import MlflowServer  # noqa: E402

CLI = [sys.executable, "-m", "pipeline.cli"]
EXPERIMENT = "docs"
MAX_BYTES = 300_000
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# The two tiny trainings: (run name, overrides). They differ in the learning rate only, so `compare` has a param
# to show.
# 10 epochs: fewer leave YOLO11n from scratch at mAP 0 here, and every chart empty (the demo's 20 reach 0.72).
EPOCHS = 10
TRAININGS = [("demo-lr-0.002", ["train.lr0=0.002"]), ("demo-lr-0.0005", ["train.lr0=0.0005"])]
TINY_CONFIG = """\
# The manual's pictures: a tiny demo training (scripts/docs_figures.py).
data:
  path: {data}
model:
  weights: yolo11n.yaml
train:
  epochs: {epochs}
  imgsz: 128
  batch: 16
  device: cpu
  workers: 0
  optimizer: AdamW
  warmup_epochs: 0
  plots: false
  project: {project}
augment:
  mosaic: 0.0
  close_mosaic: 0
tracking:
  uri: {uri}
  experiment: {experiment}
  system_metrics: false
"""


class Skipped(Exception):
    """A picture this machine cannot make (a tool is missing): named and skipped, not a failure."""


def log(message: str) -> None:
    print(message, flush=True)


def run(command: list[str], work: Path, env: dict[str, str], timeout: float = 900) -> str:
    """One command of the pipeline (or another tool) in ``work``; its output, or an error with its last lines."""
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(command[:5])} ... exited {done.returncode}: " + " | ".join(tail))
    return done.stdout


def hermetic_env(work: Path) -> dict[str, str]:
    """The tests' environment: ultralytics' settings, caches and the home folder in ``work``; no downloads; no
    tracking URI of the user's."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_TRACKING")}
    env.update(
        YOLO_CONFIG_DIR=str(work / "ultralytics"),
        YOLO_OFFLINE="true",
        YOLO_AUTOINSTALL="false",
        YOLO_PIPELINE_WEIGHTS_DIR=str(work / "weights"),
        YOLO_PIPELINE_CACHE=str(work / "cache"),
        MPLBACKEND="Agg",
        HOME=str(work / "home"),
        PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # MLflow's job runner serves nothing recorded here
    )
    (work / "home").mkdir(exist_ok=True)
    return env


def save_small(source: Path, target: Path, max_width: int = 1200) -> Path:
    """``source`` as a PNG of at most ``max_width`` px and about MAX_BYTES: downscaled, then 256 colours, then
    smaller still if it must be."""
    from PIL import Image

    image = Image.open(source).convert("RGB")
    if image.width > max_width:
        image = image.resize((max_width, round(image.height * max_width / image.width)), Image.Resampling.LANCZOS)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target, optimize=True)
    while target.stat().st_size > MAX_BYTES:
        image.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(target, optimize=True)
        if target.stat().st_size <= MAX_BYTES or image.width < 400:
            break
        image = image.resize((round(image.width * 0.8), round(image.height * 0.8)), Image.Resampling.LANCZOS)
    return target


def chromium() -> str:
    found = next(filter(None, map(shutil.which, CHROMIUM_NAMES)), None)
    if found is None:
        raise Skipped("no Chromium on PATH (chromium or chromium-browser; apt-get install chromium adds it)")
    return found


def screenshot(url: str, target: Path, work: Path, env: dict[str, str], size: str, wait_ms: int = 0) -> Path:
    """A headless Chromium screenshot of ``url`` (``wait_ms``: virtual time for a page that draws itself with
    JavaScript), with its profile and home in ``work``."""
    command = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # its sandbox refuses to start as root (containers); the pages are our own
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={work / 'chromium-profile'}",
        f"--window-size={size}",
        f"--screenshot={target}",
    ]
    if wait_ms:
        command.append(f"--virtual-time-budget={wait_ms}")
    run([*command, url], work, env, timeout=180)
    if not target.exists():
        raise RuntimeError(f"Chromium wrote no screenshot of {url}")
    return target


def mlflow_run_page(work: Path, experiment_id: str, run_id: str, target: Path, env: dict[str, str]) -> Path:
    """`mlflow server` on 127.0.0.1 over the trainings' store (``work/mlflow.db``; the tests' `MlflowServer`: its
    own process group, /health waited for, the group stopped by its id, whatever happened); the run page
    screenshot."""
    chromium()  # no server to start where no browser can look at it
    server = MlflowServer(work)
    server.start(timeout_s=120)
    try:
        page = f"{server.uri}/#/experiments/{experiment_id}/runs/{run_id}"
        cut_side_panel(screenshot(page, target, work, env, "1500,1300", wait_ms=20000))
    finally:
        server.stop()
    return target


def cut_side_panel(path: Path) -> Path:
    """The run page without MLflow's assistant side panel (MLflow 3.17 opens it on the right): cut at the gutter
    left of it: the first strip of flat page background (not white) right of the middle, between the run's card and
    the panel. A page without one is kept whole."""
    import numpy as np
    from PIL import Image

    image = Image.open(path).convert("RGB")
    pixels = np.asarray(image).astype(int)[image.height // 10 : image.height * 9 // 10]
    columns = pixels.mean(axis=0)  # per column: the mean colour over the rows
    uniform = (pixels.std(axis=0).max(axis=1) < 8) & (columns.mean(axis=1) < 250)  # flat, not white
    for x in range(image.width // 2, image.width - 40):  # the first such strip right of the middle
        if uniform[x : x + 5].all():
            image.crop((0, 0, x, image.height)).save(path)
            break
    return path


def crop_sheet(review: Path, target: Path, per_kind: int = 6, cell: int = 150) -> Path:
    """A sheet of ``evaluate --review``'s crops: up to ``per_kind`` missed objects and false alarms (worst first,
    as review.csv lists them), each upscaled to ``cell`` px (nearest neighbour: the pixels stay visible) and
    labelled with its kind, class and score."""
    from PIL import Image, ImageDraw, ImageFont

    with open(review / "review.csv", encoding="utf-8", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["crop"]]
    chosen = [row for kind in ("missed", "false_alarm") for row in [r for r in rows if r["kind"] == kind][:per_kind]]
    if not chosen:
        raise RuntimeError(f"{review / 'review.csv'} lists no crops")
    columns = min(len(chosen), per_kind)
    lines = -(-len(chosen) // columns)
    caption, pad = 34, 8
    sheet = Image.new("RGB", (columns * (cell + pad) + pad, lines * (cell + caption + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=13)
    for i, row in enumerate(chosen):
        crop = Image.open(review / row["crop"]).convert("RGB")
        scale = cell / max(crop.size)
        crop = crop.resize((max(1, round(crop.width * scale)), max(1, round(crop.height * scale))), Image.NEAREST)
        x = pad + (i % columns) * (cell + pad)
        y = pad + (i // columns) * (cell + caption + pad)
        sheet.paste(crop, (x + (cell - crop.width) // 2, y + (cell - crop.height) // 2))
        kind = "missed" if row["kind"] == "missed" else "false alarm"
        score = f" {float(row['score']):.2f}" if row["score"] else ""
        draw.text((x, y + cell + 3), f"{kind}\n{row['class']}{score}", fill="black", font=font)
    sheet.save(target)
    return target


def best_model(uri: str) -> tuple[str, str, dict[str, str]]:
    """The experiment's id, and its training runs by name -> run id, read back from the store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], "tags.`pipeline.kind` = 'training'")
    ranked = sorted(runs, key=lambda r: r.data.metrics.get("best.mAP50", r.data.metrics.get("mAP50", 0)))
    return experiment.experiment_id, ranked[-1].info.run_name, {r.info.run_name: r.info.run_id for r in runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "img", help="where the pictures go")
    parser.add_argument("--work", type=Path, help="keep the trainings and outputs here (default: a temporary folder)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    work = (args.work or Path(tempfile.mkdtemp(prefix="docs-figures-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    env = hermetic_env(work)
    out = args.out.resolve()
    uri = f"sqlite:///{work / 'mlflow.db'}"
    made: list[str] = []
    failed = False

    def picture(name: str, make) -> None:
        nonlocal failed
        try:
            make()
            made.append(name)
            log(f"made:    {out / name} ({(out / name).stat().st_size // 1024} KB)")
        except Skipped as exc:
            log(f"skipped: {name}: {exc}")
        except Exception as exc:  # noqa: BLE001 - one picture's failure must not cost the others
            failed = True
            log(f"skipped: {name}: {type(exc).__name__}: {exc}")

    try:
        log(f"work folder: {work}")
        data = work / "data"
        run([*CLI, "data", "synth", "--out", str(data), "--images", "400", "--seed", "0", "--size", "128",
             "--backgrounds", "0.2"], work, env)  # fmt: skip
        config = work / "docs-demo.yaml"
        config.write_text(
            TINY_CONFIG.format(data=data, project=work / "runs", uri=uri, experiment=EXPERIMENT, epochs=EPOCHS),
            encoding="utf-8",
        )
        for name, overrides in TRAININGS:
            log(f"training {name} ({EPOCHS} epochs at 128 px)")
            run([*CLI, "train", str(config), f"train.name={name}", f"tracking.run_name={name}", *overrides], work, env)
        experiment_id, best, run_ids = best_model(uri)
        weights = work / "runs" / best / "weights" / "best.pt"
    except Exception as exc:  # noqa: BLE001 - without the trainings there is no picture to make
        log(f"error: the demo trainings failed: {type(exc).__name__}: {exc}")
        for name in ("gradient-heatmaps.png", "compare-report.png", "pr-curves.png", "operating-curve.png",
                     "review-crops.png", "mlflow-run.png"):  # fmt: skip
            log(f"skipped: {name}: no training")
        return 1

    first = TRAININGS[0][0]
    picture(
        "gradient-heatmaps.png",
        lambda: save_small(work / "runs" / first / "gradients" / "heatmaps.png", out / "gradient-heatmaps.png"),
    )

    def compare_report() -> None:
        run([*CLI, "compare", "--experiment", EXPERIMENT, "--out", str(work / "report"), "--tracking-uri", uri],
            work, env)  # fmt: skip
        page = (work / "report" / "report.html").as_uri()
        save_small(screenshot(page, work / "report.png", work, env, "1200,2700"), out / "compare-report.png")

    picture("compare-report.png", compare_report)

    calibration = work / "calibration"

    def calibrate() -> None:
        run([*CLI, "calibrate", "--model", str(weights), "--data", str(data), "--target-recall", "0.8",
             "--out", str(calibration), "--bootstrap", "200"], work, env)  # fmt: skip
        save_small(calibration / "pr_curves.png", out / "pr-curves.png")

    picture("pr-curves.png", calibrate)
    picture("operating-curve.png", lambda: save_small(calibration / "operating_curve.png", out / "operating-curve.png"))

    def review_crops() -> None:
        run([*CLI, "evaluate", "--model", str(weights), "--data", str(data), "--split", "val",
             "--review", str(work / "review"), "--screen", str(calibration / "screen.json")], work, env)  # fmt: skip
        save_small(crop_sheet(work / "review", work / "review-crops.png"), out / "review-crops.png")

    picture("review-crops.png", review_crops)
    picture(
        "mlflow-run.png",
        lambda: save_small(
            mlflow_run_page(work, experiment_id, run_ids[first], work / "mlflow-run.png", env),
            out / "mlflow-run.png",
        ),
    )

    log(f"{len(made)} pictures in {out} in {time.monotonic() - started:.0f} s")
    if args.work is None and not failed:  # a failed step's outputs stay for a look
        shutil.rmtree(work, ignore_errors=True)
    elif failed:
        log(f"the work folder, kept: {work}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

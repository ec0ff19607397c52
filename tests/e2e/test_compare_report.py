"""`compare --out` as a user runs it, on runs written straight into an MLflow store (no training), and its
report opened in headless Chromium: no console messages, and the charts on screen."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.tracking import MlflowClient

CLI = [sys.executable, "-m", "pipeline.cli"]
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
NO_CHROMIUM = "no Chromium on PATH (chromium or chromium-browser; `make install` adds it where apt-get can)"
CLASSES = ["scratch", "pin-hole", "crack"]  # the dataset's order, not the alphabet's
TAB10_BLUE = (180, 119, 31)  # BGR: the first run's colour on every chart
CAUTION = (
    "caution: these runs trained for different numbers of epochs (2, 3) and on different data "
    "(2 values of dataset.hash), so the first by mAP50_95.best compares unlike things"
)
# name, dataset hash, mAP50-95 per epoch, freeze: the second run saw other data, the third trained 2 epochs
RUNS = [
    ("wide", "hash-a", [0.10, 0.30, 0.40], "None"),
    ("frozen", "hash-b", [0.05, 0.20, 0.25], "10"),
    ("short", "hash-a", [0.08, 0.15], "None"),
]


def _log_run(client: MlflowClient, experiment_id: str, name: str, digest: str, curve: list[float], freeze: str) -> str:
    """A finished training run as `train` leaves it: histories, best.* metrics, per-class AP, its dataset input."""
    tags = {"pipeline.kind": "training", "dataset.hash": digest, "gradients.health": "ok"}
    run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
    steps = range(1, len(curve) + 1)
    metrics = [Metric("mAP50_95", value, 0, step) for step, value in zip(steps, curve, strict=True)]
    metrics += [Metric("mAP50", 2 * value, 0, step) for step, value in zip(steps, curve, strict=True)]
    metrics += [Metric(f"{split}.box_loss", 3.0 - step / 2, 0, step) for split in ("train", "val") for step in steps]
    metrics += [Metric("best.mAP50_95", max(curve), 0, 0), Metric("epoch_time_s", 4.0, 0, 1)]
    metrics += [Metric(f"best.AP50.{label}", 0.2 * (i + 1), 0, 0) for i, label in enumerate(CLASSES)]
    metrics += [Metric(f"grad_norm.model.{layer}", 10.0**-layer, 0, 0) for layer in range(4)]
    params = {"train.epochs": str(len(curve)), "model.freeze": freeze, "train.name": name}
    client.log_batch(run_id, metrics=metrics, params=[Param(key, value) for key, value in params.items()])
    schema = json.dumps({"format": "yolo", "classes": CLASSES})
    dataset = Dataset(name="parts", digest=digest, source_type="local", source="{}", schema=schema, profile="{}")
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])])
    client.set_terminated(run_id, "FINISHED")
    return run_id


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """The folder where `compare --experiment parts --out report/` ran over the three runs; its output lines; the
    run labels in the table's order (best first)."""
    work = tmp_path_factory.mktemp("compare").resolve()
    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("parts")
    run_ids = [_log_run(client, experiment_id, *run) for run in RUNS]
    done = subprocess.run(
        [*CLI, "compare", "--experiment", "parts", "--out", "report/", "--tracking-uri", uri],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    labels = [f"{name} ({run_id[:8]})" for (name, *_), run_id in zip(RUNS, run_ids, strict=True)]
    return work, done.stdout.splitlines(), labels


def test_compare_orders_classes_as_the_dataset_and_cautions_about_unlike_runs(compared) -> None:
    work, lines, _ = compared
    assert [column for column in lines[0].split() if column.startswith("AP50.")] == [f"AP50.{c}" for c in CLASSES]
    assert CAUTION in lines
    wrote = next(line for line in lines if line.startswith("wrote:"))
    assert wrote.startswith(f"wrote: {work / 'report'}/ (runs.csv, runs.md, report.html, plots.json, ")
    assert "//" not in wrote and "  " not in wrote
    assert f"report: {work / 'report' / 'report.html'}" in lines
    report = (work / "report" / "report.html").read_text(encoding="utf-8")
    assert f"<p class='caution'>{CAUTION}</p>" in report


def test_plots_json_holds_the_points_each_chart_drew(compared) -> None:
    work, _, labels = compared
    series = json.loads((work / "report" / "plots.json").read_text(encoding="utf-8"))
    for chart, drawn in series.items():
        assert [run["label"] for run in drawn] == labels, chart  # one entry per run, in the table's order
    by_epoch = {run["label"]: run["panels"] for run in series["map50_95_by_epoch.png"]}
    assert by_epoch[labels[2]] == {"mAP50-95": {"x": [1, 2], "y": [0.08, 0.15]}}
    losses = series["losses.png"][0]["panels"]
    assert losses == {"train.box_loss": {"x": [1, 2, 3], "y": [2.5, 2.0, 1.5]}, "val.box_loss": losses["val.box_loss"]}
    per_class = series["ap50_per_class.png"][0]["panels"]["AP50 per class"]
    assert per_class["x"] == CLASSES and per_class["y"] == pytest.approx([0.2, 0.4, 0.6])
    gradients = series["grad_norm_per_layer.png"][1]["panels"]
    (panel,) = gradients.values()
    assert panel["x"] == [f"model.{layer}" for layer in range(4)] and panel["y"] == pytest.approx([0, -1, -2, -3])


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with a profile and home in ``tmp_path``; console messages go to stderr."""
    command = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-sandbox",  # its sandbox refuses to start as root (containers); the page is one this test wrote
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--enable-logging=stderr",
        "--v=0",
        *args,
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, check=True)


def _console(stderr: str) -> list[str]:
    """The page's console messages (log, warning, error, uncaught exception) in Chromium's log."""
    return re.findall(r":CONSOLE[:(]\S*\] (.*)", stderr)


def _screenshot(page: str, tmp_path: Path) -> np.ndarray:
    path = tmp_path / "screenshot.png"
    _chromium(tmp_path, "--hide-scrollbars", f"--screenshot={path}", "--window-size=1200,1600", page)
    image = cv2.imread(str(path))
    assert image is not None and image.shape[:2] == (1600, 1200)
    return image


def _blue_pixels(image: np.ndarray) -> int:
    return int(np.all(np.abs(image.astype(int) - TAB10_BLUE) < 30, axis=2).sum())


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_report_loads_without_console_messages_and_shows_its_charts(compared, tmp_path: Path) -> None:
    work, _, _ = compared
    page = (work / "report" / "report.html").as_uri()
    loaded = _chromium(tmp_path, "--dump-dom", page)
    assert _console(loaded.stderr) == []
    assert loaded.stdout.count("<img") == 4 and 'class="best"' in loaded.stdout
    image = _screenshot(page, tmp_path)
    assert image.std() > 20  # not one colour: text, table and charts
    assert _blue_pixels(image) > 300  # the first run's line on the first chart: the PNG was decoded and drawn


@pytest.mark.skipif(CHROMIUM is None, reason=NO_CHROMIUM)
def test_the_browser_checks_see_errors_and_blank_pages(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><script>console.error('boom'); missing();</script>"
        "<img src='data:image/png;base64,AAAA'></body></html>",
        encoding="utf-8",
    )
    console = _console(_chromium(tmp_path, "--dump-dom", page.as_uri()).stderr)
    assert any("boom" in line for line in console) and any("missing is not defined" in line for line in console)
    image = _screenshot(page.as_uri(), tmp_path)
    assert image.std() < 20 and _blue_pixels(image) == 0

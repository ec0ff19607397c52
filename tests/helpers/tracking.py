"""What a tracked training must have recorded: its epoch metrics, each once."""

from __future__ import annotations

import json
import math
import sqlite3
from collections import Counter
from pathlib import Path

from mlflow.tracking import MlflowClient

EPOCH_METRICS = {
    "train.box_loss", "train.cls_loss", "train.dfl_loss",
    "val.box_loss", "val.cls_loss", "val.dfl_loss",
    "precision", "recall", "mAP50", "mAP50_95", "fitness",
    "lr.pg0", "lr.pg1", "lr.pg2", "epoch_time_s",
}  # fmt: skip


CLASSES = ("scratch", "pit", "patch")


def per_class_keys() -> set[str]:
    return {f"{kind}.{name}" for kind in ("AP50", "AP50_95") for name in CLASSES}


def assert_epochs_exactly_once(client: MlflowClient, run_id: str, keys: set[str], epochs: int) -> None:
    for key in sorted(keys):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(1, epochs + 1)), f"{key}: steps {steps}"


def metric_steps(db: Path, run_id: str) -> Counter:
    """(key, step) -> how many values the store holds; read from the server's database in one query."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute("SELECT key, step FROM metrics WHERE run_uuid = ?", (run_id,)).fetchall()
    return Counter(rows)


def assert_gradients_recorded(client: MlflowClient, db: Path, run_id: str, save_dir: Path, epochs: int) -> None:
    """The compact record (per block and head part, totals, positives per level) at every epoch step exactly
    once; every layer's statistics in the table artifact; heatmaps, report and diagnosis in the run."""
    import pandas as pd

    from pipeline.training.gradients import COUNTS, PART_STATS, REDUCTIONS, STATS, TOTALS, metric_key

    layers = json.loads((save_dir / "gradients" / "report.json").read_text())["groups"]
    assert "model.0.conv" in layers and "model.2.cv1.conv" in layers and len(layers) > 100
    table = pd.read_parquet(save_dir / "gradients" / "table.parquet")
    assert len(table) == epochs * len(layers) and set(table["layer"]) == set(layers)
    assert {f"{s}_{r}" for s in STATS for r in REDUCTIONS} <= set(table.columns)
    parts = sorted(set(table["part"]))
    assert "model.2" in parts and "model.23.cv2.0" in parts and len(parts) < 60
    expected = {metric_key(s, r, part) for s in PART_STATS for r in REDUCTIONS for part in parts}
    expected |= {*TOTALS, *COUNTS}
    counts = metric_steps(db, run_id)
    recorded = {key for key, _ in counts if key.startswith("grad") or key.startswith(("weight_norm", "update_ratio"))}
    assert recorded == expected and len(expected) <= 250
    positives = {key for key, _ in counts if key.startswith("positives_per_image.")}
    assert positives == {f"positives_per_image.stride{s}" for s in (8, 16, 32)}
    assert all(counts[(key, step)] == 1 for key in expected | positives for step in range(1, epochs + 1))
    assert all(step in range(1, epochs + 1) for key, step in counts if key in expected)
    history = client.get_metric_history(run_id, "grad_norm.model.2")
    assert len(history) == epochs and all(math.isfinite(m.value) and m.value > 0 for m in history)
    artifacts = {Path(a.path).name for a in client.list_artifacts(run_id, "gradients")}
    assert {"heatmaps.png", "report.json", "table.parquet", "diagnosis.json"} <= artifacts
    assert client.get_run(run_id).data.tags["gradients.health"] in {"ok", "info"}  # a healthy training: never a warning

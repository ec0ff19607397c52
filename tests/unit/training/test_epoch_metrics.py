"""pipeline/training/epoch_metrics.py: ultralytics metric names as flat, MLflow-search-safe keys."""

from __future__ import annotations

import math
import re

import pytest

from pipeline.training.epoch_metrics import class_key, epoch_metrics, metric_key, per_class_ap

SAFE = re.compile(r"^[A-Za-z0-9_.]+$")
MLFLOW_SAFE = re.compile(r"^[/\w.\- :]*$")  # what MLflow accepts in a metric name (mlflow/utils/validation.py)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("metrics/mAP50-95(B)", "mAP50_95"),
        ("metrics/mAP50(B)", "mAP50"),
        ("metrics/precision(B)", "precision"),
        ("metrics/recall(B)", "recall"),
        ("val/box_loss", "val.box_loss"),
        ("train/cls_loss", "train.cls_loss"),
        ("train/dfl_loss", "train.dfl_loss"),
        ("lr/pg0", "lr.pg0"),
        ("lr/pg2", "lr.pg2"),
        ("fitness", "fitness"),
    ],
)
def test_metric_key(name: str, key: str) -> None:
    assert metric_key(name) == key


def test_metric_key_replaces_unsafe_characters() -> None:
    key = metric_key("weird name (x)/a%b")
    assert SAFE.match(key)
    assert not key.startswith(("_", ".")) and not key.endswith(("_", "."))


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("rolled-in_scale", "rolled-in_scale"),
        ("pin-hole", "pin-hole"),
        ("crazing", "crazing"),
        ("pitted_surface", "pitted_surface"),
        ("a.b/c", "a_b_c"),
        ("two words", "two_words"),
        ("-edge-", "edge"),
        ("50%: cut", "50_cut"),
    ],
)
def test_class_key(name: str, key: str) -> None:
    assert class_key(name) == key
    assert "." not in class_key(name) and "/" not in class_key(name)
    assert MLFLOW_SAFE.match(f"AP50.{class_key(name)}")


def test_class_key_of_nothing_usable() -> None:
    assert class_key("") == "unnamed"
    assert class_key("---") == "unnamed"


def test_metric_names_still_turn_dashes_into_underscores() -> None:
    # Only class names keep "-": ultralytics' own names keep their documented form (mAP50_95).
    assert metric_key("train/x-y") == "train.x_y"


def test_per_class_ap_every_class_nan_when_missing() -> None:
    names = {0: "scratch", 1: "pit", 2: "rolled-in_scale"}
    out = per_class_ap(names, ap_class_index=[0, 2], ap50=[0.9, 0.5], ap50_95=[0.6, 0.25])
    assert set(out) == {
        "AP50.scratch",
        "AP50_95.scratch",
        "AP50.pit",
        "AP50_95.pit",
        "AP50.rolled-in_scale",
        "AP50_95.rolled-in_scale",
    }
    assert out["AP50.scratch"] == pytest.approx(0.9)
    assert out["AP50_95.scratch"] == pytest.approx(0.6)
    assert out["AP50.rolled-in_scale"] == pytest.approx(0.5)
    assert out["AP50_95.rolled-in_scale"] == pytest.approx(0.25)
    assert math.isnan(out["AP50.pit"]) and math.isnan(out["AP50_95.pit"])
    assert all(isinstance(v, float) for v in out.values())
    assert all(key.count(".") == 1 for key in out)


def test_per_class_ap_index_order_does_not_matter() -> None:
    names = {0: "a", 1: "b"}
    out = per_class_ap(names, ap_class_index=[1, 0], ap50=[0.2, 0.8], ap50_95=[0.1, 0.4])
    assert out == {"AP50.a": 0.8, "AP50_95.a": 0.4, "AP50.b": 0.2, "AP50_95.b": 0.1}


def test_per_class_ap_accepts_numpy() -> None:
    np = pytest.importorskip("numpy")
    out = per_class_ap({0: "a"}, np.array([0]), np.array([0.5], dtype=np.float32), np.array([0.25]))
    assert out == {"AP50.a": 0.5, "AP50_95.a": 0.25}
    assert all(type(v) is float for v in out.values())


def test_per_class_ap_nothing_measured() -> None:
    out = per_class_ap({0: "a", 1: "b"}, [], [], [])
    assert len(out) == 4
    assert all(math.isnan(v) for v in out.values())


def test_epoch_metrics() -> None:
    scalars = {
        "train/box_loss": 1.5,
        "metrics/precision(B)": 0.7,
        "metrics/mAP50-95(B)": 0.3,
        "val/box_loss": 1.25,
        "lr/pg0": 0.001,
    }
    out = epoch_metrics(scalars, fitness=0.35, epoch_time_s=12.5)
    assert out == {
        "train.box_loss": 1.5,
        "precision": 0.7,
        "mAP50_95": 0.3,
        "val.box_loss": 1.25,
        "lr.pg0": 0.001,
        "fitness": 0.35,
        "epoch_time_s": 12.5,
    }
    assert all(type(v) is float for v in out.values())


def test_epoch_metrics_without_fitness_or_time() -> None:
    assert epoch_metrics({"metrics/recall(B)": 1}, fitness=None) == {"recall": 1.0}


def test_epoch_metrics_zero_fitness_is_kept() -> None:
    out = epoch_metrics({}, fitness=0.0, epoch_time_s=0.0)
    assert out == {"fitness": 0.0, "epoch_time_s": 0.0}

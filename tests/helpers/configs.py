"""The tiny training configs the tests build: 64 px, 2 epochs, CPU, fast tracking intervals."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config, build_config


def tiny_config(data_yaml: Path, project: Path, **sections: dict) -> Config:
    """A 2-epoch, 64-px CPU training without plots or drift baseline, with fast tracking intervals; ``sections``
    override any key."""
    raw: dict[str, dict] = {
        "data": {"path": str(data_yaml)},
        "model": {"weights": "yolo11n.yaml"},
        # No plots unless a test asks (train={"plots": True}): drawing them costs a tiny training more than its epochs.
        # No drift baseline either (train={"drift_baseline": True}): predicting the val split adds ~2 s to each.
        "train": {
            "epochs": 2,
            "imgsz": 64,
            "batch": 16,
            "device": "cpu",
            "workers": 0,
            "plots": False,
            "drift_baseline": False,
            "project": str(project),
        },  # fmt: skip
        "augment": {"mosaic": 0.0, "close_mosaic": 0},
        "tracking": {
            "experiment": "tests",
            "flush_interval_s": 0.5,
            "retry_interval_s": 1.0,
            "request_timeout_s": 5,
            "finish_timeout_s": 20.0,
            "system_metrics_interval_s": 1.0,
        },
    }
    for section, keys in sections.items():
        raw.setdefault(section, {}).update(keys)
    return build_config(raw, "<tests>")


def untracked_training(data_yaml: Path, folder: Path, **train: object):
    """A tiny training (`tiny_config`, 1 epoch unless ``train`` says otherwise) with no tracking and no gradients:
    for tests that need a trained model, not its record."""
    from pipeline.training import train as run_training

    config = tiny_config(
        data_yaml,
        folder / "runs",
        train={"epochs": 1, **train},
        tracking={"enabled": False},
        gradients={"enabled": False},
    )
    return run_training(config)

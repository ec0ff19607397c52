"""pipeline/config.py: one warning line for each setting that would silently do nothing in a training."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import build_config, warn_ineffective_settings

WORKERS_ON_CPU = (
    "config: train.workers: 2 does nothing on the CPU: ultralytics loads the data in the training process there "
    "(0 workers)"
)


def warnings_for(raw: dict, device: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    caplog.clear()
    with caplog.at_level("WARNING", logger="pipeline.config"):
        warn_ineffective_settings(build_config(raw), device)
    return [record.getMessage() for record in caplog.records]


def test_workers_on_the_cpu_or_mps_are_said(caplog: pytest.LogCaptureFixture) -> None:
    no_mosaic = {"augment": {"mosaic": 0.0}}
    assert warnings_for({**no_mosaic, "train": {"workers": 2}}, "cpu", caplog) == [WORKERS_ON_CPU]
    assert warnings_for({**no_mosaic, "train": {"workers": 1}}, "mps", caplog) == [
        "config: train.workers: 1 does nothing on MPS: ultralytics loads the data in the training process there "
        "(0 workers)"
    ]
    assert warnings_for({**no_mosaic, "train": {"workers": 0}}, "cpu", caplog) == []
    assert warnings_for({**no_mosaic, "train": {"workers": 8}}, "0", caplog) == []
    assert warnings_for({**no_mosaic, "train": {"workers": 8}}, "0,1", caplog) == []


def test_the_defaults_say_nothing_on_the_cpu(caplog: pytest.LogCaptureFixture) -> None:
    # The default workers count suits a GPU; only one the user chose is news on a CPU. Mosaic runs by default.
    assert warnings_for({}, "cpu", caplog) == []


@pytest.mark.parametrize(("epochs", "close_mosaic"), [(5, 10), (10, 10)])
def test_close_mosaic_covering_every_epoch_is_said(epochs: int, close_mosaic: int, caplog) -> None:
    raw = {"train": {"epochs": epochs, "workers": 0}, "augment": {"mosaic": 0.5, "close_mosaic": close_mosaic}}
    assert warnings_for(raw, "cpu", caplog) == [
        f"config: augment.close_mosaic: {close_mosaic} >= train.epochs ({epochs}), so no epoch uses mosaic "
        "(augment.mosaic: 0.5 does nothing); set close_mosaic below epochs, or mosaic: 0"
    ]


@pytest.mark.parametrize(("epochs", "mosaic", "close_mosaic"), [(11, 1.0, 10), (5, 0.0, 10), (5, 1.0, 0)])
def test_mosaic_that_some_epoch_uses_or_that_is_off_is_not_said(epochs, mosaic, close_mosaic, caplog) -> None:
    raw = {"train": {"epochs": epochs, "workers": 0}, "augment": {"mosaic": mosaic, "close_mosaic": close_mosaic}}
    assert warnings_for(raw, "cpu", caplog) == []


def test_training_warns_for_the_device_auto_resolves_to(
    synth_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import torch

    from pipeline.training.run import prepare_training

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # auto means the CPU here, with or without a GPU
    config = build_config(
        {
            "data": {"path": str(synth_data)},
            "train": {"device": "auto", "workers": 2, "epochs": 1, "imgsz": 64, "project": str(tmp_path / "runs")},
            "augment": {"mosaic": 0.0},
            "tracking": {"enabled": False},
        }
    )
    with caplog.at_level("WARNING", logger="pipeline.config"):
        prepared = prepare_training(config)
    assert prepared.ultralytics_args["device"] == "cpu"
    assert [r.getMessage() for r in caplog.records if r.name == "pipeline.config"] == [WORKERS_ON_CPU]


def test_a_fine_tuning_rate_that_would_erase_the_parent_is_said(caplog: pytest.LogCaptureFixture) -> None:
    from pipeline.config import warn_fine_tuning_rate

    def said(train: dict) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="pipeline.config"):
            warn_fine_tuning_rate(build_config({"model": {"weights": "models:/defects@champion"}, "train": train}))
        return [record.getMessage() for record in caplog.records]

    assert said({"optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0}) == [
        "config: train.lr0: 0.002 with AdamW and no warmup starts a fine-tuning with steps large enough to erase "
        "what models:/defects@champion learned; use about a tenth (lr0 0.0002) or warmup_epochs > 0"
    ]
    assert said({"optimizer": "AdamW", "lr0": 0.0002, "warmup_epochs": 0}) == []
    assert said({"optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 1}) == []
    assert said({"optimizer": "SGD", "lr0": 0.01, "warmup_epochs": 0}) == []

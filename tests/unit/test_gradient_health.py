"""Vanishing/exploding detection, the recorder's files, the heatmaps and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import GradientsConfig
from pipeline.train.errors import NonFiniteGradients
from pipeline.train.gradient_health import EXPLODING, NONFINITE, VANISHING, GradientHealth
from pipeline.train.gradient_recorder import GradientRecorder
from pipeline.train.gradient_report import HeatmapPainter, draw_heatmaps, log10_matrix
from pipeline.train.gradients import STATS, EpochGradients
from tests.unit.test_gradients import Tiny, batch, loss_of

GROUPS = ["model.0.conv", "model.1.conv", "model.2.conv", "model.3.conv"]


def epoch_of(
    n: int, norms: list[float], total_max: float = 50.0, nonfinite_steps: int = 0, steps: int = 10
) -> EpochGradients:
    values = {stat: {r: [1.0] * len(GROUPS) for r in ("mean", "max", "last")} for stat in STATS}
    values["grad_norm"] = {r: list(norms) for r in ("mean", "max", "last")}
    values["grad_nonfinite"] = {r: [0.0, 0.01 if nonfinite_steps else 0.0, 0.0, 0.0] for r in ("mean", "max", "last")}
    totals = {
        "grad_total_norm": total_max / 2,
        "grad_total_norm_max": total_max,
        "grad_total_norm_last": total_max / 2,
        "grad_clipped_fraction": 1.0,
        "grad_steps": float(steps),
        "grad_nonfinite_steps": float(nonfinite_steps),
    }
    return EpochGradients(n, list(GROUPS), values, totals)


def test_a_layer_is_vanishing_after_k_epochs_below_the_relative_floor() -> None:
    health = GradientHealth(GradientsConfig(vanish_rel=1e-3, vanish_epochs=2))
    assert health.check(epoch_of(1, [1.0, 2.0, 1e-5, 3.0])) == []  # one epoch below is not yet a trend
    events = health.check(epoch_of(2, [1.0, 2.0, 1e-5, 3.0]))
    assert [(e.kind, e.layers, e.epoch) for e in events] == [(VANISHING, ["model.2.conv"], 2)]
    assert health.check(epoch_of(3, [1.0, 2.0, 1e-5, 3.0])) == []  # reported once, not every epoch
    assert health.tags()["gradients.vanishing_layers"] == "model.2.conv"
    health.check(epoch_of(4, [1.0, 2.0, 0.5, 3.0]))  # it recovered
    assert health.vanishing == set() and health.status() == VANISHING  # ... but it did happen


def test_the_absolute_floor_applies_when_every_layer_is_tiny() -> None:
    health = GradientHealth(GradientsConfig(vanish_abs=1e-6, vanish_rel=0.0, vanish_epochs=1))
    events = health.check(epoch_of(1, [1e-9, 1e-9, 1e-9, 1.0]))
    assert events[0].layers == ["model.0.conv", "model.1.conv", "model.2.conv"]
    assert "model.0.conv" in events[0].message() and "epoch 1" in events[0].message()


def test_a_total_norm_above_the_threshold_is_exploding_largest_layers_first() -> None:
    health = GradientHealth(GradientsConfig(explode_norm=100.0))
    assert health.check(epoch_of(1, [1.0, 2.0, 3.0, 4.0], total_max=99.0)) == []
    events = health.check(epoch_of(2, [1.0, 900.0, 3.0, 40.0], total_max=1e3))
    assert events[0].kind == EXPLODING and events[0].layers[:2] == ["model.1.conv", "model.3.conv"]
    assert health.tags() == {
        "gradients.health": EXPLODING,
        "gradients.vanishing_layers": "",
        "gradients.exploding_epochs": "2",
    }


def test_nonfinite_gradients_are_an_event_and_under_amp_only_when_most_steps_had_them() -> None:
    plain = GradientHealth(GradientsConfig())
    events = plain.check(epoch_of(1, [1.0] * 4, nonfinite_steps=1))
    assert [(e.kind, e.layers) for e in events] == [(NONFINITE, ["model.1.conv"])]
    amp = GradientHealth(GradientsConfig(), amp=True)
    assert amp.check(epoch_of(1, [1.0] * 4, nonfinite_steps=3)) == []  # the GradScaler finding its scale
    assert amp.check(epoch_of(2, [1.0] * 4, nonfinite_steps=8))[0].kind == NONFINITE


def test_heatmap_is_an_image_of_layers_by_epochs(tmp_path: Path) -> None:
    history = [epoch_of(e, [10.0**e, 1.0, 0.0, math.nan]) for e in (1, 2, 3)]
    matrix = log10_matrix(history, "grad_norm")
    assert matrix.shape == (4, 3)
    assert matrix[0].tolist() == [1.0, 2.0, 3.0] and np.isnan(matrix[2]).all() and np.isnan(matrix[3]).all()
    path = draw_heatmaps(history, tmp_path / "heatmaps.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.height >= 300 and image.width >= 600
        pixels = np.asarray(image.convert("RGB"))
    red = (pixels[..., 0] == 255) & (pixels[..., 1] == 0) & (pixels[..., 2] == 0)
    assert red.sum() > 100  # the zero and NaN rows are painted red, where a person looks first


def test_the_painter_draws_the_latest_request_and_close_waits_for_it(tmp_path: Path) -> None:
    drawn: list[Path] = []
    painter = HeatmapPainter(tmp_path / "heatmaps.png", drawn.append)
    for n in range(1, 4):
        painter.request([epoch_of(e, [1.0, 2.0, 3.0, 4.0]) for e in range(1, n + 1)])
    painter.close()
    assert drawn and drawn[-1] == tmp_path / "heatmaps.png" and len(drawn) <= 3
    assert not painter._thread.is_alive() and (tmp_path / "heatmaps.png").stat().st_size > 0


def train_epochs(recorder: GradientRecorder, model: torch.nn.Module, epochs: range, poison: int | None = None) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for epoch in epochs:
        recorder.begin_epoch()
        for seed in range(2):
            optimizer.zero_grad()
            loss_of(model, batch(seed)).backward()
            if epoch == poison and seed == 1:  # the last step, so the NaN does not spread to other layers
                model.model[1].conv.weight.grad[0, 0, 0, 0] = math.inf
            assert recorder.due()
            recorder.observe_gradients()
            optimizer.step()
            recorder.observe_update()
        recorder.end_epoch(epoch)


def test_recorder_writes_history_heatmaps_events_and_report(tmp_path: Path) -> None:
    model = Tiny()
    recorder = GradientRecorder(model, GradientsConfig(), tmp_path, resumed_epochs=0)
    train_epochs(recorder, model, range(1, 3), poison=2)
    report = json.loads(recorder.finish().read_text())

    assert {p.name for p in tmp_path.iterdir()} == {
        "history.jsonl", "events.jsonl", "heatmaps.png", "report.json",
    }  # fmt: skip
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["epoch"], e["kind"], e["layers"]) for e in events] == [(2, NONFINITE, ["model.1.conv"])]
    assert report["epochs"] == [1, 2] and report["health"] == NONFINITE and report["exploding_epochs"] == [2]
    assert list(report["groups"]) == recorder.monitor.groups.names
    assert len(report["groups"]["model.0.conv"]["grad_norm"]["mean"]) == 2
    assert report["groups"]["model.1.conv"]["grad_nonfinite"]["max"][1] == pytest.approx(1 / (4 * 4 * 9))
    assert report["numel"]["model.1.conv"] == 4 * 4 * 9


def test_stop_on_nonfinite_raises_one_line(tmp_path: Path) -> None:
    model = Tiny()
    recorder = GradientRecorder(model, GradientsConfig(stop_on_nonfinite=True), tmp_path)
    with pytest.raises(
        NonFiniteGradients, match=r"^gradients: nonfinite in epoch 1: .*model\.1\.conv.*stop_on_nonfinite"
    ):
        train_epochs(recorder, model, range(1, 2), poison=1)


def test_a_resumed_recorder_keeps_the_epochs_its_checkpoint_covers(tmp_path: Path) -> None:
    model = Tiny()
    first = GradientRecorder(model, GradientsConfig(vanish_epochs=2), tmp_path)
    train_epochs(first, model, range(1, 4))  # epochs 1-3 recorded; say the checkpoint holds epoch 2
    resumed = GradientRecorder(model, GradientsConfig(vanish_epochs=2), tmp_path, resumed_epochs=2)
    assert sorted(resumed.history) == [1, 2]
    train_epochs(resumed, model, range(3, 5))
    assert sorted(resumed.history) == [1, 2, 3, 4]
    fresh = GradientRecorder(model, GradientsConfig(), tmp_path, resumed_epochs=0)  # a new training, same folder
    assert fresh.history == {} and not (tmp_path / "history.jsonl").exists()


def test_a_redone_epoch_counts_once_in_the_streaks() -> None:
    health = GradientHealth(GradientsConfig(vanish_rel=1e-3, vanish_epochs=3))
    history = [epoch_of(1, [1.0, 2.0, 1e-5, 3.0])]
    health.check(history[0])
    health.check(epoch_of(2, [1.0, 2.0, 1e-5, 3.0], nonfinite_steps=1))  # then ultralytics redoes epoch 2
    health.rewind(history)
    assert health.check(epoch_of(2, [1.0, 2.0, 1e-5, 3.0])) == []  # a streak of 2, not 3
    assert health.check(epoch_of(3, [1.0, 2.0, 1e-5, 3.0]))[0].kind == VANISHING
    assert health.status() == "nonfinite,vanishing"  # the redo does not erase what happened

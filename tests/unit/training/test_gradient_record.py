"""The compact MLflow record (per block and head level) and the full per-layer table (gradients/table.parquet)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pipeline.config import GradientsConfig, load_config
from pipeline.training.diagnosis import DEAD_LAYER, IDLE_LEVEL, Finding
from pipeline.training.gradient_recorder import GradientRecorder
from pipeline.training.gradient_report import TABLE, cell_marks, draw_heatmaps, heatmap_rows, write_table
from pipeline.training.gradients import (
    COUNTS,
    PART_STATS,
    REDUCTIONS,
    STATS,
    TOTALS,
    EpochGradients,
    GradientMonitor,
    metric_key,
    part_name,
)
from tests.helpers.tiny_network import Tiny  # noqa: E402 - the same tiny model: blocks of two layers and one of one


def batch(seed: int) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def step(model: nn.Module, monitor: GradientMonitor, optimizer: torch.optim.Optimizer, seed: int) -> dict:
    optimizer.zero_grad()
    ((model(batch(seed)) - 0.3).square().mean() * 100).backward()
    seen = {"grads": {n: p.grad.detach().clone() for n, p in model.named_parameters()}}
    seen["before"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert monitor.due()
    monitor.observe_gradients()
    optimizer.step()
    monitor.observe_update()
    seen["after"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return seen


def norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


def epochs_of(model: nn.Module, count: int, steps: int = 2) -> tuple[list[EpochGradients], list[list[dict]]]:
    torch.manual_seed(0)
    monitor = GradientMonitor(model, "layer")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    history, seen = [], []
    for epoch in range(1, count + 1):
        monitor.reset()
        seen.append([step(model, monitor, optimizer, 10 * epoch + s) for s in range(steps)])
        history.append(monitor.end_epoch(epoch))
    return history, seen


def tensors(output: object) -> list[torch.Tensor]:
    """Every tensor in a model's training output (a tensor, or lists and dicts of them, by head type)."""
    if torch.is_tensor(output):
        return [output]
    items = output.values() if isinstance(output, dict) else output if isinstance(output, list | tuple) else []
    return [t for item in items for t in tensors(item)]


def one_step_epoch(weights: str, freeze: int = 0) -> EpochGradients:
    """An epoch of one optimizer step on a real ultralytics model (built from its YAML: no download)."""
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = DetectionModel(weights, verbose=False)
    for block in model.model[:freeze]:
        block.requires_grad_(False)
    monitor = GradientMonitor(model, "layer")
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    sum(t.float().square().mean() for t in tensors(model(torch.randn(1, 3, 64, 64)))).backward()
    monitor.due()
    monitor.observe_gradients()
    optimizer.step()
    monitor.observe_update()
    epoch = monitor.end_epoch(1)
    assert epoch is not None
    return epoch


def test_yolo11n_default_record_is_per_block_and_head_level_and_at_most_250_metrics() -> None:
    epoch = one_step_epoch("yolo11n.yaml")
    settings = GradientsConfig()
    assert settings.detail == "block" and settings.grouping == "layer"
    metrics = epoch.metrics(settings.reductions, settings.detail)

    levels = [f"model.23.{branch}.{level}" for branch in ("cv2", "cv3") for level in range(3)]
    blocks = [p for p in epoch.parts if not p.startswith("model.23")]
    assert [p for p in epoch.parts if p.startswith("model.23")] == levels  # the frozen .dfl is not a part
    assert blocks == [f"model.{i}" for i in range(23) if i not in (11, 12, 14, 15, 18, 21)]  # no parameters there
    expected = {metric_key(s, r, p) for s in PART_STATS for r in settings.reductions for p in epoch.parts}
    assert set(metrics) == expected | set(TOTALS) | set(COUNTS)
    assert len(metrics) == 2 * 3 * 23 + 6 == 144 <= 250
    assert len(epoch.metrics(settings.reductions, "layer")) == 5 * 3 * 168 + 6  # what detail: layer sends


def test_yolo26n_head_parts_split_one_to_many_and_one_to_one_branches() -> None:
    epoch = one_step_epoch("yolo26n.yaml")
    head = [p for p in epoch.parts if p.startswith("model.23")]
    assert head == [f"model.23.{b}.{lv}" for b in ("cv2", "cv3", "one2one_cv2", "one2one_cv3") for lv in range(3)]
    assert len(epoch.metrics()) <= 250


@pytest.mark.parametrize(
    ("name", "part"),
    [
        ("model.2.cv2.conv.weight", "model.2"),  # a C3k2's cv2 outside the head is just its block
        ("model.2.m.0.cv1.conv.weight", "model.2"),
        ("model.23.cv2.1.0.conv.weight", "model.23.cv2.1"),
        ("model.23.cv3.2.1.1.bn.bias", "model.23.cv3.2"),
        ("model.23.one2one_cv2.0.2.weight", "model.23.one2one_cv2.0"),
        ("model.23.proto.cv1.conv.weight", "model.23.proto"),
    ],
)
def test_part_names(name: str, part: str) -> None:
    assert part_name(name, frozenset({"model.23"})) == part


def test_block_values_equal_a_direct_computation_every_reduction() -> None:
    """A block's norm is sqrt(sum of its layers' squared norms) at each step; its update ratio ||dw|| / ||w||."""
    (epoch,), (seen,) = epochs_of(Tiny(), 1, steps=3)
    assert epoch.parts == ["model.0", "model.1", "model.2"]
    assert epoch.group_parts == ["model.0", "model.0", "model.1", "model.1", "model.2"]
    for i, block in enumerate(epoch.parts):
        names = [n for n in seen[0]["grads"] if n.startswith(block + ".")]
        norms = [norm([s["grads"][n] for n in names]) for s in seen]
        ratios = [
            norm([s["after"][n] - s["before"][n] for n in names]) / norm([s["after"][n] for n in names]) for s in seen
        ]
        maxes = [max(float(s["grads"][n].abs().max()) for n in names) for s in seen]
        values = epoch.part_values
        assert values["grad_norm"]["mean"][i] == pytest.approx(sum(norms) / 3, rel=1e-5)
        assert values["grad_norm"]["max"][i] == pytest.approx(max(norms), rel=1e-5)
        assert values["grad_norm"]["last"][i] == pytest.approx(norms[-1], rel=1e-5)
        assert values["update_ratio"]["mean"][i] == pytest.approx(sum(ratios) / 3, rel=1e-4)
        assert values["update_ratio"]["max"][i] == pytest.approx(max(ratios), rel=1e-4)
        assert values["update_ratio"]["last"][i] == pytest.approx(ratios[-1], rel=1e-4)
        assert values["grad_max"]["max"][i] == pytest.approx(max(maxes), rel=1e-6)
        assert values["weight_norm"]["last"][i] == pytest.approx(norm([seen[-1]["after"][n] for n in names]), rel=1e-5)
        assert epoch.metrics(["mean"])[f"grad_norm.{block}"] == values["grad_norm"]["mean"][i]
    # The per-layer values are unchanged by the parts: layer norms combine into their block's last norm.
    layers = epoch.values["grad_norm"]["last"]
    assert math.hypot(layers[0], layers[1]) == pytest.approx(epoch.part_values["grad_norm"]["last"][0], rel=1e-5)


def test_detail_layer_sends_every_statistic_of_every_layer() -> None:
    (epoch,), _ = epochs_of(Tiny(), 1)
    metrics = epoch.metrics(REDUCTIONS, "layer")
    expected = {metric_key(s, r, g) for s in STATS for r in REDUCTIONS for g in epoch.groups}
    assert set(metrics) == expected | set(TOTALS) | set(COUNTS)
    assert metrics["grad_norm_max.model.1.conv"] == epoch.values["grad_norm"]["max"][2]
    with pytest.raises(ValueError, match="detail"):
        epoch.metrics(REDUCTIONS, "parameter")


def test_an_epoch_with_parts_survives_its_json_line() -> None:
    (epoch,), _ = epochs_of(Tiny(), 1)
    again = EpochGradients.from_json(epoch.to_json())
    assert again == epoch and again.metrics() == epoch.metrics()
    old = EpochGradients.from_json({k: v for k, v in epoch.to_json().items() if k in ("epoch", "groups", "values")})
    assert old.parts == [] and set(old.metrics(["mean"])) == {
        metric_key(s, "mean", g) for s in STATS for g in old.groups
    }


def test_the_table_round_trips_one_row_per_epoch_and_layer(tmp_path: Path) -> None:
    history, _ = epochs_of(Tiny(), 3)
    path = write_table(history, tmp_path / "gradients" / TABLE)
    assert sorted(p.name for p in path.parent.iterdir()) == [TABLE]  # no temporary file left behind

    table = pd.read_parquet(path)
    layers = history[0].groups
    assert len(table) == 3 * len(layers)
    assert table["epoch"].tolist() == [e for e in (1, 2, 3) for _ in layers]
    assert table["layer"].tolist() == layers * 3
    assert table["part"].tolist() == history[0].group_parts * 3
    stat_columns = [f"{s}_{r}" for s in STATS for r in REDUCTIONS]
    assert list(table.columns) == ["epoch", "layer", "part", *stat_columns, *TOTALS, *COUNTS]
    for epoch in history:
        rows = table[table["epoch"] == epoch.epoch]
        for stat in STATS:
            for reduction in REDUCTIONS:
                assert rows[f"{stat}_{reduction}"].tolist() == epoch.values[stat][reduction]  # float64: exact
        assert math.isfinite(epoch.totals["grad_total_norm"])
        assert (rows["grad_total_norm"] == epoch.totals["grad_total_norm"]).all()


def test_the_recorder_sends_the_compact_record_and_rewrites_the_table_each_epoch(tmp_path: Path) -> None:
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    recorders = {
        detail: GradientRecorder(model, GradientsConfig(detail=detail, heatmaps=False), tmp_path / detail)
        for detail in ("block", "layer")
    }
    for epoch in (1, 2):
        for recorder in recorders.values():
            recorder.begin_epoch()
        for seed in range(2):
            optimizer.zero_grad()
            (model(batch(seed)).square().mean() * 100).backward()
            for recorder in recorders.values():
                recorder.due()
                recorder.observe_gradients()
            optimizer.step()
            for recorder in recorders.values():
                recorder.observe_update()
        for recorder in recorders.values():
            recorder.end_epoch(epoch)
    block, layer = (recorders[d].metrics() for d in ("block", "layer"))
    assert len(block) == 2 * 3 * 3 + 6 and "grad_norm_last.model.1" in block
    assert len(layer) == 5 * 3 * 5 + 6 and "weight_norm.model.1.bn" in layer
    for detail in ("block", "layer"):
        table = pd.read_parquet(tmp_path / detail / TABLE)
        assert len(table) == 2 * 5 and set(table["epoch"]) == {1, 2}  # both details keep every layer there


def test_the_detail_setting() -> None:
    assert load_config(None, ["gradients.detail=layer"]).gradients.detail == "layer"
    with pytest.raises(Exception, match="detail"):
        load_config(None, ["gradients.detail=parameter"])


def test_heatmap_rows_are_grouped_by_part_with_frozen_layers_in_their_place(tmp_path: Path) -> None:
    epoch = one_step_epoch("yolo11n.yaml", freeze=2)
    assert list(epoch.frozen) == ["model.0.conv", "model.0.bn", "model.1.conv", "model.1.bn", "model.23.dfl.conv"]
    rows = heatmap_rows(epoch)
    assert len(rows) == len(epoch.groups) + 5
    assert [r.layer for r in rows[:5]] == [
        "model.0.conv",
        "model.0.bn",
        "model.1.conv",
        "model.1.bn",
        "model.2.cv1.conv",
    ]
    assert [r.frozen for r in rows[:5]] == [True] * 4 + [False] and rows[-1].label == "model.23.dfl.conv (frozen)"
    order = [r.part for r in rows]
    assert all(
        order.index(p) + order.count(p) - 1 == len(order) - 1 - order[::-1].index(p) for p in order
    )  # contiguous
    sections = [r.section for r in rows]
    assert sections == sorted(sections, key=["backbone", "neck", "head"].index)  # backbone, then neck, then head
    assert sections.count("backbone") == sum(1 for r in rows if _block(r.layer) < 11)
    assert [r.part for r in rows if r.section == "head" and not r.frozen][0] == "model.23.cv2.0"

    from PIL import Image

    with Image.open(draw_heatmaps([epoch], tmp_path / "heatmaps.png")) as image:
        pixels = np.asarray(image.convert("RGB"))
    grey = (pixels == np.array([0xBB, 0xBB, 0xBB])).all(axis=-1)
    assert grey.sum() > 100  # the frozen rows, grey: no statistics by choice, not a red fault


def _block(layer: str) -> int:
    return int(layer.split(".")[1])


def test_the_heatmap_marks_idle_levels_and_labels_what_the_findings_name(tmp_path: Path) -> None:
    epoch = one_step_epoch("yolo11n.yaml")
    idle_layers = [g for g in epoch.groups if g.startswith("model.23.cv2.2.")]
    findings = {
        1: [
            Finding(1, IDLE_LEVEL, "info", idle_layers, {"idle_strides": [32]}, "r", "stride 32: no targets"),
            Finding(1, DEAD_LAYER, "warning", ["model.6.cv1.conv"], {"layers": 1}, "r", "zero"),
        ]
    }
    rows = heatmap_rows(epoch, findings)
    labels = {row.layer: row.label for row in rows}
    assert len(idle_layers) == 5 and all(labels[g] == f"{g} (idle-level)" for g in idle_layers)
    assert labels["model.6.cv1.conv"] == "model.6.cv1.conv (dead-layer)"
    assert labels["model.23.dfl.conv"] == "model.23.dfl.conv (frozen)" and labels["model.5.conv"] == "model.5.conv"
    idle, flagged = cell_marks(rows, [1], findings)
    assert idle.sum() == 5 and flagged.sum() == 1  # info marks no cell with an x; the idle level's cells go blue
    assert [rows[i].layer for i in np.nonzero(flagged[:, 0])[0]] == ["model.6.cv1.conv"]

    from PIL import Image

    with Image.open(draw_heatmaps([epoch], tmp_path / "heatmaps.png", findings)) as image:
        pixels = np.asarray(image.convert("RGB"))
    blue = (pixels == np.array([0xC6, 0xDB, 0xEF])).all(axis=-1)
    assert blue.sum() > 100  # the idle rows are pale blue, not red: no targets is not a fault


def test_the_recorder_knows_the_optimiser_and_judges_a_first_epoch_by_itself(tmp_path: Path) -> None:
    """The trainer hands over its optimiser (family, lr0) and each step's loss items: epoch 1 needs no epoch before."""
    torch.manual_seed(0)
    model = Tiny()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.5)  # steps of about 0.5 per weight: far beyond healthy
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)  # sets initial_lr, as ultralytics' scheduler does
    recorder = GradientRecorder(model, GradientsConfig(heatmaps=False), tmp_path, optimizer=optimizer)
    assert (recorder.facts.optimizer, recorder.facts.lr) == ("Adam", 0.5)
    recorder.begin_epoch()
    losses = []
    for seed in range(3):
        optimizer.zero_grad()
        loss = (model(batch(seed)) - 0.3).square().mean() * 100
        loss.backward()
        losses.append(float(loss.detach()))
        assert recorder.due()
        recorder.observe_gradients({"box": loss.detach() / 4, "cls": loss.detach() * 3 / 4})  # ultralytics' loss items
        optimizer.step()
        recorder.observe_update()
    epoch = recorder.end_epoch(1, loss=sum(losses) / 3)
    assert epoch.course["loss_first"] == pytest.approx(losses[0], rel=1e-5)
    assert epoch.course["loss_max"] == pytest.approx(max(losses), rel=1e-5)
    found = recorder.findings[1]
    diverging = next(f for f in found if f.cause == "diverging")
    assert diverging.severity == "error" and "in the first epoch" in diverging.message
    assert diverging.evidence["optimizer"] == "Adam" and diverging.evidence["lr"] == 0.5
    assert recorder.tags()["gradients.health"] == "error"

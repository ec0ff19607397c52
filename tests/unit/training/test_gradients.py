"""Per-layer gradient statistics on a tiny model: values checked against independent computations."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from pipeline.training.gradients import (
    EpochGradients,
    GradientMonitor,
    ParameterGroups,
    gradient_stats,
    group_name,
    metric_key,
)
from tests.helpers.tiny_network import Tiny, batch, loss_of


def layer_params(model: nn.Module, layer: str) -> list[nn.Parameter]:
    return [p for n, p in model.named_parameters() if n.rpartition(".")[0] == layer]


def group_norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors))


@pytest.mark.parametrize(
    ("grouping", "expected"),
    [
        ("parameter", "model.23.cv2.0.0.conv.weight"),
        ("layer", "model.23.cv2.0.0.conv"),
        ("block", "model.23"),
    ],
)
def test_group_names(grouping: str, expected: str) -> None:
    assert group_name("model.23.cv2.0.0.conv.weight", grouping) == expected


def test_block_of_a_name_without_numbers_is_its_first_part() -> None:
    assert group_name("head.proj.weight", "block") == "head"
    assert group_name("bias", "layer") == "bias"


def test_metric_keys_name_stat_reduction_and_layer() -> None:
    assert metric_key("grad_norm", "mean", "model.2.cv1.conv") == "grad_norm.model.2.cv1.conv"
    assert metric_key("grad_norm", "max", "model.2.cv1.conv") == "grad_norm_max.model.2.cv1.conv"
    assert metric_key("update_ratio", "last", "model.0.bn") == "update_ratio_last.model.0.bn"


def test_groups_follow_model_order_and_skip_frozen_parameters() -> None:
    model = Tiny()
    model.model[0].bn.weight.requires_grad_(False)
    layers = ParameterGroups.of(model, "layer")
    assert layers.names == ["model.0.conv", "model.0.bn", "model.1.conv", "model.1.bn", "model.2"]
    assert layers.numel.tolist() == [3 * 4 * 9, 4, 4 * 4 * 9, 8, 4 * 2 + 2]
    assert ParameterGroups.of(model, "block").names == ["model.0", "model.1", "model.2"]
    assert len(ParameterGroups.of(model, "parameter")) == sum(p.requires_grad for p in model.parameters())


def test_stats_equal_norms_computed_from_each_grad() -> None:
    torch.manual_seed(0)
    model = Tiny()
    loss_of(model, batch()).backward()
    groups = ParameterGroups.of(model, "layer")
    stats = gradient_stats([p.grad for p in groups.params], groups)
    for i, layer in enumerate(groups.names):
        grads = [p.grad for p in layer_params(model, layer)]
        assert float(stats.grad_norm[i]) == pytest.approx(group_norm(grads), rel=1e-5, abs=1e-7)
        assert float(stats.grad_max[i]) == pytest.approx(max(float(g.abs().max()) for g in grads), rel=1e-6)
        assert float(stats.grad_nonfinite[i]) == 0.0
    reference = torch.nn.utils.get_total_norm([p.grad for p in model.parameters()])
    assert float(stats.total_norm) == pytest.approx(float(reference), rel=1e-6)


@pytest.mark.parametrize("device_like", [False, True], ids=["cpu", "as-if-on-a-device"])
def test_nonfinite_fraction_counts_nan_and_inf(device_like: bool, monkeypatch) -> None:
    if device_like:
        monkeypatch.setattr("pipeline.training.gradients.on_host", lambda tensor: False)
    model = Tiny()
    loss_of(model, batch()).backward()
    conv = model.model[1].conv.weight
    conv.grad.view(-1)[:3] = torch.tensor([math.inf, -math.inf, math.nan])
    groups = ParameterGroups.of(model, "layer")
    stats = gradient_stats([p.grad for p in groups.params], groups)
    fractions = dict(zip(groups.names, stats.grad_nonfinite.tolist(), strict=True))
    assert fractions["model.1.conv"] == pytest.approx(3 / conv.numel())
    assert all(f == 0.0 for name, f in fractions.items() if name != "model.1.conv")
    assert not math.isfinite(float(stats.total_norm))


def run_step(model: nn.Module, monitor: GradientMonitor, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> dict:
    """One step the way the trainer takes it; returns what an independent observer saw."""
    optimizer.zero_grad()
    loss_of(model, x).backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    assert monitor.due()
    monitor.observe_gradients()
    optimizer.step()
    monitor.observe_update()
    return {"before": before, "grads": grads, "after": {n: p.detach().clone() for n, p in model.named_parameters()}}


def test_epoch_reduction_is_mean_max_and_last_of_the_steps() -> None:
    torch.manual_seed(1)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = GradientMonitor(model, "layer")
    seen = [run_step(model, monitor, optimizer, batch(seed)) for seed in range(3)]
    epoch = monitor.end_epoch(epoch=1)
    assert epoch is not None and epoch.epoch == 1 and epoch.totals["grad_steps"] == 3.0

    for i, layer in enumerate(epoch.groups):
        names = [n for n, _ in model.named_parameters() if n.rpartition(".")[0] == layer]
        norms = [group_norm([s["grads"][n] for n in names]) for s in seen]
        ratios = [
            group_norm([s["after"][n] - s["before"][n] for n in names]) / group_norm([s["after"][n] for n in names])
            for s in seen
        ]
        values = epoch.values
        assert values["grad_norm"]["mean"][i] == pytest.approx(sum(norms) / 3, rel=1e-5)
        assert values["grad_norm"]["max"][i] == pytest.approx(max(norms), rel=1e-5)
        assert values["grad_norm"]["last"][i] == pytest.approx(norms[-1], rel=1e-5)
        assert values["weight_norm"]["last"][i] == pytest.approx(
            group_norm([seen[-1]["after"][n] for n in names]), rel=1e-5
        )
        assert values["update_ratio"]["mean"][i] == pytest.approx(sum(ratios) / 3, rel=1e-4)
        assert values["update_ratio"]["last"][i] == pytest.approx(ratios[-1], rel=1e-4)

    totals = [math.sqrt(sum(float(g.double().square().sum()) for g in s["grads"].values())) for s in seen]
    assert epoch.totals["grad_total_norm"] == pytest.approx(sum(totals) / 3, rel=1e-5)
    assert epoch.totals["grad_total_norm_max"] == pytest.approx(max(totals), rel=1e-5)
    assert epoch.totals["grad_clipped_fraction"] == pytest.approx(sum(t > 10.0 for t in totals) / 3)

    # The default, compact record: per block, gradient norm and update ratio, for each reduction asked for.
    metrics = epoch.metrics(["mean", "last"])
    assert epoch.parts == ["model.0", "model.1", "model.2"]
    assert len(metrics) == 2 * 2 * len(epoch.parts) + 6
    assert metrics["grad_norm.model.2"] == epoch.values["grad_norm"]["mean"][-1]  # a block of one layer
    assert "grad_norm_max.model.2" not in metrics and "grad_max.model.2" not in metrics
    # detail: layer, every statistic of every layer.
    layers = epoch.metrics(["mean", "last"], detail="layer")
    assert len(layers) == 2 * 5 * len(epoch.groups) + 6
    assert layers["grad_norm.model.2"] == epoch.values["grad_norm"]["mean"][-1]
    assert "grad_norm_max.model.2" not in layers

    monitor.reset()
    assert monitor.end_epoch(epoch=2) is None  # nothing sampled, nothing to log


@pytest.mark.parametrize("as_dict", [True, False], ids=["loss-items-dict", "loss-tensor"])
def test_the_course_keeps_the_first_steps_norm_and_loss_and_the_losss_peak_and_last(as_dict: bool) -> None:
    """What the diagnosis reads to judge an epoch against its own first batches (a blow-up inside epoch 1)."""
    torch.manual_seed(5)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = GradientMonitor(model, "layer")
    losses, norms = [3.0, 40.0, 12.0], []
    for seed, loss in enumerate(losses):
        optimizer.zero_grad()
        loss_of(model, batch(seed)).backward()
        monitor.due()
        items = {"box": torch.tensor(loss / 2), "cls": torch.tensor([loss / 2])} if as_dict else torch.tensor(loss)
        norms.append(float(monitor.observe_gradients(items)))
        optimizer.step()
        monitor.observe_update()
    epoch = monitor.end_epoch(1)
    assert epoch.course == pytest.approx(
        {"norm_first": norms[0], "loss_first": 3.0, "loss_max": 40.0, "loss_last": 12.0}
    )
    assert EpochGradients.from_json(epoch.to_json()).course == epoch.course  # history.jsonl: a resume reads it back
    assert len(epoch.metrics()) == 2 * 3 * len(epoch.parts) + 6  # not sent to MLflow
    monitor.reset()  # a new epoch starts a new course; a step without a loss leaves it NaN
    optimizer.zero_grad()
    loss_of(model, batch(9)).backward()
    monitor.due()
    monitor.observe_gradients()
    optimizer.step()
    monitor.observe_update()
    bare = monitor.end_epoch(2).course
    assert math.isfinite(bare["norm_first"]) and all(
        math.isnan(bare[k]) for k in ("loss_first", "loss_max", "loss_last")
    )


def test_every_n_samples_every_nth_step() -> None:
    monitor = GradientMonitor(Tiny(), "layer", every=3)
    assert [monitor.due() for _ in range(7)] == [True, False, False, True, False, False, True]


def test_finite_differences_agree_with_the_gradient_the_monitor_saw() -> None:
    """The chain rule, checked: central differences of the loss in float64 against the recorded norm and max."""
    torch.manual_seed(2)
    model = Tiny().double()
    x = batch().double()
    model.eval()  # batch-norm with running stats: the loss is a plain function of the weights
    loss_of(model, x).backward()
    monitor = GradientMonitor(model, "layer")
    monitor.due()
    monitor.observe_gradients()
    monitor.observe_update()
    epoch = monitor.end_epoch(1)

    layer, eps = model.model[2], 1e-6  # the 1x1 head conv: 10 numbers
    numeric = []
    with torch.no_grad():
        for p in (layer.weight, layer.bias):
            for j in range(p.numel()):
                original = p.view(-1)[j].item()
                p.view(-1)[j] = original + eps
                up = loss_of(model, x).item()
                p.view(-1)[j] = original - eps
                down = loss_of(model, x).item()
                p.view(-1)[j] = original
                numeric.append((up - down) / (2 * eps))
    i = epoch.groups.index("model.2")
    assert epoch.values["grad_norm"]["last"][i] == pytest.approx(math.sqrt(sum(g * g for g in numeric)), rel=1e-5)
    assert epoch.values["grad_max"]["last"][i] == pytest.approx(max(abs(g) for g in numeric), rel=1e-5)


def trainer_like(model: nn.Module, scale: float | None) -> SimpleNamespace:
    scaler = torch.amp.GradScaler("cpu", init_scale=scale, enabled=scale is not None)
    monitor = GradientMonitor(model, "layer")
    return SimpleNamespace(
        model=model,
        optimizer=torch.optim.SGD(model.parameters(), lr=0.01),
        scaler=scaler,
        gradients=monitor,
        ema=None,
        loss_items={"box": torch.tensor(1.5), "cls": torch.tensor(2.0), "dfl": torch.tensor(0.5)},  # ultralytics 8.4
    )


def test_the_trainer_step_records_unscaled_gradients_before_clipping() -> None:
    """The same step with a 2**12 GradScaler and without: the same recorded gradients and the same new weights."""
    from pipeline.training.trainer import CLIP_NORM, PipelineTrainer

    torch.manual_seed(3)
    plain_model = Tiny()
    scaled_model = Tiny()
    scaled_model.load_state_dict(plain_model.state_dict())
    x = batch()
    outcomes = []
    for model, scale in ((plain_model, None), (scaled_model, 2.0**12)):
        trainer = trainer_like(model, scale)
        trainer.scaler.scale(loss_of(model, x)).backward()
        PipelineTrainer.optimizer_step(trainer)  # the real method, on a stand-in holding what it uses
        outcomes.append(trainer.gradients.end_epoch(1))
    plain, scaled = outcomes
    for stat in ("grad_norm", "grad_max"):
        assert scaled.values[stat]["last"] == pytest.approx(plain.values[stat]["last"], rel=1e-5)
    assert scaled.totals["grad_total_norm"] == pytest.approx(plain.totals["grad_total_norm"], rel=1e-5)
    assert plain.totals["grad_total_norm"] > CLIP_NORM and plain.totals["grad_clipped_fraction"] == 1.0
    assert plain.course["loss_first"] == plain.course["loss_max"] == pytest.approx(4.0)  # the step's loss items
    assert plain.course["norm_first"] == pytest.approx(plain.totals["grad_total_norm"])
    for a, b in zip(plain_model.parameters(), scaled_model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_the_trainer_step_clips_like_ultralytics() -> None:
    """Recording must not change training: the weights after our step equal those after ultralytics' own step."""
    from ultralytics.engine.trainer import BaseTrainer

    from pipeline.training.trainer import PipelineTrainer

    torch.manual_seed(4)
    ours, theirs = Tiny(), Tiny()
    theirs.load_state_dict(ours.state_dict())
    x = batch()
    for model, step in ((ours, PipelineTrainer.optimizer_step), (theirs, BaseTrainer.optimizer_step)):
        trainer = trainer_like(model, None)
        trainer.device = torch.device("cpu")
        loss_of(model, x).backward()
        step(trainer)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class _HostTransfers(TorchFunctionMode):
    """Counts the calls that would wait for the device: .item(), .tolist(), .cpu(), bool(tensor), ..."""

    SYNCING = {"item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "nonzero"}

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.SYNCING:
            self.calls.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("device_like", [False, True], ids=["cpu", "as-if-on-a-device"])
def test_steps_never_wait_for_the_device_and_an_epoch_makes_one_transfer(device_like: bool, monkeypatch) -> None:
    """On a GPU nothing is read back during a step; on the CPU only the free 'any non-finite?' flag is."""
    if device_like:
        monkeypatch.setattr("pipeline.training.gradients.on_host", lambda tensor: False)
    model = Tiny()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    monitor = GradientMonitor(model, "layer")
    for seed in range(2):
        optimizer.zero_grad()
        loss_of(model, batch(seed)).backward()
        loss = {"box": torch.tensor(1.0), "cls": torch.tensor(2.0)}  # the step's loss items, on the device
        with _HostTransfers() as watch:
            monitor.due()
            monitor.observe_gradients(loss)
        optimizer.step()
        with watch:
            monitor.observe_update()
        assert watch.calls == ([] if device_like else ["__bool__"])
    with _HostTransfers() as watch:
        monitor.end_epoch(1)
    assert watch.calls == ["cpu", "tolist"]  # one copy to the host, then reading it there

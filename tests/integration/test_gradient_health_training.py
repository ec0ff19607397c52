"""A real training whose gradients go non-finite in epoch 2 (an inf injected into one gradient)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.tracking.spool import Spool
from pipeline.training.errors import NonFiniteGradients
from pipeline.training.run import prepare_training, session_env
from tests.helpers.configs import tiny_config
from tests.helpers.tracking import metric_steps

pytestmark = pytest.mark.slow


def inject_inf_in_epoch_2(trainer) -> None:
    """At the first start of epoch 2, make the next gradient of model.0.conv carry an inf (once: a redo is clean)."""
    if trainer.epoch != 1 or getattr(trainer, "injected", False):
        return
    trainer.injected = True
    from ultralytics.utils.torch_utils import unwrap_model

    weight = unwrap_model(trainer.model).model[0].conv.weight

    def poison(grad: torch.Tensor) -> torch.Tensor:
        handle.remove()
        grad = grad.clone()
        grad[(0,) * grad.dim()] = math.inf  # any layout: a CPU training runs NHWC
        return grad

    handle = weight.register_hook(poison)


def train_with_injection(config) -> tuple[Path, str]:
    from pipeline.training.trainer import PipelineTrainer

    prepared = prepare_training(config)
    with session_env(prepared.session_file):
        trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
        trainer.add_callback("on_train_epoch_start", inject_inf_in_epoch_2)
        trainer.train()
    return prepared.session.save_dir, Spool(prepared.session.spool_dir).state["run_id"]


def read_events(save_dir: Path) -> list[dict]:
    """The findings above info (a healthy tiny training has info ones: the DFL decoder is frozen, idle levels)."""
    lines = (save_dir / "gradients" / "events.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["severity"] != "info"]


def test_stop_on_nonfinite_stops_with_the_message_and_a_usable_checkpoint(synth_data: Path, tmp_path: Path) -> None:
    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 3},
        gradients={"stop_on_nonfinite": True},
        tracking={"system_metrics": False},
    )
    with pytest.raises(NonFiniteGradients) as stopped:
        train_with_injection(config)
    message = str(stopped.value)
    assert "\n" not in message and message.startswith("gradients: nonfinite in epoch 2:")
    assert "model.0.conv" in message and "stop_on_nonfinite" in message
    save_dir = next((tmp_path / "runs").iterdir())
    last = save_dir / "weights" / "last.pt"
    assert f"the last good checkpoint is {last} (epoch 1)" in message

    checkpoint = torch.load(last, weights_only=False)
    assert checkpoint["epoch"] == 0  # epoch 1, 0-based: the poisoned epoch did not overwrite it
    assert all(torch.isfinite(v).all() for v in checkpoint["ema"].state_dict().values() if v.is_floating_point())
    from ultralytics import YOLO

    image = next((synth_data.parent / "images" / "val").glob("*.png"))
    assert YOLO(last).predict(str(image), imgsz=64, verbose=False)[0].boxes is not None  # usable

    events = read_events(save_dir)
    assert [(e["epoch"], e["cause"], e["severity"]) for e in events] == [(2, "nonfinite", "error")]
    assert "model.0.conv" in events[0]["layers"]

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = Spool(save_dir / "tracking").state["run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["gradients.health"] == "error" and "nonfinite" in run.data.tags["gradients.causes"].split(",")
    diagnosis = json.loads((save_dir / "gradients" / "diagnosis.json").read_text())
    assert [f["epoch"] for f in diagnosis["findings"] if f["cause"] == "nonfinite"] == [2]
    steps = {step for key, step in metric_steps(tmp_path / "mlflow.db", run_id) if key.startswith("grad_norm.")}
    assert steps == {1}  # only epochs a checkpoint covers are in the run's metrics
    artifacts = {Path(a.path).name for a in client.list_artifacts(run_id, "gradients")}
    assert {"events.jsonl", "report.json", "heatmaps.png", "diagnosis.json"} <= artifacts
    report = json.loads((save_dir / "gradients" / "report.json").read_text())
    assert report["epochs"] == [1, 2] and report["health"] == "error"  # the evidence stays in the report
    assert "nonfinite" in report["causes"]


def test_without_the_option_the_event_is_raised_and_training_recovers(synth_data: Path, tmp_path: Path) -> None:
    config = tiny_config(synth_data, tmp_path / "runs", train={"epochs": 3}, tracking={"system_metrics": False})
    save_dir, run_id = train_with_injection(config)  # ultralytics reloads last.pt and redoes epoch 2

    events = read_events(save_dir)
    assert [(e["epoch"], e["cause"]) for e in events] == [(2, "nonfinite")]  # nothing else above info
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["gradients.health"] == "error"
    assert "nonfinite" in run.data.tags["gradients.causes"].split(",")  # the redo does not erase what happened
    counts = metric_steps(tmp_path / "mlflow.db", run_id)
    grad_keys = {key for key, _ in counts if key.startswith("grad_norm.")}
    assert grad_keys and all(counts[(key, step)] == 1 for key in grad_keys for step in (1, 2, 3))
    # The redone epoch 2 is the one in the run: finite.
    assert all(math.isfinite(m.value) for m in client.get_metric_history(run_id, "grad_total_norm"))

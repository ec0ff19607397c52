"""Ultralytics' multi-GPU relaunch rebuilds the trainer in new processes from a generated file; ours must come back
with every hook. The generated file is run here as one process (no GPU needed) and must record the run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from pipeline.tracking.spool import Spool
from pipeline.training.run import prepare_training, session_env
from tests.helpers.commands import strip_ansi
from tests.helpers.configs import tiny_config
from tests.helpers.tracking import (
    EPOCH_METRICS,
    assert_epochs_exactly_once,
    assert_gradients_recorded,
    per_class_keys,
)

pytestmark = pytest.mark.slow


def test_the_relaunch_file_rebuilds_the_tracked_trainer(synth_data: Path, tmp_path: Path) -> None:
    from ultralytics.utils.dist import generate_ddp_file

    from pipeline.training.trainer import SESSION_ENV, PipelineTrainer

    config = tiny_config(
        synth_data,
        tmp_path / "runs",
        train={"epochs": 1},
        augment={"albumentations": [{"transform": "RandomRotate90", "p": 0.5}], "symmetry": 0.5},
        tracking={"system_metrics": False},
    )
    prepared = prepare_training(config)
    with session_env(prepared.session_file):
        trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
    assert trainer.session.config.gradients.enabled
    script = Path(generate_ddp_file(trainer))
    try:
        assert "PipelineTrainer" not in script.read_text()  # the class travels pickled, by reference
        state = torch.load(script.with_suffix(".pt"), weights_only=False)
        (flip,) = state["args"]["augmentations"]  # the albumentations pipeline travels in the arguments
        assert flip["transform"]["__class_fullname__"] == "pipeline.fast_transforms.RandomRotate90"
        env = {**os.environ, SESSION_ENV: str(prepared.session_file)}
        relaunched = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, env=env)
    finally:
        script.unlink(missing_ok=True)
        script.with_suffix(".pt").unlink(missing_ok=True)
    assert relaunched.returncode == 0, relaunched.stdout[-2000:] + relaunched.stderr[-2000:]
    # The worker found our transform class by name and rebuilt the symmetry step from the session.
    assert "albumentations: RandomRotate90(p=0.5)" in strip_ansi(relaunched.stdout + relaunched.stderr)
    assert "symmetry: RandomSquareSymmetry(p=0.5)" in strip_ansi(relaunched.stdout + relaunched.stderr)

    run_id = Spool(prepared.session.spool_dir).state["run_id"]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert_epochs_exactly_once(client, run_id, EPOCH_METRICS | per_class_keys(), epochs=1)
    assert "results.csv" in {a.path for a in client.list_artifacts(run_id)}
    # The gradient instrumentation came back with the trainer: every layer, every epoch, heatmaps and report.
    save_dir = prepared.session.save_dir
    assert_gradients_recorded(client, tmp_path / "mlflow.db", run_id, save_dir, epochs=1)

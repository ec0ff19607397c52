"""A CPU training runs its convolutions in channels_last (NHWC), and saves its checkpoints in the standard layout.

Ultralytics keeps a CPU model NCHW; oneDNN trains NHWC faster on an AVX-512 CPU. The checkpoint must still be
NCHW-contiguous: ultralytics' layer fusion reshapes weights with ``.view``, which fails on NHWC strides.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import torch

from pipeline.checkpoints import read_checkpoint
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow


def _conv_weights(network: torch.nn.Module) -> list[torch.Tensor]:
    return [p for p in network.parameters() if p.dim() == 4]


def test_a_cpu_training_trains_nhwc_and_saves_nchw(synth_data: Path, tmp_path: Path) -> None:
    from pipeline.training.run import prepare_training, session_env
    from pipeline.training.trainer import PipelineTrainer

    config = tiny_config(synth_data, tmp_path / "runs", train={"epochs": 1, "name": "layout"})
    seen: dict[str, Any] = {}

    def at_start(trainer: Any) -> None:  # after ultralytics' set-up: model, EMA and optimizer are in place
        seen["model"] = [w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(trainer.model)]
        seen["ema"] = [w.is_contiguous(memory_format=torch.channels_last) for w in _conv_weights(trainer.ema.ema)]

    with ExitStack() as held:
        prepared = prepare_training(config, held)
        with session_env(prepared.session_file):
            trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
            trainer.add_callback("on_train_start", at_start)
            trainer.train()

    assert len(seen["model"]) > 50 and all(seen["model"]) and all(seen["ema"])
    saved = read_checkpoint(Path(trainer.best), "test")["model"]
    assert all(w.is_contiguous() for w in _conv_weights(saved))
    fused = saved.float().fuse()  # what predict does on load: fails on NHWC-strided weights
    out = fused.eval()(torch.zeros(1, 3, 64, 64))
    assert out[0].shape[1] == 4 + 3  # boxes and the synthetic data's three classes

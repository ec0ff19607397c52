"""pipeline/checkpoints.py: checkpoints load safely by default; a code-running pickle is refused in one line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pipeline.checkpoints import (
    TRUST_ENV,
    CheckpointError,
    add_trust_option,
    file_sha256,
    read_checkpoint,
    trained_imgsz,
    trusted,
)
from tests.helpers.payloads import write_payload


@pytest.fixture
def untrusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRUST_ENV, raising=False)


@pytest.fixture(scope="module")
def real_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real (untrained) YOLO checkpoint as ultralytics saves one: model, EMA, optimizer state, train args."""
    import torch

    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel("yolo11n.yaml", nc=3, verbose=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    path = tmp_path_factory.mktemp("real") / "last.pt"
    checkpoint = {
        "epoch": 0,
        "best_fitness": 0.1,
        "model": None,
        "ema": model.half(),
        "updates": 1,
        "optimizer": optimizer.state_dict(),
        "train_args": {"imgsz": 64, "epochs": 2},
        "train_metrics": {"metrics/mAP50(B)": 0.0},
        "date": "2026-01-01T00:00:00",
    }
    torch.save(checkpoint, path)
    return path


def test_a_payload_is_refused_in_one_line_naming_the_file_and_the_opt_out(untrusted: None, tmp_path: Path) -> None:
    marker = tmp_path / "ran.txt"
    evil = write_payload(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(evil, "model.weights")
    message = str(info.value)
    assert "\n" not in message and str(evil) in message and TRUST_ENV in message and "refused" in message
    assert not marker.exists()


def test_the_same_payload_runs_when_the_user_trusts_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The positive control: the refusal above is the policy's doing, not a payload that never worked."""
    marker = tmp_path / "ran.txt"
    evil = write_payload(tmp_path / "evil.pt", marker)
    monkeypatch.setenv(TRUST_ENV, "1")
    with pytest.raises(CheckpointError, match="not a YOLO checkpoint"):  # os.system's 0 is no model
        read_checkpoint(evil)
    assert marker.read_text().strip() == "ran"


def test_checkpoints_as_ultralytics_writes_them_load_safely(untrusted: None, real_checkpoint: Path) -> None:
    checkpoint = read_checkpoint(real_checkpoint, "resume:")
    assert checkpoint["epoch"] == 0 and checkpoint["optimizer"]["param_groups"]
    assert checkpoint["train_args"]["imgsz"] == 64 and checkpoint["ema"].yaml["nc"] == 3
    from ultralytics import YOLO

    assert YOLO(str(real_checkpoint)).names == {0: "0", 1: "1", 2: "2"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a PyTorch checkpoint"),
        (b"model: yolo11n\nepochs: 3\n", "not a PyTorch checkpoint"),
        (b"PK\x03\x04 truncated zip", "not a PyTorch checkpoint"),
    ],
)
def test_files_that_are_no_checkpoint(untrusted: None, tmp_path: Path, content: bytes, reason: str) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    assert reason in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_missing_file_and_a_folder(untrusted: None, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path / "gone.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        read_checkpoint(tmp_path)


def test_the_option_sets_the_opt_out_for_the_process(untrusted: None, monkeypatch: pytest.MonkeyPatch) -> None:
    parser = argparse.ArgumentParser()
    add_trust_option(parser)
    assert parser.parse_args([]).trust_checkpoint is False and not trusted()
    monkeypatch.setenv(TRUST_ENV, "")  # so that monkeypatch puts the variable back (unset) after the test
    assert parser.parse_args(["--trust-checkpoint"]).trust_checkpoint is True
    assert trusted()


def test_the_policy_follows_the_environment_in_a_process_that_loaded_ultralytics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    import ultralytics.nn.tasks as tasks

    monkeypatch.setenv(TRUST_ENV, "1")
    configure_ultralytics()
    assert tasks.SAFE_LOAD is False
    monkeypatch.delenv(TRUST_ENV)
    configure_ultralytics()
    assert tasks.SAFE_LOAD is True and os.environ["ULTRALYTICS_SAFE_LOAD"] == "1"


def test_the_identity_of_a_file_is_its_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.pt").write_bytes(b"one")
    (tmp_path / "b.pt").write_bytes(b"one")
    assert file_sha256(tmp_path / "a.pt") == file_sha256(tmp_path / "b.pt") != file_sha256(__file__)
    assert len(file_sha256(tmp_path / "a.pt")) == 64


def test_the_training_size_of_a_checkpoint() -> None:
    def yolo(ckpt: dict | None, overrides: dict) -> SimpleNamespace:
        return SimpleNamespace(ckpt=ckpt, overrides=overrides)

    assert trained_imgsz(yolo({"train_args": {"imgsz": 320}}, {"imgsz": 640})) == 320
    assert trained_imgsz(yolo({"train_args": None}, {"imgsz": 256})) == 256  # no train_args: what the model says
    assert trained_imgsz(yolo(None, {})) == 640

"""pipeline/train/weights.py: model.weights to something ultralytics can build, falling back offline."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pipeline.train.weights import ResolvedWeights, WeightsError, resolve_weights, weights_cache


@pytest.fixture
def network_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No network for the test (whatever the machine has): every lookup or connect fails at once and is recorded."""
    attempts: list[str] = []

    def no_lookup(host, *args, **kwargs):
        attempts.append(f"lookup {host}")
        raise socket.gaierror(socket.EAI_NONAME, "blocked by the test")

    def no_connect(self, address):
        attempts.append(f"connect {address}")
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", no_lookup)
    monkeypatch.setattr(socket.socket, "connect", no_connect)
    return attempts


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a real (untrained) YOLO checkpoint, as ultralytics saves one."""
    import torch

    from pipeline.yolo_env import configure_ultralytics

    configure_ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    path = tmp_path_factory.mktemp("checkpoint") / "c.pt"
    torch.save({"model": DetectionModel("yolo11n.yaml", nc=1, verbose=False).half(), "epoch": -1}, path)
    return path.read_bytes()


def weights_error(spec: str) -> str:
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_conftest_makes_us_offline() -> None:
    assert os.environ["YOLO_OFFLINE"] == "true"
    assert weights_cache() == Path(os.environ["YOLO_PIPELINE_WEIGHTS_DIR"])


def test_architecture_name() -> None:
    assert resolve_weights("yolo11n.yaml") == ResolvedWeights("yolo11n.yaml", pretrained=False)


def test_architecture_name_with_spaces() -> None:
    assert resolve_weights("  yolo11n.yaml ").model == "yolo11n.yaml"


def test_architecture_file(tmp_path: Path) -> None:
    import ultralytics

    shipped = Path(ultralytics.__file__).parent / "cfg" / "models" / "11" / "yolo11.yaml"
    local = tmp_path / "my_arch.yaml"
    local.write_text(shipped.read_text())
    resolved = resolve_weights(str(local))
    assert resolved == ResolvedWeights(str(local.resolve()), pretrained=False)


def test_unknown_architecture() -> None:
    assert weights_error("nonexistent_arch.yaml") == (
        "model.weights: nonexistent_arch.yaml: no such architecture file or ultralytics model YAML"
    )


def test_local_checkpoint_absolute_path(tmp_path: Path, checkpoint: bytes) -> None:
    (tmp_path / "best.pt").write_bytes(checkpoint)
    resolved = resolve_weights("best.pt")  # relative to the working folder, which is tmp_path
    assert resolved == ResolvedWeights(str((tmp_path / "best.pt").resolve()), pretrained=True)
    assert Path(resolved.model).is_absolute()
    assert resolved.note == ""


def test_local_checkpoint_in_a_folder(tmp_path: Path, checkpoint: bytes) -> None:
    path = tmp_path / "runs" / "w" / "last.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(checkpoint)
    assert resolve_weights(str(path)) == ResolvedWeights(str(path.resolve()), pretrained=True)


def test_missing_checkpoint_in_a_folder() -> None:
    assert weights_error("missing/dir/x.pt") == "model.weights: missing/dir/x.pt: no such file"


def test_cached_checkpoint_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checkpoint: bytes) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "yolo11n.pt").write_bytes(checkpoint)
    monkeypatch.setenv("YOLO_PIPELINE_WEIGHTS_DIR", str(cache))
    assert resolve_weights("yolo11n.pt") == ResolvedWeights(str(cache / "yolo11n.pt"), pretrained=True)


def test_offline_release_name_falls_back_to_its_architecture(network_attempts: list[str]) -> None:
    resolved = resolve_weights("yolo11n.pt")
    assert resolved.model == "yolo11n.yaml"
    assert resolved.pretrained is False
    assert "yolo11n.pt" in resolved.note and "yolo11n.yaml" in resolved.note
    assert resolved.note.startswith("model.weights: cannot download yolo11n.pt (")
    assert resolved.note.endswith("training from the architecture yolo11n.yaml instead (no pretrained weights)")
    assert "\n" not in resolved.note
    assert not (weights_cache() / "yolo11n.pt").exists()


def test_fallback_logs_the_note(network_attempts: list[str], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="pipeline.train"):
        resolved = resolve_weights("yolo11n.pt")
    assert resolved.note in caplog.messages


def test_unknown_release_name(network_attempts: list[str]) -> None:
    message = weights_error("nonexistent_model.pt")
    assert message.startswith("model.weights: nonexistent_model.pt: cannot download (")
    assert message.endswith("and no nonexistent_model.yaml to fall back to")


@pytest.mark.parametrize("spec", ["model.onnx", "yolo11n", "weights.pth"])
def test_other_formats(spec: str) -> None:
    assert weights_error(spec) == f"model.weights: {spec}: expected a .pt checkpoint or an architecture .yaml"


@pytest.mark.parametrize("spec", ["yolo11n.pt", "nonexistent_model.pt"])
def test_offline_means_no_network_attempt(network_attempts: list[str], spec: str) -> None:
    try:
        resolve_weights(spec)
    except WeightsError:
        pass
    assert network_attempts == []

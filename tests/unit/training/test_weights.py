"""pipeline/training/weights.py: model.weights to something ultralytics can build, falling back offline."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from pipeline.training.weights import ResolvedWeights, WeightsError, resolve_weights, weights_cache


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
    with caplog.at_level("WARNING", logger="pipeline.training"):
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


# --- models:/ and runs:/ : a model from MLflow to fine-tune ---------------------------------------------------------


@pytest.fixture
def dead_server() -> str:
    """An MLflow URI on a local port nothing listens on: connections are refused at once."""
    import pipeline.tracking.registry  # noqa: F401 - mlflow's import (seconds, once) is setup, not the test
    from tests.helpers.mlflow_server import free_port

    return f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize("spec", ["models:/defects@champion", "models:/defects/3", "runs:/0123abcd/model"])
def test_mlflow_model_on_a_server_that_does_not_answer(dead_server: str, spec: str) -> None:
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec, dead_server)
    message = str(info.value)
    assert message.startswith(f"model.weights: {spec}: MLflow server {dead_server} does not answer (")
    assert "\n" not in message and message.count(spec) == 1


def test_mlflow_model_in_a_store_that_is_not_there(tmp_path: Path) -> None:
    database = tmp_path / "none" / "mlflow.db"
    message = weights_error_at("models:/defects@champion", f"sqlite:///{database}")
    assert message == f"model.weights: models:/defects@champion: no MLflow store at {database} " + (
        "(give --tracking-uri or set MLFLOW_TRACKING_URI)"
    )
    assert not database.parent.exists()  # a lookup creates no store


def test_mlflow_model_uses_the_default_store(tmp_path: Path) -> None:
    """An empty tracking URI is the training's own default: the SQLite file in the working folder (tmp_path)."""
    message = weights_error_at("models:/defects@champion", "")
    assert message.startswith(f"model.weights: models:/defects@champion: no MLflow store at {tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()


def test_the_config_names_the_store_before_any_folder_is_made(tmp_path: Path, dead_server: str) -> None:
    from pipeline.config import build_config
    from pipeline.training.run import prepare_training

    config = build_config(
        {
            "data": {"path": str(tmp_path / "data.yaml")},
            "model": {"weights": "models:/defects@champion"},
            "train": {"project": str(tmp_path / "runs")},
            "tracking": {"uri": dead_server},
        },
        "train.yaml",
    )
    with pytest.raises(WeightsError) as info:
        prepare_training(config)
    assert str(info.value).startswith(
        f"train.yaml: model.weights: models:/defects@champion: MLflow server {dead_server}"
    )
    assert not (tmp_path / "runs").exists()


def weights_error_at(spec: str, tracking_uri: str) -> str:
    with pytest.raises(WeightsError) as info:
        resolve_weights(spec, tracking_uri)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_parent_lineage_and_tags() -> None:
    from pipeline.training.weights import Parent

    alias = Parent("models:/defects@champion", "models:/defects/3", "3", "abc123", ("scratch", "pit"))
    assert alias.lineage() == "fine-tuned from models:/defects@champion (version 3, run abc123)"
    assert alias.tags() == {
        "pipeline.parent_model": "models:/defects@champion",
        "pipeline.parent_model_version": "models:/defects/3",
        "pipeline.parent_run": "abc123",
    }
    run = Parent("runs:/abc123/model", "runs:/abc123/model", None, "abc123", ())
    assert run.lineage() == "fine-tuned from runs:/abc123/model (run abc123)"
    assert run.tags() == {"pipeline.parent_model": "runs:/abc123/model", "pipeline.parent_run": "abc123"}


PARENT = ("scratch", "pit", "patch")


@pytest.mark.parametrize("data", [PARENT, ("Scratch", " pit", "PATCH")])
def test_same_classes_need_no_note(data: tuple[str, ...]) -> None:
    from pipeline.training.weights import class_change_note

    assert class_change_note(PARENT, data) == ""


def test_fewer_classes_some_by_name() -> None:
    from pipeline.training.weights import class_change_note

    assert class_change_note(PARENT, ["scratch", "dent"]) == (
        "model.weights: the parent has 3 classes [scratch, pit, patch], the data 2 [scratch, dent]: "
        "[scratch] start from the parent's class of the same name, [dent] fresh "
        "(ultralytics maps the class layer by name and transfers every other layer)"
    )


def test_reordered_classes_are_mapped_by_name() -> None:
    from pipeline.training.weights import class_change_note

    note = class_change_note(PARENT, ["patch", "scratch", "pit"])
    assert note.endswith(
        ": [patch, scratch, pit] start from the parent's class of the same name "
        "(ultralytics maps the class layer by name and transfers every other layer)"
    )


def test_no_class_in_common_starts_the_class_layer_fresh() -> None:
    from pipeline.training.weights import class_change_note

    assert class_change_note(PARENT, ["crack", "dent"]) == (
        "model.weights: the parent has 3 classes [scratch, pit, patch], the data 2 [crack, dent]: "
        "the detection head's class layer starts fresh (ultralytics transfers every other layer)"
    )


def test_same_count_no_name_in_common_keeps_the_layer_by_index() -> None:
    from pipeline.training.weights import class_change_note

    note = class_change_note(PARENT, ["a", "b", "c"])
    assert note.endswith(
        ": no name in common, so ultralytics keeps the parent's class layer in index order "
        "(a from scratch, b from pit, c from patch); every other layer transfers"
    )


def test_a_long_class_list_is_shortened() -> None:
    from pipeline.training.weights import class_change_note

    note = class_change_note([f"c{i}" for i in range(80)], ["c1", "x"])
    assert "the parent has 80 classes [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, ... 70 more]" in note
    assert "\n" not in note

"""Weights and config mistakes end as one line naming the file and the field, before anything is made."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.config import ConfigError, build_config, load_config


def write_config(path: Path, data_yaml: Path | str, **sections: dict) -> Path:
    raw: dict[str, dict] = {
        "data": {"path": str(data_yaml)},
        "train": {"epochs": 1, "imgsz": 64, "device": "cpu", "workers": 0, "project": "runs"},
        "tracking": {"enabled": False},
    }
    for section, keys in sections.items():
        raw.setdefault(section, {}).update(keys)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def refused(args: list[str], capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    """Run the CLI: exit 2, one line on stderr holding every ``expected`` piece, and no training folder made."""
    assert main(args) == 2
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert message.startswith("error: ") and "\n" not in message, captured.err
    assert "Traceback" not in captured.out + captured.err
    for piece in expected:
        assert piece in message, message
    runs = Path("runs")
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())
    return message


def test_a_text_file_named_pt_as_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "model.pt").write_text("this is not a checkpoint\n", encoding="utf-8")
    config = write_config(tmp_path / "c.yaml", "data.yaml", model={"weights": str(tmp_path / "model.pt")})
    refused(["train", str(config)], capsys, "c.yaml", "model.weights", "model.pt")


def test_a_pickle_that_runs_code_is_refused_as_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"model": Payload()}))
    config = write_config(tmp_path / "c.yaml", "data.yaml", model={"weights": str(tmp_path / "evil.pt")})
    refused(["train", str(config)], capsys, "model.weights", "evil.pt")
    assert not marker.exists()


def test_a_yaml_that_is_no_architecture_as_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.yaml").write_text("shopping: [milk, eggs]\n", encoding="utf-8")
    config = write_config(tmp_path / "c.yaml", "data.yaml", model={"weights": str(tmp_path / "notes.yaml")})
    refused(["train", str(config)], capsys, "c.yaml", "model.weights", "notes.yaml", "not a model architecture")


@pytest.mark.parametrize("device", ["7", "0", "0,1"])
def test_a_gpu_this_machine_lacks(device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available() and int(device.split(",")[-1]) < torch.cuda.device_count():
        pytest.skip("this machine has that GPU")
    config = write_config(tmp_path / "c.yaml", "data.yaml")
    refused(["train", str(config), f"train.device={device}"], capsys, "c.yaml", "train.device", device)


def test_an_empty_config_asks_for_data_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty.yaml").write_text("", encoding="utf-8")
    message = refused(["train", str(tmp_path / "empty.yaml")], capsys, "empty.yaml", "data.path", "not set")
    assert f"{tmp_path}:" not in message.replace(str(tmp_path / "empty.yaml"), "")  # not the config's folder


def test_project_under_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("x", encoding="utf-8")
    config = write_config(tmp_path / "c.yaml", "data.yaml", train={"project": str(tmp_path / "afile" / "runs")})
    refused(["train", str(config)], capsys, "c.yaml", "train.project", "is a file")


def test_project_in_a_read_only_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("permissions do not bind this user (root)")
        config = write_config(tmp_path / "c.yaml", "data.yaml", train={"project": str(locked / "runs")})
        refused(["train", str(config)], capsys, "c.yaml", "train.project", "not writable")
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize(
    "override", ["train.epochs=true", "train.lr0=false", "augment.mosaic=true", "model.freeze=true", "train.batch=yes"]
)
def test_a_bool_where_a_number_is_expected(override: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "c.yaml", "data.yaml")
    refused(["train", str(config), override], capsys, "c.yaml", override.split("=")[0], "must be a number")


def test_bools_in_a_number_list_and_a_transform_probability() -> None:
    with pytest.raises(ConfigError, match=r"model.freeze: must be numbers"):
        build_config({"model": {"freeze": [0, True]}})
    with pytest.raises(ConfigError, match=r"augment.albumentations.0.p: must be a number"):
        build_config({"augment": {"albumentations": [{"transform": "Blur", "p": True}]}})
    assert build_config({"train": {"amp": False, "epochs": 3}}).train.epochs == 3  # real bools and ints still pass


def test_duplicate_keys_name_the_file_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("data:\n  path: data.yaml\ntrain:\n  epochs: 50\n  imgsz: 64\n  epochs: 5\n", encoding="utf-8")
    refused(["train", str(path)], capsys, "dup.yaml", "line 6", "duplicate key 'epochs'", "line 4")


def test_duplicate_sections_are_refused_too(tmp_path: Path) -> None:
    path = tmp_path / "dup.yaml"
    path.write_text("train: {epochs: 5}\ntrain: {epochs: 6}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"dup.yaml: line 2: duplicate key 'train'"):
        load_config(path)


def test_a_non_utf8_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("data:\n  name: Stahlplatte Größe\n".encode("latin-1"))
    refused(["train", str(path)], capsys, "latin1.yaml", "not UTF-8")


def test_a_utf8_bom_is_not_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "bom.yaml"
    path.write_bytes("\ufefftrain:\n  epochs: 4\n".encode())
    assert load_config(path).train.epochs == 4


def test_credentials_leave_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.setenv(name, "")  # so that the test's end puts back what was there before
        monkeypatch.delenv(name)
    config = build_config({"tracking": {"uri": "https://alice:s%40cret@mlflow.example:5000/x"}})
    assert config.tracking.uri == "https://mlflow.example:5000/x"
    assert "cret" not in str(config.to_dict()) and "alice" not in str(config.flat())
    import os

    assert (os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]) == ("alice", "s@cret")
    build_config({"tracking": {"uri": "https://tok123@host"}})
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "tok123"

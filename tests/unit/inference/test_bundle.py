"""Reading a bundle: every way its screen.json or network can be wrong is one line naming the file and the field."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from pipeline.checkpoints import file_sha256
from pipeline.inference.bundle import BundleError, BundleInfo, is_bundle, open_bundle, read_bundle
from pipeline.inference.screen import Screen


def _bundle(folder: Path, **changes: object) -> Path:
    folder.mkdir()
    (folder / "network.onnx").write_bytes(b"not really a network")
    info = BundleInfo("onnx", "fp32", "network.onnx", file_sha256(folder / "network.onnx"), ["pit", "scratch"], 64, 32)
    section = {**asdict(info), **changes}
    screen = Screen({"pit": 0.3, "default": 0.25}, "m.pt", "d.yaml", "val", "2026-12-06T00:00:00+00:00")
    document = {**json.loads(screen.to_json()), "bundle": section}
    (folder / "screen.json").write_text(json.dumps(document))
    return folder


def test_a_bundle_reads_back_what_export_wrote(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "b", tile={"size": 640, "overlap": 0.2}, training_image_side=2048)
    assert is_bundle(folder) and not is_bundle(tmp_path)
    opened = open_bundle(folder)
    assert opened.names == {0: "pit", 1: "scratch"}
    assert opened.trained_imgsz == 64 and opened.training_tile == (640, 0.2) and opened.training_image_side == 2048
    assert opened.screen.thresholds == {"pit": 0.3, "default": 0.25}
    assert opened.identity["model_sha256"] == file_sha256(folder / "network.onnx")


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"format": "something else"}, "no 'bundle' section"),
        ({"runtime": "tensorrt"}, "bundle.runtime must be one of onnx, openvino"),
        ({"names": []}, "bundle.names must be the list of class names"),
        ({"imgsz": "big"}, "bundle.imgsz and bundle.stride"),
        ({"network": "../elsewhere.onnx"}, "its network '../elsewhere.onnx' is missing"),
        ({"network_sha256": "0" * 64}, "not the network this bundle was exported with"),
        ({"unknown_field": 1, "network": "gone.onnx"}, "is missing"),
    ],
)
def test_a_wrong_bundle_is_one_line_naming_it(tmp_path: Path, changes: dict, words: str) -> None:
    folder = _bundle(tmp_path / "b", **changes)
    with pytest.raises(BundleError) as raised:
        read_bundle(folder)
    message = str(raised.value)
    assert "\n" not in message and words in message and str(folder) in message


def test_a_screen_file_that_is_not_json_is_one_line(tmp_path: Path) -> None:
    folder = _bundle(tmp_path / "b")
    (folder / "screen.json").write_text("{")
    with pytest.raises(BundleError, match="not JSON"):
        read_bundle(folder)

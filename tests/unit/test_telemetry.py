"""ONNX Runtime's and OpenVINO's usage telemetry, which report usage and write under the home folder at import,
are off wherever the project imports them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    "code",
    [
        "from pipeline.telemetry import block_telemetry; block_telemetry(); import onnxruntime, openvino",
        # the command line blocks it before any command runs (this one fails at once: no such model)
        "from pipeline.cli import main; assert main(['predict', '.', '--model', 'none.pt', '--out', 'o']) == 2",
    ],
)
def test_the_libraries_write_nothing_into_the_home_folder(code: str, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home)}
    env.pop("ORT_DISABLE_TELEMETRY", None)
    if "main(" in code:
        code += "; import onnxruntime, openvino"
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=True, cwd=tmp_path, capture_output=True)
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []

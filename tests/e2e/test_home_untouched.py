"""Ultralytics writes a settings file into the user's home on import; no command of ours lets it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_commands_leave_the_home_folder_alone(synth_data: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "YOLO_CONFIG_DIR"} | {"HOME": str(home)}
    config = tmp_path / "preview.yaml"
    config.write_text(f"data:\n  path: {synth_data}\ntrain:\n  imgsz: 64\naugment:\n  mosaic: 0.0\n")
    for command in (
        ["augment", "preview", str(config), "--out", str(tmp_path / "grid.png"), "--samples", "2"],
        ["data", "stats", str(synth_data)],
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", *command], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-1000:]
    assert (tmp_path / "grid.png").is_file()
    assert not (home / ".config" / "Ultralytics").exists()

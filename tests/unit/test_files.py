"""pipeline/files.py: the cache folder, and files written whole or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.files import CACHE_ENV, cache_dir, write_atomic


def test_the_cache_folder_is_the_variable_else_one_under_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, "")  # set but empty: unset
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "yolo-pipeline"


def test_a_file_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    assert write_atomic(target, "new") == target
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["state.json"]

"""pipeline/files.py: the cache folder, and files written whole or not at all."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from pipeline.files import CACHE_ENV, cache_dir, temporary_name, write_atomic


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


def test_temporary_names_are_per_process_and_thread(tmp_path: Path) -> None:
    target = tmp_path / "coco_results.json"
    mine = temporary_name(target)
    assert (
        mine.parent == tmp_path and mine.name.startswith(".coco_results.json.tmp-") and f"-{os.getpid()}-" in mine.name
    )
    other: list[Path] = []
    thread = threading.Thread(target=lambda: other.append(temporary_name(target)))
    thread.start()
    thread.join()
    assert other[0] != mine  # two writers never rename each other's temporary file


def test_a_failed_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    with pytest.raises(UnicodeEncodeError):
        write_atomic(target, "\udcff")  # a lone surrogate: not UTF-8
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]

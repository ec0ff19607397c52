"""The folder watch of `predict --watch` on real files: which images it hands out, when, in which order, once."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import NoReturn

import pytest
from watchdog.observers import Observer

from pipeline.inference import watch as watch_module
from pipeline.inference.errors import SourceError
from pipeline.inference.watch import FolderWatch

PIXELS = b"\x89PNG" + bytes(200)  # the watch never decodes: any bytes do


def write(path: Path, data: bytes = PIXELS, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def collect(watch: FolderWatch, want: int, within: float) -> list[Path]:
    """What the watch hands out until ``want`` paths came or ``within`` seconds passed."""
    got: list[Path] = []
    deadline = time.monotonic() + within
    while len(got) < want and (left := deadline - time.monotonic()) > 0:
        got += watch.ready(left)
    return got


def test_files_present_at_start_come_first_oldest_first_then_new_ones_as_they_arrive(tmp_path: Path) -> None:
    now = time.time()
    late = write(tmp_path / "a.png", mtime=now - 10)
    early = write(tmp_path / "b.png", mtime=now - 30)
    middle = write(tmp_path / "sub" / "c.jpg", mtime=now - 20)
    tie_first, tie_second = write(tmp_path / "d.png", mtime=now - 5), write(tmp_path / "e.png", mtime=now - 5)
    with FolderWatch(tmp_path, settle_s=0.05) as watch:
        assert watch.ready(2.0) == [early, middle, late, tie_first, tie_second]
        first, second = write(tmp_path / "z.png"), write(tmp_path / "y.png")
        assert collect(watch, 2, 2.0) == [first, second]
        assert watch.ready(0.2) == []


SLOW_WRITER = """
import sys, time
with open(sys.argv[1], "wb") as f:
    for _ in range(4):
        f.write(b"x" * 1000)
        f.flush()
        time.sleep(0.05)
    time.sleep(0.6)  # held open, unchanged, three times settle_s: only the close says it is done
    print(time.time(), flush=True)  # just before the close
"""


def test_a_file_written_slowly_by_another_process_comes_after_its_close_and_soon_after(tmp_path: Path) -> None:
    target = tmp_path / "slow.png"
    with FolderWatch(tmp_path, settle_s=0.2) as watch:
        writer = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
        try:
            got = collect(watch, 1, 5.0)
            handed_at, size = time.time(), target.stat().st_size
            closing_at = float(writer.communicate(timeout=5)[0])
        finally:
            writer.kill()
        assert got == [target]
        assert size == 4000  # never read half written
        assert closing_at <= handed_at < closing_at + 1.0
        assert watch.ready(0.3) == []


def test_a_temporary_file_renamed_to_an_image_comes_once_as_the_image(tmp_path: Path) -> None:
    with FolderWatch(tmp_path, settle_s=0.05, rescan_s=0.05) as watch:
        temporary = write(tmp_path / "part.tmp")
        time.sleep(0.1)  # the writer is slow to rename: rescans see the .tmp meanwhile
        temporary.rename(tmp_path / "part.png")
        assert collect(watch, 1, 2.0) == [tmp_path / "part.png"]
        assert watch.ready(0.4) == []  # nor again from the rescans, nor the .tmp


def test_polling_hands_out_a_file_only_once_it_stayed_unchanged_for_settle_s(tmp_path: Path) -> None:
    target = tmp_path / "polled.png"
    last_write: list[float] = []

    def slow_writer() -> None:
        with open(target, "wb") as out:
            for _ in range(5):
                last_write[:] = [time.monotonic()]
                out.write(b"x" * 1000)
                out.flush()
                time.sleep(0.1)  # gaps shorter than settle_s

    with FolderWatch(tmp_path, settle_s=0.3, rescan_s=0.05, use_events=False) as watch:
        writer = threading.Thread(target=slow_writer)
        writer.start()
        got = collect(watch, 1, 3.0)
        handed_at = time.monotonic()
        writer.join()
        assert got == [target]
        assert target.stat().st_size == 5000
        assert last_write[0] + 0.3 <= handed_at < last_write[0] + 1.5
        assert watch.ready(0.2) == []


@pytest.mark.parametrize("use_events", [True, False], ids=["events", "polling"])
def test_new_sub_folders_count_and_hidden_files_other_files_and_the_excluded_folder_do_not(
    tmp_path: Path, use_events: bool
) -> None:
    results = tmp_path / "results"
    present = write(tmp_path / "present.png")
    ignored = [tmp_path / ".hidden.png", tmp_path / "notes.txt", results / "old.png", tmp_path / ".cache" / "c.png"]
    for path in ignored:
        write(path)
    with FolderWatch(tmp_path, exclude=results, settle_s=0.05, rescan_s=0.05, use_events=use_events) as watch:
        assert watch.ready(2.0) == [present]
        deep = write(tmp_path / "new" / "deeper" / "a.PNG")
        for path in ignored:
            write(path.with_name(f"{path.stem}-2{path.suffix}"))  # .hidden-2.png is hidden too
        assert collect(watch, 1, 2.0) == [deep]
        late = write(tmp_path / "new" / "deeper" / "b.jpg")  # a file after the sub-folder's watch began
        assert collect(watch, 1, 2.0) == [late]
        assert watch.ready(0.3) == []


def test_each_path_comes_once_though_events_and_rescans_both_see_it_and_rewrites_do_not_count(tmp_path: Path) -> None:
    with FolderWatch(tmp_path, settle_s=0.02, rescan_s=0.02) as watch:
        made = []
        for i in range(20):
            made.append(write(tmp_path / f"{i:02d}.png"))
            time.sleep(0.01)
        got = collect(watch, 20, 3.0)
        write(made[0], PIXELS * 2)  # rewritten in place after it was handed out
        got += watch.ready(0.3)
    assert sorted(got) == made  # in the order found complete, which an event or a rescan may find first
    assert len(got) == len(set(got)) == 20


def test_a_file_gone_before_it_is_handed_out_is_not_handed_out(tmp_path: Path) -> None:
    with FolderWatch(tmp_path, settle_s=0.05) as watch:
        gone = write(tmp_path / "gone.png")  # complete at its close
        time.sleep(0.2)
        gone.unlink()
        kept = write(tmp_path / "kept.png")
        assert collect(watch, 1, 2.0) == [kept]
        assert watch.ready(0.2) == []


def test_polling_drops_a_file_that_vanishes_while_it_settles(tmp_path: Path) -> None:
    with FolderWatch(tmp_path, settle_s=0.4, rescan_s=0.05, use_events=False) as watch:
        gone = write(tmp_path / "gone.png")
        time.sleep(0.2)  # seen by a rescan, not settled yet
        gone.unlink()
        assert watch.ready(0.8) == []


@pytest.mark.parametrize("use_events", [True, False], ids=["events", "polling"])
def test_a_watched_folder_that_is_removed_raises_a_source_error_naming_it(tmp_path: Path, use_events: bool) -> None:
    folder = write(tmp_path / "line" / "a.png").parent
    with FolderWatch(folder, settle_s=0.02, rescan_s=0.05, use_events=use_events) as watch:
        assert watch.ready(2.0) == [folder / "a.png"]
        shutil.rmtree(folder)
        with pytest.raises(SourceError) as raised:
            collect(watch, 1, 2.0)
    assert str(folder) in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_folder_that_is_not_there_raises_at_start(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="missing"), FolderWatch(tmp_path / "missing"):
        pass


def test_a_folder_given_through_a_link_is_watched_and_its_files_are_spelled_through_the_link(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with FolderWatch(tmp_path / "link", settle_s=0.05, rescan_s=30.0) as watch:  # no rescan: only an event finds it
        write(real / "a.png")
        assert watch.ready(2.0) == [tmp_path / "link" / "a.png"]


def test_without_file_events_the_watch_warns_and_finds_files_by_rescans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class NoWatchesLeft(Observer):  # as when the system's inotify watches are all taken
        def schedule(self, *args: object, **kwargs: object) -> NoReturn:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(watch_module, "Observer", NoWatchesLeft)
    with caplog.at_level(logging.WARNING, "pipeline.inference"), FolderWatch(tmp_path, rescan_s=0.05) as watch:
        made = write(tmp_path / "a.png")
        assert collect(watch, 1, 2.0) == [made]
    assert "no file events" in caplog.text

"""The destination rule: only folders this tool made are replaced, and only once the new one is whole; and
one writer per folder: a second process is refused in one line naming the first, or waits."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.destinations import (
    MARKER,
    DestinationError,
    FolderBusy,
    build_then_swap,
    check_destination,
    check_name,
    check_replaceable,
    claim,
    command_context,
    holds_writer_lock,
    lock_file,
    marker_of,
    reserve,
    write_marker,
    writer_lock,
)

BAD_NAMES = [".", "..", "../../x", "a/b", "", "/abs", ".hidden", "-dash", "a\\b", "a b"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder (None) under ``root``, hidden ones included."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_names_are_refused_in_one_line(name: str) -> None:
    with pytest.raises(DestinationError) as caught:
        check_name(name, "--name")
    message = str(caught.value)
    assert message.startswith(f"--name {name!r}: ") and "\n" not in message


@pytest.mark.parametrize("name", ["parts", "neu-det", "v1.2_b", "0a"])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name


def test_absent_and_empty_folders_are_allowed(tmp_path: Path) -> None:
    assert check_destination(tmp_path / "new", "dataset") == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    assert check_destination(tmp_path / "empty", "dataset") == (tmp_path / "empty").resolve()


def test_a_user_folder_a_file_a_link_and_another_kind_are_refused(tmp_path: Path) -> None:
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(user)
    theirs = tmp_path / "theirs"
    write_marker(theirs, "compare")
    expected = {
        user: f"--out {user}: exists and was not made by yolo-pipeline; choose another --out or remove it yourself",
        tmp_path / "file": f"--out {tmp_path / 'file'}: is a file, not a folder; choose another --out",
        tmp_path / "link": f"--out {tmp_path / 'link'}: is a link, not a folder; choose another --out",
        theirs: f"--out {theirs}: was made by yolo-pipeline compare, not dataset; choose another --out",
    }
    for folder, message in expected.items():
        with pytest.raises(DestinationError) as caught:
            check_destination(folder, "dataset")
        assert str(caught.value) == message
    assert (user / "notes.txt").read_text() == "mine" and (tmp_path / "file").read_text() == "x"


def test_also_lets_a_command_add_to_another_kind_of_tool_folder(tmp_path: Path) -> None:
    write_marker(tmp_path / "ds", "dataset")
    with writer_lock(tmp_path / "ds", "data stats"):
        assert claim(tmp_path / "ds", "data stats", also=("dataset",)) == (tmp_path / "ds").resolve()
        assert marker_of(tmp_path / "ds")["kind"] == "dataset"  # the folder keeps what made it
        with pytest.raises(DestinationError, match="not data stats"):
            claim(tmp_path / "ds", "data stats")


def test_a_forged_or_broken_marker_is_no_marker(tmp_path: Path) -> None:
    (tmp_path / MARKER).write_text('{"kind": "dataset"}')  # no "tool"
    assert marker_of(tmp_path) is None
    (tmp_path / MARKER).write_text("{not json")
    assert marker_of(tmp_path) is None


def test_build_then_swap_replaces_only_when_the_block_finishes(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with build_then_swap(target, "dataset", note="first") as staging:
        (staging / "a.txt").write_text("one")
        assert not (staging / MARKER).exists()  # the marker comes last: a marked folder is a finished one
    assert (target / "a.txt").read_text() == "one" and marker_of(target)["note"] == "first"
    before = snapshot(target)
    with pytest.raises(RuntimeError), build_then_swap(target, "dataset") as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("halfway")
    assert snapshot(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging folder left behind
    with build_then_swap(target, "dataset") as staging:
        (staging / "b.txt").write_text("two")
    assert sorted(p.name for p in target.iterdir()) == [MARKER, "b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_current_folder_and_its_parents_are_never_replaced(tmp_path: Path) -> None:
    here = tmp_path / "ds"
    write_marker(here, "dataset")
    os.chdir(here)  # the autouse fixture restores the working folder
    for folder in (".", here, tmp_path):
        with pytest.raises(DestinationError):
            check_replaceable(folder, "dataset")
    assert marker_of(here) is not None


# ---- one writer per folder -------------------------------------------------------------------------------

HOLDER = """
import sys
from pipeline.destinations import command_context, writer_lock
with command_context(sys.argv[2]), writer_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin (or kills us)
"""
BUSY = re.compile(
    r"^(?P<folder>.+) is being written by (?P<command>.+) \(pid (?P<pid>\d+), started \d\d:\d\d\); (?P<rest>.+)$"
)


def hold(folder: Path, command: str = "predict") -> subprocess.Popen:
    """Another process holding ``folder`` (until its stdin is closed)."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), command], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def let_go(holder: subprocess.Popen) -> None:
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0


def test_a_second_writer_is_refused_in_one_line_naming_the_first(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    holder = hold(folder, "predict")
    try:
        with pytest.raises(FolderBusy) as caught, writer_lock(folder, "predict", "--out"):
            pass
        line = str(caught.value)
        found = BUSY.match(line)
        assert found and "\n" not in line, line
        assert found["folder"] == str(folder) and found["command"] == "predict" and int(found["pid"]) == holder.pid
        assert found["rest"] == "wait or choose another --out"
        assert caught.value.holder["pid"] == holder.pid
        assert isinstance(caught.value, DestinationError)  # a UserError: the command line's one line, exit 2
        assert not folder.exists()  # refused before anything was made
    finally:
        let_go(holder)
    assert not lock_file(folder).exists()  # the holder removed its lock file as it let go
    with writer_lock(folder, "predict"):  # and the folder is free
        assert holds_writer_lock(folder)
    assert not holds_writer_lock(folder) and sorted(os.listdir(tmp_path)) == []


def test_wait_blocks_until_the_holder_lets_go(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    holder = hold(folder)
    got = threading.Event()
    said: list[str] = []
    listener = logging.Handler()
    listener.emit = lambda record: said.append(record.getMessage())  # the CLI's logger may not propagate
    logging.getLogger("pipeline.destinations").addHandler(listener)

    def second() -> None:
        with command_context("predict", wait=True), writer_lock(folder, "predict"):
            got.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    try:
        assert not got.wait(1.0)  # still held by the other process
        waiting = (
            rf"{re.escape(str(folder))} is being written by predict \(pid {holder.pid}, started \d\d:\d\d\); waiting"
        )
        assert len(said) == 1 and re.fullmatch(waiting + " for it to finish", said[0]), said
    finally:
        logging.getLogger("pipeline.destinations").removeHandler(listener)
        let_go(holder)
    waiter.join(timeout=30)
    assert got.is_set()
    assert not lock_file(folder).exists()


def test_a_holder_killed_by_sigkill_leaves_the_folder_free(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    holder = hold(folder)
    holder.kill()  # SIGKILL: no code of ours runs
    assert holder.wait(timeout=30) == -signal.SIGKILL
    with writer_lock(folder, "predict"):  # the kernel let go of it; the stale file is reused, then removed
        pass
    assert not lock_file(folder).exists()


def test_the_lock_nests_in_one_process_and_leaves_nothing_behind(tmp_path: Path) -> None:
    folder = tmp_path / "deep" / "er" / "out"
    with writer_lock(folder, "data synth"), writer_lock(folder, "data synth"):
        assert lock_file(folder).is_file() and holds_writer_lock(folder)
        with build_then_swap(folder, "dataset") as staging:  # takes it again: nested, not refused
            (staging / "a.txt").write_text("a")
    assert not lock_file(folder).exists() and (folder / "a.txt").read_text() == "a"
    with writer_lock(tmp_path / "gone" / "out", "predict"):  # folders made for the lock file alone
        assert (tmp_path / "gone").is_dir()
    assert not (tmp_path / "gone").exists()


def test_claim_needs_the_lock_and_reserve_checks_before_and_after_taking_it(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="writer_lock"):
        claim(tmp_path / "out", "predict")
    user = tmp_path / "user"
    user.mkdir()
    (user / "notes.txt").write_text("mine")
    with pytest.raises(DestinationError, match="not made by yolo-pipeline"), reserve(user, "predict"):
        pass
    assert not lock_file(user).exists()  # refused before it was held
    with reserve(tmp_path / "out", "predict") as out:
        assert claim(out, "predict") == out and marker_of(out)["kind"] == "predict"
    with reserve(None, "predict") as nothing:
        assert nothing is None


def test_build_then_swap_is_refused_while_another_process_writes_the_folder(tmp_path: Path) -> None:
    target = tmp_path / "ds"
    with build_then_swap(target, "dataset") as staging:
        (staging / "a.txt").write_text("one")
    before = snapshot(tmp_path)
    holder = hold(target, "data import")
    try:
        with pytest.raises(FolderBusy, match=rf"is being written by data import \(pid {holder.pid}, "):
            with build_then_swap(target, "dataset") as staging:
                (staging / "a.txt").write_text("two")
    finally:
        let_go(holder)
    assert snapshot(tmp_path) == before

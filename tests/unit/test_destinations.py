"""The destination rule: only folders this tool made are replaced, and only once the new one is whole."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.destinations import (
    MARKER,
    DestinationError,
    build_then_swap,
    check_destination,
    check_name,
    check_replaceable,
    claim,
    marker_of,
    write_marker,
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

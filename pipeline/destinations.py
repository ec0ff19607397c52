"""Folders this tool writes: it deletes or replaces only what it made, and replaces only once the new one is whole.

Every folder a command makes holds a marker file, ``.yolo-pipeline.json``, saying which command made it
and when. A destination that exists is used only when it is empty or holds that marker from the same
kind of command; anything else is refused with one line, so a mistyped ``--out`` or ``--name`` can never
delete a user's files. A replacement is built in a hidden sibling folder, finished completely, then
swapped in: a failure on the way leaves the previous folder exactly as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.messages import UserError

MARKER = ".yolo-pipeline.json"
# A dataset or folder name: no separators, no "." or "..", nothing hidden. Manifests use the same rule.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_NAME = re.compile(NAME_PATTERN)


class DestinationError(UserError, ValueError):
    """A destination this tool must not write to or replace; the message is one line naming it."""


def check_name(name: str, what: str = "--name") -> str:
    """A name used as one folder: letters, digits, ``_``, ``.``, ``-``, not starting with a dot or a dash."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in {".", ".."}:
        raise DestinationError(
            f"{what} {name!r}: a name is letters, digits, '_', '.' and '-', starting with a letter or digit "
            "(no '/', '..' or hidden names)"
        )
    return name


def marker_of(folder: Path) -> dict[str, Any] | None:
    """What the marker in ``folder`` says, or None when the folder holds no readable marker."""
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "yolo-pipeline" else None


def write_marker(folder: Path, kind: str, **info: Any) -> Path:
    """Mark ``folder`` as made by this tool's ``kind`` command (e.g. ``data import``)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = {"tool": "yolo-pipeline", "kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    path = folder / MARKER
    tmp = folder / f".{MARKER}.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def _is_empty_dir(folder: Path) -> bool:
    try:
        return not any(folder.iterdir())
    except OSError:
        return False


def check_destination(folder: str | Path, kind: str, option: str = "--out", also: tuple[str, ...] = ()) -> Path:
    """``folder`` resolved, if this ``kind`` of command may write into or replace it; else a DestinationError.

    Allowed: a path that does not exist, an empty folder, or a folder whose marker says the same kind
    of command made it (or one of the kinds in ``also``). Refused: a file, a folder with anything else
    in it, a folder of another kind.
    """
    path = Path(folder).expanduser()
    resolved = path.resolve()
    if path.is_symlink() or (resolved.exists() and not resolved.is_dir()):
        what = "a link" if path.is_symlink() else "a file"
        raise DestinationError(f"{option} {path}: is {what}, not a folder; choose another {option}")
    if not resolved.exists() or _is_empty_dir(resolved):
        return resolved
    marker = marker_of(resolved)
    if marker is None:
        raise DestinationError(
            f"{option} {path}: exists and was not made by yolo-pipeline; choose another {option} or remove it yourself"
        )
    if marker.get("kind") != kind and marker.get("kind") not in also:
        raise DestinationError(
            f"{option} {path}: was made by yolo-pipeline {marker.get('kind')}, not {kind}; choose another {option}"
        )
    return resolved


def check_replaceable(folder: str | Path, kind: str, option: str = "--out") -> Path:
    """`check_destination`, and not the current folder or one above it (replacing it would pull it from under us)."""
    target = check_destination(folder, kind, option)
    here = Path.cwd().resolve()
    if target == here or target in here.parents:
        raise DestinationError(f"{option} {folder}: is the current folder or one above it; choose another {option}")
    return target


@contextmanager
def build_then_swap(folder: str | Path, kind: str, option: str = "--out", **info: Any) -> Iterator[Path]:
    """Yield a hidden staging folder beside ``folder``; once the block finishes, swap it in for ``folder``.

    ``folder`` must pass `check_replaceable` first (it is checked here). The marker is written into the staging folder
    last, so a folder with a marker is always a finished one. On any failure the staging folder is
    removed and ``folder`` is left exactly as it was.
    """
    target = check_replaceable(folder, kind, option)
    staging = target.with_name(f".{target.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
    except OSError as exc:
        raise DestinationError(f"{option} {folder}: cannot write beside it ({exc.strerror or exc})") from None
    try:
        yield staging
        write_marker(staging, kind, **info)
        swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def swap_in(staging: Path, target: Path) -> None:
    """Put the finished ``staging`` folder at ``target``; the previous ``target`` is deleted only afterwards."""
    if not target.exists():
        os.replace(staging, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(target, old)
    try:
        os.replace(staging, target)
    except OSError:
        os.replace(old, target)  # put the previous one back: never leave the user with neither
        raise
    shutil.rmtree(old, ignore_errors=True)


def claim(folder: str | Path, kind: str, option: str = "--out", also: tuple[str, ...] = (), **info: Any) -> Path:
    """Make (or reuse) ``folder`` for a command that writes into it in place (e.g. predict's resumable results).

    ``also``: other kinds of this tool's folders the command may add its files to (e.g. a card to a dataset).
    """
    target = check_destination(folder, kind, option, also)
    if marker_of(target) is None:
        write_marker(target, kind, **info)
    return target

"""Folders this tool writes: it deletes or replaces only what it made, and replaces only once the new one is whole.

Every folder a command makes holds a marker file, ``.yolo-pipeline.json``, saying which command made it
and when. A destination that exists is used only when it is empty or holds that marker from the same
kind of command; anything else is refused with one line, so a mistyped ``--out`` or ``--name`` can never
delete a user's files. A replacement is built in a hidden sibling folder, finished completely, then
swapped in: a failure on the way leaves the previous folder exactly as it was.

One writer per folder: every command that writes into a folder (or replaces it) holds `writer_lock` on it
while it works, an exclusive ``flock`` on a hidden file beside the folder (``.<name>.lock``), which the
kernel releases when the process ends, however it ends. A second process asking for the same folder stops
at once with one line naming the first (`FolderBusy`, exit 2), or, with ``--wait`` (`command_context`),
waits for it. The lock file is removed by its holder when it lets go.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.files import write_atomic
from pipeline.messages import UserError

try:
    import fcntl
except ImportError:  # not POSIX: no lock between processes, as MLflow and first_use_lock do there
    fcntl = None  # type: ignore[assignment]

LOG = logging.getLogger("pipeline.destinations")

MARKER = ".yolo-pipeline.json"
# A dataset or folder name: no separators, no "." or "..", nothing hidden. Manifests use the same rule.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_NAME = re.compile(NAME_PATTERN)


class DestinationError(UserError, ValueError):
    """A destination this tool must not write to or replace; the message is one line naming it."""


class FolderBusy(DestinationError):
    """Another process is writing the folder; the message names it (pid, command, when it started)."""

    def __init__(self, message: str, holder: dict[str, Any]):
        super().__init__(message)
        self.holder = holder


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
    return write_atomic(folder / MARKER, json.dumps(record, indent=1) + "\n")


def _is_empty_dir(folder: Path) -> bool:
    try:
        return not any(folder.iterdir())
    except OSError:
        return False


# ---- one writer per folder ------------------------------------------------------------------------------

_context: dict[str, Any] = {"command": None, "wait": False}  # this process's command and its --wait


@contextmanager
def command_context(command: str | None, wait: bool = False) -> Iterator[None]:
    """While the block runs, the folders locked are held in the name of ``command`` (what a refused process
    names) and a folder another process holds is waited for when ``wait`` (``--wait``), else refused."""
    before = dict(_context)
    _context.update(command=command, wait=bool(wait))
    try:
        yield
    finally:
        _context.update(before)


def add_wait_option(parser: argparse.ArgumentParser) -> None:
    """``--wait``, for every command that writes into a folder another process may be writing."""
    parser.add_argument(
        "--wait",
        action="store_true",
        help="when another process is writing the same folder, wait for it to finish (default: stop at once, exit 2)",
    )


@dataclass
class _Held:
    fd: int | None  # None where there is no fcntl
    path: Path
    depth: int
    made: list[Path]  # folders made to hold the lock file, removed on release when still empty


_held: dict[Path, _Held] = {}  # the locks this process holds, by lock file: taken again, they nest
_held_guard = threading.Lock()


def lock_file(folder: str | Path) -> Path:
    """The lock of ``folder``: a hidden file beside it, as the folder itself may be swapped."""
    folder = Path(folder).expanduser().resolve()
    return folder.with_name(f".{folder.name}.lock")


def holds_writer_lock(folder: str | Path) -> bool:
    """True while this process holds `writer_lock` on ``folder``."""
    with _held_guard:
        return lock_file(folder) in _held


@contextmanager
def writer_lock(
    folder: str | Path | None, command: str = "", option: str | None = "--out", wait: bool | None = None
) -> Iterator[Path | None]:
    """Hold ``folder`` for this process alone while the block runs: the one mechanism of every writer.

    A process that asks for a folder another one holds stops with `FolderBusy` (one line: ``DIR is being
    written by predict (pid N, started HH:MM); wait or choose another --out``), or with ``wait`` (default:
    `command_context`'s) says so in one line and waits. The lock is the kernel's (``flock``), so a process
    killed, even by SIGKILL, leaves none behind. Taken again by the same process, it nests. ``command``
    names this process to the others when no `command_context` does; ``option`` is what to choose instead
    (None: nothing, only waiting). ``folder`` None or '': nothing to hold."""
    if folder is None or folder == "":
        yield None
        return
    path = lock_file(folder)
    with _held_guard:
        held = _held.get(path)
        if held is not None:
            held.depth += 1
    if held is None:
        label = _context["command"] or command or "yolo-pipeline"
        fd, made = _acquire(path, Path(folder), label, option, _context["wait"] if wait is None else wait)
        held = _Held(fd, path, 1, made)
        with _held_guard:
            _held[path] = held
    try:
        yield Path(folder)
    finally:
        with _held_guard:
            held.depth -= 1
            last = held.depth == 0
            if last:
                del _held[path]
        if last:
            _release(held)


def _acquire(path: Path, folder: Path, command: str, option: str | None, wait: bool) -> tuple[int | None, list[Path]]:
    """Lock ``path`` (made if needed, with the folders above it); the open descriptor and the folders made."""
    made: list[Path] = []
    info = {"pid": os.getpid(), "command": command, "host": socket.gethostname(), "started": time.time()}
    announced, vanished = False, 0
    try:
        while True:
            try:
                made += _make_parents(path.parent)
                if fcntl is None:
                    return None, made
                fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            except FileNotFoundError as exc:  # the holder removed the folder it had made for its lock: again
                vanished += 1
                if vanished < 100:
                    continue
                what = f"{option} {folder}" if option else str(folder)
                raise DestinationError(f"{what}: cannot write beside it ({exc.strerror or exc})") from None
            except OSError as exc:  # under a file, a read-only disk, no permission
                what = f"{option} {folder}" if option else str(folder)
                raise DestinationError(f"{what}: cannot write beside it ({exc.strerror or exc})") from None
            try:
                if not _try_lock(fd):
                    holder = _holder(fd)
                    if not wait:
                        raise FolderBusy(f"{_busy_line(folder, holder)}; {_instead(option)}", holder)
                    if not announced:
                        LOG.warning("%s; waiting for it to finish", _busy_line(folder, holder))
                        announced = True
                    fcntl.flock(fd, fcntl.LOCK_EX)
                if _same_file(fd, path):  # else its holder removed it as it let go: lock the one at the path now
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(info).encode(), 0)
                    return fd, made
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
    except BaseException:
        _remove_empty(made)
        raise


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return False
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _holder(fd: int) -> dict[str, Any]:
    """What the holder wrote into its lock file (it writes just after locking: a moment's grace for that)."""
    for _ in range(40):
        data = os.pread(fd, 4096, 0)
        if data:
            try:
                found = json.loads(data)
            except ValueError:
                found = None
            if isinstance(found, dict):
                return found
        time.sleep(0.025)
    return {}


def _instead(option: str | None) -> str:
    return f"wait or choose another {option}" if option else "wait or try again when it is done"


def _busy_line(folder: Path, holder: dict[str, Any]) -> str:
    """``DIR is being written by predict (pid N, started HH:MM)``."""
    who = [f"pid {holder.get('pid', '?')}"]
    if holder.get("host") and holder["host"] != socket.gethostname():
        who[0] += f" on {holder['host']}"
    if isinstance(holder.get("started"), int | float):
        started = time.localtime(holder["started"])
        today = time.localtime()[:3] == started[:3]
        who.append("started " + time.strftime("%H:%M" if today else "%Y-%m-%d %H:%M", started))
    return f"{folder} is being written by {holder.get('command') or 'another process'} ({', '.join(who)})"


def _make_parents(folder: Path) -> list[Path]:
    """Make ``folder`` and the folders above it that are missing; the ones made, outermost first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue
        made.append(path)
    return made


def _remove_empty(made: list[Path]) -> None:
    """Remove the folders made for a lock file, innermost first, while they are empty (nothing else came)."""
    for path in reversed(made):
        try:
            path.rmdir()
        except OSError:
            return


def _release(held: _Held) -> None:
    if held.fd is not None:
        try:
            if _same_file(held.fd, held.path):
                os.unlink(held.path)  # while still locked: a process waiting on this file sees it gone, and retries
        except OSError:
            pass
        fcntl.flock(held.fd, fcntl.LOCK_UN)
        os.close(held.fd)
    _remove_empty(held.made)


@contextmanager
def reserve(
    folder: str | Path | None,
    kind: str,
    option: str = "--out",
    also: tuple[str, ...] = (),
    *,
    replace: bool = False,
    command: str = "",
) -> Iterator[Path | None]:
    """``folder`` checked (`check_replaceable` when ``replace``, else `check_destination`), then held with
    `writer_lock` while the block runs, and checked again (another writer may have just finished with it).

    The first check costs nothing when refused; the second sees what the previous holder left. ``folder``
    None or '': nothing checked or held, the block gets None."""
    if folder is None or folder == "":
        yield None
        return

    def check() -> Path:
        return check_replaceable(folder, kind, option) if replace else check_destination(folder, kind, option, also)

    with writer_lock(check(), command or kind, option):
        yield check()


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

    ``folder`` must pass `check_replaceable` first (it is checked here), and is held with `writer_lock` while
    the block runs (a caller that holds it from its start keeps it). The marker is written into the staging
    folder last, so a folder with a marker is always a finished one. On any failure the staging folder is
    removed and ``folder`` is left exactly as it was.
    """
    target = check_replaceable(folder, kind, option)
    with writer_lock(target, info.get("command") or kind, option):  # nested when the caller holds it already
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
    The caller holds `writer_lock` on ``folder`` (`reserve` takes both) for as long as it writes there.
    """
    target = check_destination(folder, kind, option, also)
    if not holds_writer_lock(target):
        raise RuntimeError(f"claim({target}): a folder written in place is held with writer_lock (or reserve) first")
    if marker_of(target) is None:
        write_marker(target, kind, **info)
    return target

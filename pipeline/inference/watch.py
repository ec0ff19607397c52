"""Which images in a folder tree are complete and not yet handed out, in the order they arrived.

`predict FOLDER --watch` screens each image a camera drops into FOLDER while the line runs. An image
must not be read half written, and must be screened soon after its writer is done (the target is a
verdict within 300 ms of the close at ten images a second), so `FolderWatch` hands a path out as soon
as it knows the file is complete:

- its writer closed it (inotify's close-write, watchdog's `FileClosedEvent`): complete at once;
- it was renamed into the tree (an atomic writer's ``x.tmp`` -> ``x.png``, or a folder moved in):
  complete at once, the bytes were all there before the name was;
- otherwise (a file whose creation was seen but whose writer was never seen to open it, as for a
  file made in a new sub-folder before its watch was added; every file a rescan finds; every file
  under an observer without close events) its size and modification time stayed the same over two
  looks at least ``settle_s`` apart, and it is not empty. A file the events say a writer holds
  open waits for its close instead: a camera that pauses mid-image must not be read half written.

Events can be lost (a kernel queue overflow under load) and network shares give none, so the tree is
also walked every ``rescan_s`` (never more often: a walk of a huge folder is not free), and whatever
the walk finds that nothing reported settles as above. ``use_events=False`` relies on the walk alone.

A path is handed out at most once per watch: a file rewritten in place later is not handed out
again (the engine would only screen the same part twice). The files already in the tree when the
watch starts are handed out first, oldest first; the engine skips those its results already hold,
so a restarted watch screens what arrived while it was down. Later files follow in the order their
completion was seen. A path that a walk no longer finds is forgotten, so memory holds what is in the
tree, not everything ever screened, and a file that later comes back under that name is new.

Only image names count (`pipeline.inference.discover.is_image_name`), never a hidden name (a
leading ``.``: writers' temporary files, ``.Trash``) nor anything under ``exclude`` (the results
folder may sit inside the watched one). Links to folders are not followed, as watchdog does not.

Threads: watchdog's observer thread and the watch's rescan thread produce, the engine's thread takes
with `FolderWatch.ready`. Neither producer raises for a file or folder that vanished or cannot be
listed; a watched folder that is itself gone makes `ready` raise `SourceError`.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from watchdog.events import (
    DirDeletedEvent,
    EventsLostEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from pipeline.inference.discover import is_image_name, printable
from pipeline.inference.errors import SourceError

LOG = logging.getLogger("pipeline.inference")

# The events the watch acts on; leaving out the rest (a modify per written block) keeps the kernel's
# queue short under load. Moves and creations of folders are watched anyway in recursive mode.
_EVENTS: list[type[FileSystemEvent]] = [
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    DirDeletedEvent,
    EventsLostEvent,
]


@dataclass
class _Look:
    """One look at a file that is not complete yet."""

    size: int
    mtime_ns: int
    at: float  # time.monotonic() just after the look: settled once unchanged at ``at + settle_s`` or later
    held: bool = False  # opened (by its writer, as far as events tell) and not closed since: wait for the close


class FolderWatch:
    """The complete image files of a folder tree, each handed out once, in the order they arrived.

    Use as a context manager (or call `start` and `close`); `ready` waits for files. Each path is
    handed out at most once per watch: a file rewritten later is not handed out again. See the
    module's docstring for when a file counts as complete.
    """

    def __init__(
        self,
        folder: Path,
        *,
        exclude: Path | None = None,
        settle_s: float = 0.2,
        rescan_s: float = 2.0,
        use_events: bool = True,
    ) -> None:
        if settle_s < 0 or rescan_s <= 0:
            raise ValueError(f"settle_s must be >= 0 and rescan_s > 0, not {settle_s} and {rescan_s}")
        self.folder = Path(folder)
        self._real = self.folder  # where the events come from: the folder's real path, once started
        self.settle_s = settle_s
        self.rescan_s = rescan_s
        self.use_events = use_events
        self._exclude_arg = exclude
        self._excluded: Path | None = None  # ``exclude`` spelled under ``folder``, where it is inside it
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)  # the engine waits on it for files
        self._changed = threading.Condition(self._lock)  # the rescan thread waits on it for looks to take
        self._queue: deque[Path] = deque()  # complete, not handed out yet, in arrival order
        self._claimed: dict[Path, float] = {}  # queued or handed out -> when (monotonic), never handed again
        self._pending: dict[Path, _Look] = {}  # seen, not complete yet
        self._error: BaseException | None = None
        self._closed = False
        self._next_rescan = 0.0
        self._observer: BaseObserver | None = None
        self._rescanner: threading.Thread | None = None

    def __enter__(self) -> FolderWatch:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the events, then look at the files already there (so none falls between the two).

        Takes ``settle_s`` when the folder holds images: the files there are handed out first, and
        only those unchanged over ``settle_s`` (a camera may be writing one right now).
        """
        if not self.folder.is_dir():
            raise SourceError(f"{printable(self.folder)}: no such folder to watch")
        self._real = self.folder.resolve()
        if self._exclude_arg is not None:
            try:
                inside = self._exclude_arg.resolve().relative_to(self._real)
            except ValueError:
                inside = None  # outside the tree: nothing to leave out
            self._excluded = self.folder / inside if inside is not None and inside.parts else None
        if self.use_events:
            self._start_events()
        try:
            self._first_look()
        except BaseException:
            self.close()  # no observer left running behind a failed start
            raise
        self._rescanner = threading.Thread(target=self._rescan_loop, name="folder-watch-rescan", daemon=True)
        self._rescanner.start()

    def _first_look(self) -> None:
        """Queue the files already there that stay unchanged over ``settle_s``, oldest first."""
        walked = time.monotonic()
        first, _ = self._walk()
        if first:
            time.sleep(self.settle_s)
        second = {path: _stat(path) for path in first}
        now = time.monotonic()
        with self._lock:
            stable: list[tuple[int, str, Path]] = []
            for path, look in second.items():
                if look is None or path in self._claimed:
                    continue  # gone, or already complete by an event
                pending = self._pending.get(path)
                if look == first[path] and look[0] > 0 and not (pending is not None and pending.held):
                    self._pending.pop(path, None)
                    stable.append((look[1], str(path), path))
                elif pending is None:
                    self._pending[path] = _Look(look[0], look[1], now)
            stable.sort()
            for _, _, path in stable:
                self._claimed[path] = now
            self._queue.extendleft(path for _, _, path in reversed(stable))  # ahead of what events found
            if self._queue:
                self._arrived.notify_all()
            self._next_rescan = walked + self.rescan_s

    def ready(self, timeout: float) -> list[Path]:
        """Every complete file not handed out yet, in arrival order; waits up to ``timeout`` s for one.

        ``[]`` when none came in time (or the watch is closed). A file that vanished before it was
        handed out is left out. Raises `SourceError` once the watched folder itself is gone.
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                while not self._queue and self._error is None and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return []
                    self._arrived.wait(left)
                batch = list(self._queue)
                self._queue.clear()
                if not batch:
                    if self._error is not None:
                        raise self._error
                    return []
            present = [path for path in batch if os.path.isfile(path)]
            if len(present) < len(batch):
                with self._lock:  # forgotten: what comes back under that name is a new file
                    for path in set(batch).difference(present):
                        self._claimed.pop(path, None)
            if present:
                return present

    def close(self) -> None:
        """Stop the observer and the rescan thread and wait for both; a second call does nothing."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._arrived.notify_all()
            self._changed.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._rescanner is not None:
            self._rescanner.join()

    # The observer's side.

    def _start_events(self) -> None:
        observer = Observer()
        try:
            # The real path: inotify would watch a link to the folder, not the folder (links are not followed).
            observer.schedule(_Handler(self), os.fspath(self._real), recursive=True, event_filter=_EVENTS)
            observer.start()
        except OSError as exc:  # e.g. out of inotify watches: the rescans still find every file, later
            observer.stop()  # and its inotify reader, started by schedule (the observer's thread never started)
            LOG.warning(
                "%s: no file events (%s); looking every %g s instead", printable(self.folder), exc, self.rescan_s
            )
            return
        self._observer = observer

    def _on_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, EventsLostEvent):
            with self._lock:  # the closes may be among the lost: let everything settle instead
                for look in self._pending.values():
                    look.held = False
                self._changed.notify_all()
            return
        source = self._spelled(event.src_path)
        if source is None:
            return
        if isinstance(event, DirDeletedEvent):
            if source == self.folder:
                self._fail(SourceError(f"{printable(self.folder)}: the watched folder is gone"))
            return
        if isinstance(event, FileMovedEvent):
            self._forget(source)
            destination = self._spelled(event.dest_path)
            if destination is not None and self._wanted(destination):
                self._complete(destination)
            return
        if not self._wanted(source):
            return
        if isinstance(event, FileClosedEvent):
            self._complete(source)
        elif isinstance(event, FileCreatedEvent):
            if event.is_synthetic:  # in a folder moved into the tree: complete, as a moved file is
                self._complete(source)
            else:
                self._seen(source, held=False)
        elif isinstance(event, FileOpenedEvent):
            self._seen(source, held=True)
        elif isinstance(event, FileClosedNoWriteEvent):
            with self._lock:
                look = self._pending.get(source)
                if look is not None and look.held:
                    look.held = False
                    self._changed.notify_all()
        elif isinstance(event, FileDeletedEvent):
            self._forget(source)

    def _spelled(self, raw: bytes | str) -> Path | None:
        """An event's path as the walks spell it, under ``folder`` as given (the results key images so)."""
        try:
            return self.folder / Path(os.fsdecode(raw)).relative_to(self._real)
        except ValueError:
            return None

    def _wanted(self, path: Path) -> bool:
        """An image name, not hidden (nor in a hidden folder), not under the excluded folder."""
        try:
            relative = path.relative_to(self.folder)
        except ValueError:
            return False
        if not is_image_name(path.name) or any(part.startswith(".") for part in relative.parts):
            return False
        return self._excluded is None or not path.is_relative_to(self._excluded)

    def _complete(self, path: Path) -> None:
        """Queue ``path`` now, if it is still there and not empty (an empty one waits for its bytes)."""
        look = _stat(path)
        with self._lock:
            if path in self._claimed:
                return
            if look is None:
                self._pending.pop(path, None)
            elif look[0] == 0:
                self._pending[path] = _Look(look[0], look[1], time.monotonic())
            else:
                self._pending.pop(path, None)
                self._claimed[path] = time.monotonic()
                self._queue.append(path)
                self._arrived.notify_all()

    def _seen(self, path: Path, *, held: bool) -> None:
        """Note a file that is not complete yet: it settles, or (``held``) waits for its close."""
        with self._lock:
            if path in self._claimed:
                return
            known = self._pending.get(path)
            if known is not None:
                known.held = known.held or held
                return
        look = _stat(path)
        if look is None:
            return
        with self._lock:
            if path in self._claimed:
                return
            known = self._pending.setdefault(path, _Look(look[0], look[1], time.monotonic()))
            known.held = known.held or held
            self._changed.notify_all()

    def _forget(self, path: Path) -> None:
        with self._lock:
            self._pending.pop(path, None)

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._error is None:
                self._error = error
            self._arrived.notify_all()

    # The rescan thread's side.

    def _rescan_loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed:
                    now = time.monotonic()
                    due = min(
                        [self._next_rescan]
                        + [look.at + self.settle_s for look in self._pending.values() if not look.held]
                    )
                    if due <= now:
                        break
                    self._changed.wait(due - now)
                if self._closed:
                    return
                rescan = now >= self._next_rescan
            try:
                if rescan:
                    self._rescan()
                    with self._lock:
                        self._next_rescan = time.monotonic() + self.rescan_s
                self._settle()
            except SourceError as exc:
                self._fail(exc)
                return
            except Exception as exc:  # noqa: BLE001 - a bug must reach the engine's thread, not end this one unseen
                LOG.exception("%s: the folder watch failed", printable(self.folder))
                self._fail(exc)
                return

    def _rescan(self) -> None:
        """Walk the tree: note what nothing reported, forget what is gone."""
        started = time.monotonic()
        found, whole = self._walk()
        now = time.monotonic()
        with self._lock:
            for path, (size, mtime_ns) in found.items():
                if path not in self._claimed and path not in self._pending:
                    self._pending[path] = _Look(size, mtime_ns, now)
            if whole:  # every folder listed: what it did not find is gone (unless it came during the walk)
                for path in [path for path, at in self._claimed.items() if at < started and path not in found]:
                    del self._claimed[path]
                for path in [path for path, look in self._pending.items() if look.at < started and path not in found]:
                    del self._pending[path]

    def _settle(self) -> None:
        """Look again at the files due for it: queue those unchanged since their last look."""
        now = time.monotonic()
        with self._lock:
            due = [
                (path, look) for path, look in self._pending.items() if not look.held and now - look.at >= self.settle_s
            ]
        if not due:
            return
        looks = [(path, look, _stat(path)) for path, look in due]
        now = time.monotonic()
        with self._lock:
            stable: list[tuple[int, str, Path]] = []
            for path, look, new in looks:
                if self._pending.get(path) is not look or look.held:
                    continue  # changed by an event meanwhile
                if new is None:
                    del self._pending[path]
                elif new == (look.size, look.mtime_ns) and look.size > 0:
                    del self._pending[path]
                    if path not in self._claimed:
                        stable.append((look.mtime_ns, str(path), path))
                else:
                    look.size, look.mtime_ns, look.at = new[0], new[1], now
            stable.sort()
            for _, _, path in stable:
                self._claimed[path] = now
                self._queue.append(path)
            if stable:
                self._arrived.notify_all()

    def _walk(self) -> tuple[dict[Path, tuple[int, int]], bool]:
        """Every wanted file in the tree with its (size, mtime_ns), and whether every folder was listed.

        Raises `SourceError` only when the watched folder itself is gone; a sub-folder that cannot be
        listed (or vanished meanwhile) is passed over until the next walk.
        """
        found: dict[Path, tuple[int, int]] = {}
        whole = True
        folders = [self.folder]
        while folders and not self._closed:
            folder = folders.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        path = folder / entry.name
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                if path != self._excluded:
                                    folders.append(path)
                            elif is_image_name(entry.name):
                                info = entry.stat()
                                if stat.S_ISREG(info.st_mode):
                                    found[path] = (info.st_size, info.st_mtime_ns)
                        except OSError:
                            continue  # vanished since the listing: nothing to hand out
            except OSError:
                if folder == self.folder and not os.path.isdir(folder):
                    raise SourceError(f"{printable(self.folder)}: the watched folder is gone") from None
                whole = False
        return found, whole


class _Handler(FileSystemEventHandler):
    """Passes watchdog's events to the watch, in the observer's thread."""

    def __init__(self, watch: FolderWatch) -> None:
        super().__init__()
        self._watch = watch

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            self._watch._on_event(event)
        except Exception:  # noqa: BLE001 - a failure here must not end the observer; the rescans still find the file
            LOG.exception("%s: a file event failed", printable(self._watch.folder))


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a regular file; None for one that is gone (or no longer a file)."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return (info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None

"""Which images a prediction covers, streamed in a deterministic order.

A source is a folder (walked recursively), a glob (``parts/**/*.png``), a single image, or a text
file listing paths (one per line; ``#`` comments; relative paths are relative to the list). Folders
are walked one directory at a time, names sorted, so the order is the same on every run and memory
holds one directory's listing, never the whole tree. Links to folders are followed, but each real
folder is walked once (by device and inode), and never one that holds the source itself: a ``loop ->
..`` link or a link to a sibling folder adds no image twice.

`count_images` tells a progress bar its total where that is cheap to know first: a folder is walked
once more by the same rules (listings only, no image opened), a list file read once more; a glob is
never counted ahead, its images are found in the one pass that predicts them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Container, Iterator
from pathlib import Path
from typing import NamedTuple

from pipeline.data.dataset import IMAGE_SUFFIXES
from pipeline.inference.errors import SourceError

_MAGIC = re.compile(r"[*?[]")


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def iter_images(source: str | Path, exclude: Path | None = None) -> Iterator[Path]:
    """The image paths of ``source`` in a fixed order; anything under ``exclude`` (the output folder) is skipped."""
    text = str(source)
    path = Path(text)
    skip = exclude.resolve() if exclude is not None else None
    if path.is_dir():
        yield from _walk(path, skip, _Seen.for_root(path))
    elif path.is_file():
        yield from [path] if is_image_name(path) else _listed(path)
    elif _MAGIC.search(text):
        yield from _glob(text, skip)
    else:
        raise SourceError(f"{printable(text)}: no such file or folder")


class Count(NamedTuple):
    images: int  # in the source
    done: int  # of those, already done (by an earlier run into the same folder)


def count_images(source: str | Path, exclude: Path | None = None, done: Container[str] = ()) -> Count | None:
    """How many images `iter_images` will give for ``source``, and how many of them are in ``done``.

    Only for a folder, a list file or one image; None for a glob (found in the one pass that predicts
    it) and for a source that fails part-way (the prediction reports that after the images before it).
    """
    path = Path(str(source))
    if not (path.is_dir() or path.is_file()):
        return None
    images = finished = 0
    try:
        for image in iter_images(source, exclude):
            images += 1
            finished += str(image) in done
    except (SourceError, OSError):
        return None
    return Count(images, finished)


class _Seen:
    """The real folders a walk has entered (device, inode), and the folders above its root."""

    def __init__(self, above: set[tuple[int, int]]):
        self.above = above
        self.walked: set[tuple[int, int]] = set()

    @classmethod
    def for_root(cls, root: Path) -> _Seen:
        """A link to a folder holding the root (``loop -> ..``) would walk the root again, and more."""
        return cls({_identity(parent) for parent in root.resolve().parents})

    def enter(self, folder: Path) -> bool:
        """Whether to walk ``folder``: a real folder not walked yet and not above the root."""
        try:
            key = _identity(folder)
        except OSError:
            return True  # the listing reports it
        if key in self.walked or key in self.above:
            return False
        self.walked.add(key)
        return True


def _identity(folder: Path) -> tuple[int, int]:
    info = os.stat(folder)
    return info.st_dev, info.st_ino


def _walk(folder: Path, skip: Path | None, seen: _Seen) -> Iterator[Path]:
    if not seen.enter(folder):
        return
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise SourceError(f"{printable(folder)}: cannot list ({exc.strerror})") from None
    for entry in entries:
        path = Path(entry.path)
        if _is_dir(entry):
            if skip is None or path.resolve() != skip:
                yield from _walk(path, skip, seen)
        elif is_image_name(entry.name):
            yield path


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links; a dangling or looping link is no folder
    except OSError:
        return False


def printable(path: str | os.PathLike[str]) -> str:
    """A path as text that prints anywhere (a name that is not UTF-8 shows its bytes as escapes)."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")


def _listed(list_file: Path) -> Iterator[Path]:
    """Every file the list names, once, in its order: missing or unreadable ones are the prediction's to report."""
    seen: set[object] = set()  # a list is held whole anyway; a file named twice (or by two names) is one image
    # Names that are not UTF-8 come through as the file system's bytes (as os.fsdecode gives them).
    with open(list_file, encoding="utf-8", errors="surrogateescape") as lines:
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                path = Path(entry) if Path(entry).is_absolute() else list_file.parent / entry
                key = _file_identity(path)
                if key not in seen:
                    seen.add(key)
                    yield path


def _file_identity(path: Path) -> object:
    try:
        return _identity(path)
    except OSError:
        return os.path.abspath(path)


def _glob(pattern: str, skip: Path | None) -> Iterator[Path]:
    """Files matching ``pattern`` (``*`` within a name, ``**`` across folders), walked as a folder is."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    matcher = re.compile(_translate("/".join(parts[fixed:])))
    for path in _walk(root, skip, _Seen.for_root(root)) if root.is_dir() else ():
        if matcher.fullmatch(path.relative_to(root).as_posix()):
            yield path


def _translate(pattern: str) -> str:
    """A glob as a regular expression over ``/``-separated relative paths."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 1)) > i:
            out.append("[" + pattern[i + 1 : end].replace("!", "^", 1) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)

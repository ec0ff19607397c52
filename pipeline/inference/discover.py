"""Which images a prediction covers, streamed in a deterministic order.

A source is a folder (walked recursively), a glob (``parts/**/*.png``), a single image, or a text
file listing paths (one per line; ``#`` comments; relative paths are relative to the list). Folders
are walked one directory at a time, names sorted, so the order is the same on every run and memory
holds one directory's listing, never the whole tree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from pipeline.inference.errors import SourceError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_MAGIC = re.compile(r"[*?[]")


def is_image_name(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def iter_images(source: str | Path, exclude: Path | None = None) -> Iterator[Path]:
    """The image paths of ``source`` in a fixed order; anything under ``exclude`` (the output folder) is skipped."""
    text = str(source)
    path = Path(text)
    skip = exclude.resolve() if exclude is not None else None
    if path.is_dir():
        yield from _walk(path, skip)
    elif path.is_file():
        yield from [path] if is_image_name(path) else _listed(path)
    elif _MAGIC.search(text):
        yield from _glob(text, skip)
    else:
        raise SourceError(f"{text}: no such file or folder")


def _walk(folder: Path, skip: Path | None) -> Iterator[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise SourceError(f"{folder}: cannot list ({exc.strerror})") from None
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir():
            if skip is None or path.resolve() != skip:
                yield from _walk(path, skip)
        elif is_image_name(entry.name):
            yield path


def _listed(list_file: Path) -> Iterator[Path]:
    """Every path the list names, in its order: missing or unreadable ones are the prediction's to report."""
    with open(list_file, encoding="utf-8") as lines:
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                path = Path(entry)
                yield path if path.is_absolute() else list_file.parent / path


def _glob(pattern: str, skip: Path | None) -> Iterator[Path]:
    """Files matching ``pattern`` (``*`` within a name, ``**`` across folders), walked as a folder is."""
    parts = Path(pattern).parts
    fixed = next(i for i, part in enumerate(parts) if _MAGIC.search(part))
    root = Path(*parts[:fixed]) if fixed else Path(".")
    matcher = re.compile(_translate("/".join(parts[fixed:])))
    for path in _walk(root, skip) if root.is_dir() else ():
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

"""The output folder of a prediction: append-only logs while it runs, derived tables at the end.

``predictions.jsonl`` (one line per image) and ``errors.jsonl`` (one line per image that could not
be read) grow by whole lines, each written with one ``write`` call on a file opened for appending:
a kill leaves every line that was written whole, and at worst an unfinished last line, which the
next run cuts off before it appends. An image is done when its line is in either file, so a rerun
skips exactly those. ``summary.csv`` and ``coco_results.json`` are derived from the logs at the end
of every run and replaced atomically. ``run.json`` holds the settings the results depend on (the
source, the model's SHA-256 and MLflow identity, thresholds, sizes); a rerun with other settings into
the same folder stops rather than mixing results. The folder is predict's own (its marker): any other
existing folder with files in it is refused. One process writes it at a time (`pipeline.destinations.writer_lock`,
held for the whole run): a second predict into it stops at once, or with ``--wait`` waits, so every image is
in the logs once, however many runs start together. Lines are ASCII JSON: a file name that is not UTF-8 is
written with escapes that read back as the same name, so it never breaks a rerun.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.destinations import MARKER, DestinationError, check_destination, claim, write_marker
from pipeline.files import replaced_whole, write_atomic
from pipeline.inference.errors import ResultsError

PREDICTIONS = "predictions.jsonl"
ERRORS = "errors.jsonl"
SUMMARY = "summary.csv"
COCO_RESULTS = "coco_results.json"
SETTINGS = "run.json"
KIND = "predict"  # the marker's kind: only predict adds to a results folder
# Settings recorded for the reader but not compared: the same thresholds reached by another route are the same results.
# The screen's expected false-reject rate comes with its thresholds (compared); the fail-rate warning describes the
# whole folder's summary, which each run rewrites.
SAID = frozenset({"thresholds_source", "expected_false_reject", "screen_warning"})


def path_key(path: str) -> int:
    """A 64-bit key for a path: the done set holds 8 bytes per image, however long the paths."""
    return int.from_bytes(hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest(), "little")


class AppendLog:
    """A JSON-lines file written one whole line per ``write`` call, opened for appending."""

    def __init__(self, path: Path):
        self.path = path
        self.lines = _repair(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, record: dict[str, Any]) -> None:
        # ASCII: a name that is not UTF-8 (surrogates, as os.fsdecode gives it) is escaped, and reads back the same.
        data = (json.dumps(record, separators=(",", ":"), ensure_ascii=True) + "\n").encode("ascii")
        view = memoryview(data)
        while view:  # a regular file takes it all at once; loop in case it does not
            view = view[os.write(self._fd, view) :]
        self.lines += 1

    def close(self) -> None:
        os.close(self._fd)


def _repair(path: Path) -> int:
    """Cut an unfinished last line (a kill mid-write) off ``path``; the number of whole lines.

    Read in blocks: a log of millions of lines is counted without being held in memory.
    """
    if not path.exists():
        return 0
    lines, whole, offset = 0, 0, 0
    with open(path, "rb+") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            lines += block.count(b"\n")
            last = block.rfind(b"\n")
            if last >= 0:
                whole = offset + last + 1
            offset += len(block)
        if whole < offset:
            f.truncate(whole)
    return lines


def read_log(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a JSON-lines log (an unfinished last line is not a record yet)."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.endswith("\n"):
                return
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise ResultsError(f"{path}:{number}: not a JSON line ({exc.msg})") from None


class DoneSet:
    """The images already in an output folder, as a sorted array of path keys (8 bytes each)."""

    def __init__(self, keys: np.ndarray):
        self._keys = np.sort(keys)

    @classmethod
    def of(cls, folder: Path) -> DoneSet:
        keys = [path_key(r["path"]) for name in (PREDICTIONS, ERRORS) for r in read_log(folder / name)]
        return cls(np.array(keys, dtype=np.uint64))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, path: str) -> bool:
        key = np.uint64(path_key(path))
        i = int(np.searchsorted(self._keys, key))
        return i < len(self._keys) and self._keys[i] == key


@dataclass(frozen=True)
class Verdict:
    """Pass/fail per image as a defect screen uses it: fail when any detection reaches its class's threshold."""

    thresholds: dict[str, float]
    default: float

    def threshold(self, name: str) -> float:
        return self.thresholds.get(name, self.default)

    def fails(self, detections: list[dict[str, Any]]) -> bool:
        return any(d["score"] >= self.threshold(d["class"]) for d in detections)


def recorded_settings(folder: Path) -> dict[str, Any] | None:
    """What ``run.json`` in ``folder`` holds, None when there is none; ResultsError when it is unreadable."""
    path = folder / SETTINGS
    if not path.exists():
        return None
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: unreadable ({exc}); use another --out") from None
    if not isinstance(before, dict):
        raise ResultsError(f"{path}: not the settings of a prediction; use another --out")
    return before


def is_legacy(folder: Path) -> bool:
    """A results folder of an earlier version (run.json and a log, no marker): predict's own, resumable."""
    return (
        not (folder / MARKER).exists()
        and (folder / SETTINGS).is_file()
        and any((folder / name).is_file() for name in (PREDICTIONS, ERRORS))
    )


def check_out(out: str | Path) -> Path:
    """``--out`` resolved, if predict may add results to it (absent, empty, or predict's own); nothing is made."""
    folder = Path(out).expanduser()
    if folder.is_dir() and not folder.is_symlink() and is_legacy(folder):
        return folder.resolve()
    return check_destination(folder, KIND, "--out")


def claim_out(out: Path, **info: Any) -> Path:
    """Make (or adopt) the results folder, once everything it depends on has been checked; the caller holds
    `writer_lock` on it (see `pipeline.inference.engine.predict`): one writer per results folder."""
    try:
        if is_legacy(out):
            write_marker(out, KIND, **info)
            return out
        return claim(out, KIND, "--out", **info)
    except DestinationError:
        raise
    except OSError as exc:  # a path under a file, a read-only disk
        raise DestinationError(f"--out {out}: cannot create ({exc.strerror or exc})") from None


def check_settings(folder: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``run.json``, or stop if the folder holds results made with other ones.

    A folder of an earlier version recorded fewer settings: those it lacks cannot be compared. The `SAID`
    ones are brought up to date (they describe the summary the run rewrites).
    """
    before = recorded_settings(folder)
    if before is not None:
        changed = sorted(k for k in settings if k in before and k not in SAID and before[k] != settings[k])
        if changed:
            key = changed[0]
            raise ResultsError(
                f"{folder}: holds results made with {key}={before[key]!r}, not {settings[key]!r}; "
                "use another --out (or delete the folder) to predict with other settings"
            )
        said = {k: settings[k] for k in SAID if k in settings and before.get(k) != settings[k]}
        if said:
            write_atomic(folder / SETTINGS, json.dumps({**before, **said}, indent=2) + "\n")
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / SETTINGS, json.dumps(settings, indent=2) + "\n")


def record_said(folder: Path, **said: Any) -> None:
    """Bring `SAID` settings in ``run.json`` up to date after a run (an empty value removes the key)."""
    before = recorded_settings(folder) or {}
    after = {k: v for k, v in {**before, **said}.items() if not (k in said and v in ("", None))}
    if after != before:
        write_atomic(folder / SETTINGS, json.dumps(after, indent=2) + "\n")


def write_summary(folder: Path, names: list[str], verdict: Verdict) -> dict[str, Any]:
    """``summary.csv`` (per image: counts per class, max score, verdict) and ``coco_results.json`` from the
    predictions log; returns the totals (images, detections per class, failed verdicts)."""
    with replaced_whole(folder / SUMMARY) as table_tmp, replaced_whole(folder / COCO_RESULTS) as coco_tmp:
        return _write_tables(folder, names, verdict, coco_tmp, table_tmp)


def _write_tables(folder: Path, names: list[str], verdict: Verdict, coco_tmp: Path, table_tmp: Path) -> dict[str, Any]:
    per_class = dict.fromkeys(names, 0)
    images = fails = 0
    # Both are streamed to temporary files (named per process) and renamed: whole or absent, never held in memory.
    # A name that is not UTF-8 shows its bytes as escapes in the table, which stays valid UTF-8 for any reader.
    table_file = open(table_tmp, "w", encoding="utf-8", errors="backslashreplace", newline="")  # noqa: SIM115
    with open(coco_tmp, "w", encoding="utf-8") as coco, table_file as table:
        writer = csv.writer(table, lineterminator="\n")
        writer.writerow(["path", "width", "height", "detections", *names, "max_score", "verdict"])
        coco.write("[")
        first = True
        for record in read_log(folder / PREDICTIONS):
            images += 1
            counts = dict.fromkeys(names, 0)
            for d in record["detections"]:
                counts[d["class"]] = counts.get(d["class"], 0) + 1
                per_class[d["class"]] = per_class.get(d["class"], 0) + 1
                x1, y1, x2, y2 = d["box"]
                result = {
                    "image_id": record["image_id"],
                    "category_id": d["class_id"] + 1,  # as `data import` writes COCO: ids from 1
                    "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                    "score": d["score"],
                }
                coco.write(("" if first else ",") + "\n" + json.dumps(result))
                first = False
            failed = verdict.fails(record["detections"])
            fails += failed
            top = max((d["score"] for d in record["detections"]), default=0.0)
            writer.writerow(
                [record["path"], record["width"], record["height"], len(record["detections"]), *counts.values()]
                + [round(top, 4), "fail" if failed else "pass"]
            )
        coco.write("\n]\n")
    return {"images": images, "detections": per_class, "failed_verdicts": fails}

"""`predict FOLDER --watch`: a folder the line fills, screened as it fills, until SIGINT or SIGTERM.

`HotFolder` is what the engine adds to a prediction in watch mode; everything else (decoding, batching, the
network, the results files and their resume) is the ordinary prediction's:

- `paths`: the images `FolderWatch` (`pipeline.inference.watch`) says are complete, in arrival order, each ended
  group followed by `BATCH_END`, so the images that arrived together share batches and a lone image is screened
  at once rather than waiting for a batch to fill. Those the results already hold are skipped (a restart after a
  kill screens each image once); with ``--move-done`` they are moved out, as their record is written.
- `screened` / `failed`: after an image's record is written (never before), its latency from the moment it was
  seen complete to its verdict, its fails per class, and the move out of the hot folder.
- per minute, the images, errors, fails per class and the latency's p50 and p95: a line in ``watch.jsonl`` in
  the results folder and, with ``--track``, a step of one MLflow run's metrics (sent in the background by the
  tracking journal, so a server away never holds the line up).
- every ``--drift-window`` images, those images against the screen's baseline (`drift_window`): a line in
  ``watch.jsonl`` and, with ``--track``, the drift metrics as a step of their own series, so the MLflow UI shows
  the line's health over time; a drifted window is said in one line as it closes.
- SIGINT and SIGTERM end the stream: the batch in hand is finished and written, the summary too, exit 0.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.drift import DriftReport
from pipeline.inference.batching import BATCH_END, BatchEnd
from pipeline.inference.drift_check import drift_metrics
from pipeline.inference.results import AppendLog, DoneSet, Verdict
from pipeline.inference.watch import FolderWatch

LOG = logging.getLogger("pipeline.inference")
FIGURES = "watch.jsonl"  # per minute, in the results folder
READY_WAIT_S = 0.25  # how long a wait for new images lasts before the stop flag is looked at again
MINUTE_S = 60.0


@dataclass
class Minute:
    """What one minute of the line saw."""

    start: float  # time.time() of its beginning
    images: int = 0
    errors: int = 0
    fails: int = 0
    fails_per_class: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        found = {"images": self.images, "errors": self.errors, "fails": self.fails}
        found.update({f"fails.{name}": n for name, n in self.fails_per_class.items()})
        found.update({f"latency_{k}": v for k, v in percentiles(self.latencies_ms).items()})
        return found


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    """p50_ms and p95_ms of some latencies (ms, rounded to 0.1); none of an empty list."""
    if not latencies_ms:
        return {}
    p50, p95 = np.percentile(latencies_ms, [50, 95])
    return {"p50_ms": round(float(p50), 1), "p95_ms": round(float(p95), 1)}


class HotFolder:
    """The watch mode of one prediction into ``out`` (see the module doc)."""

    def __init__(
        self,
        folder: Path,
        out: Path,
        verdict: Verdict,
        names: list[str],
        move_done: str = "",
        tracker: Any = None,
    ) -> None:
        self.folder = folder
        self.watch = FolderWatch(folder, exclude=out)
        self.verdict = verdict
        self.names = names
        self.move_done = Path(move_done).resolve() if move_done else None
        self.tracker = tracker  # a started `pipeline.tracking.Tracker`, or None
        self.stop = threading.Event()
        self.figures_path = out / FIGURES
        self.figures: AppendLog | None = None  # open while the watch runs
        self.seen: dict[str, float] = {}  # path -> when it was seen complete (monotonic)
        self.latencies_ms: list[float] = []  # every image's, for the run's p50 and p95
        self.minute = Minute(time.time())
        self._minutes = 0
        self._windows = 0

    def __enter__(self) -> HotFolder:
        self.watch.start()
        self.figures = AppendLog(self.figures_path)
        return self

    def __exit__(self, *_: object) -> None:
        self.watch.close()
        if self.figures is not None:
            self._close_minute()
            self.figures.close()
            self.figures = None

    def paths(self, done: DoneSet, skipped: Any) -> Iterator[str | BatchEnd]:
        """The complete images not yet screened, in arrival order, each group followed by `BATCH_END`; until stopped.
        ``skipped``: called with each path the results already hold."""
        while not self.stop.is_set():
            ready = self.watch.ready(READY_WAIT_S)
            now = time.monotonic()
            fresh = 0
            for path in map(str, ready):
                if len(done) and path in done:
                    skipped(path)
                    self._move(path)  # screened before a kill, not yet moved
                    continue
                self.seen[path] = now
                fresh += 1
                yield path
            if fresh:
                yield BATCH_END
            self._roll_minute()

    def screened(self, path: str, detections: list[dict[str, Any]]) -> None:
        """An image's record is written: its figures, then its move out of the hot folder."""
        failed = {d["class"] for d in detections if d["score"] >= self.verdict.threshold(d["class"])}
        self.minute.images += 1
        if failed:
            self.minute.fails += 1
            for name in failed:
                self.minute.fails_per_class[name] = self.minute.fails_per_class.get(name, 0) + 1
        self._latency(path)
        self._move(path)

    def failed(self, path: str) -> None:
        """An image that could not be read (its reason is in errors.jsonl): counted, left where it is."""
        self.minute.errors += 1
        self._latency(path)

    def drift_window(self, report: DriftReport) -> None:
        """A window of images compared with the baseline: its record in watch.jsonl, its metrics, a line if drifted."""
        self._windows += 1
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        p_values = {c.name: c.p_holm for c in report.ran}
        record = {"drift_window": self._windows, "at": stamp, "images": report.images, "drifted": report.drifted}
        if self.figures is not None:
            self.figures.append({**record, "line": report.line(), "p_holm": p_values})
        if self.tracker is not None:
            self.tracker.log_metrics(drift_metrics(report), step=self._windows)
        if report.drifted:
            LOG.warning("predict --watch: window %d: %s", self._windows, report.line())

    def latency(self) -> dict[str, float]:
        """p50 and p95 (ms) from seen complete to verdict, over the whole run."""
        found = percentiles(self.latencies_ms)
        return {**found, "images": len(self.latencies_ms)} if found else {}

    def _latency(self, path: str) -> None:
        if (seen := self.seen.pop(path, None)) is not None:
            took = 1000 * (time.monotonic() - seen)
            self.minute.latencies_ms.append(took)
            self.latencies_ms.append(took)

    def _move(self, path: str) -> None:
        """``path`` into ``--move-done``, at its place relative to the watched folder; a name taken there gets a
        number. A file gone meanwhile is left to the record that says so."""
        if self.move_done is None:
            return
        source = Path(path)
        try:
            relative = source.relative_to(self.folder)
        except ValueError:
            relative = Path(source.name)
        target = self.move_done / relative
        for n in range(1, 10_000):
            if not target.exists():
                break
            target = target.with_name(f"{source.stem}-{n}{source.suffix}")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
        except OSError as exc:
            LOG.info("predict: --move-done: %s stays where it is (%s)", path, exc.strerror or exc)

    def _roll_minute(self) -> None:
        if time.time() - self.minute.start >= MINUTE_S:
            self._close_minute()
            self.minute = Minute(time.time())

    def _close_minute(self) -> None:
        """The minute's figures into watch.jsonl and, with --track, the run's metrics (an idle minute too)."""
        figures = self.minute.figures()
        stamp = datetime.fromtimestamp(self.minute.start, timezone.utc).isoformat(timespec="seconds")
        if self.figures is not None:
            self.figures.append({"minute": stamp, **figures})
        if self.tracker is not None:
            self.tracker.log_metrics(figures, step=self._minutes, timestamp_ms=int(1000 * self.minute.start))
        self._minutes += 1


@contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` instead of ending the process at once (the main thread only: elsewhere the
    caller stops it); the handlers are put back afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    kept = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}

    def handler(number: int, _frame: object) -> None:
        LOG.info("predict: %s: finishing the images in hand, then stopping", signal.Signals(number).name)
        stop.set()

    for number in kept:
        signal.signal(number, handler)
    try:
        yield
    finally:
        for number, previous in kept.items():
            signal.signal(number, previous)


def percentile_line(latency: dict[str, float]) -> str:
    if not latency:
        return ""
    return f"latency from written to verdict: p50 {latency['p50_ms']:.0f} ms, p95 {latency['p95_ms']:.0f} ms"

"""Which runtime runs the network on a CPU, and on how many threads: measured on the run's own batches, not assumed.

Neither runtime wins everywhere: ONNX Runtime is faster on a quiet CPU at most sizes, PyTorch can be
faster for some models and sizes, and the answer moves with the thread count and with what runs
beside the network (the decoding threads, other jobs). So ``--runtime auto`` on a CPU runs the
run's first batches on the racers in turn (`Race`: the backends of `pipeline.inference.backends`
that race, today PyTorch and ONNX Runtime), timed end to end, from one batch's end to the
next's, so the decoding and writing around the network count too, and runs the rest on the faster.
The answer is cached (``<cache>/runtime/``, keyed by the weights' hash, the size, the batch and the
thread count), so later runs decide at once and say why.

Threads: the network gets the cores that other processes leave free (`pipeline.cpu.free_threads`, from
the share of the CPU they used while the model loaded: `LoadProbe`). PyTorch's thread pool stalls when
it has more threads than free cores (2 cores beside a training: 56 -> 5 images/s with 2 threads,
28 with 1), and ONNX Runtime does no better with them. The thread count keys the cache, so what a
shared machine measured (fewer threads) is kept apart from what a quiet one did (and ONNX Runtime's
sessions do not spin: `pipeline.inference.backends.onnx`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.files import cache_dir, write_atomic
from pipeline.inference.backends import BACKENDS, label, racers


def schedule(runtimes: tuple[str, ...]) -> tuple[str, ...]:
    """The race's batches, in order: the first of each runtime untimed (allocations, ONNX Runtime's
    shape-specific set-up), then two each in a mirrored order (ABBA), so a steady drift in the machine's
    speed weighs on all alike."""
    return (*runtimes, *reversed(runtimes), *runtimes)


RACE = schedule(racers())  # every racer's: torch, onnx, onnx, torch, torch, onnx


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # a backend's name: torch or onnx
    reason: str  # one line: why this runtime


def _choice_file(weights_sha256: str, size: int, batch: int, threads: int) -> Path:
    return cache_dir() / "runtime" / f"{weights_sha256[:20]}-{size}px-b{batch}-t{threads}.json"


def cached_choice(
    weights_sha256: str, size: int, batch: int, threads: int, runtimes: tuple[str, ...] | None = None
) -> RuntimeChoice | None:
    """The choice measured earlier for the weights of this SHA-256, size, batch and threads, if there is one
    and it raced the same ``runtimes`` (default: every racer), so a new backend is raced against the others."""
    path = _choice_file(weights_sha256, size, batch, threads)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        runtime = record["runtime"]
        ms = record["ms_per_image"]
        if runtime not in ms or set(ms) != set(racers() if runtimes is None else runtimes):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return RuntimeChoice(
        runtime, f"{_comparison(runtime, ms, threads)}, measured {record.get('date', '?')} (cached in {path})"
    )


class Race:
    """The run's first batches on each of ``runtimes`` (default: every racer) in turn (`schedule`: `RACE`),
    timed from one batch's end to the next's; then `choice`: the faster, cached for these weights, size, batch
    and threads."""

    def __init__(
        self, weights_sha256: str, size: int, batch: int, threads: int, runtimes: tuple[str, ...] | None = None
    ) -> None:
        self.key = (weights_sha256, size, batch, threads)
        self.runtimes = racers() if runtimes is None else tuple(runtimes)
        self.schedule = schedule(self.runtimes)
        self.choice: RuntimeChoice | None = None
        self._seconds = dict.fromkeys(self.runtimes, 0.0)
        self._images = dict.fromkeys(self.runtimes, 0)
        self._batches = 0
        self._warmed: set[str] = set()  # the runtimes whose first, untimed batch is done
        self._last = time.perf_counter()

    def next(self) -> str:
        """The runtime of the next batch."""
        return self.schedule[self._batches]

    def finished(self, runtime: str, images: int) -> None:
        """A batch of ``images`` ran on ``runtime`` and its results are out; after the last, `choice` is set."""
        now = time.perf_counter()
        if runtime in self._warmed:
            self._seconds[runtime] += now - self._last
            self._images[runtime] += images
        self._warmed.add(runtime)
        self._last = now
        self._batches += 1
        if self._batches == len(self.schedule):
            self.choice = self._decide()

    def _decide(self) -> RuntimeChoice:
        ms = {name: round(1000 * self._seconds[name] / self._images[name], 2) for name in self._seconds}
        runtime = faster(ms)
        weights_sha256, size, batch, threads = self.key
        timed = len(self.schedule) - len(self.runtimes)
        reason = f"{_comparison(runtime, ms, threads)}, timed end to end on {timed} of this run's batches"
        record = {"runtime": runtime, "ms_per_image": ms, "size": size, "batch": batch, "threads": threads}
        if path := _save(self.key, record):
            reason += f" (cached in {path})"
        return RuntimeChoice(runtime, reason)


def _save(key: tuple[str, int, int, int], record: dict[str, Any]) -> Path | None:
    """``record``, dated, as the cached choice for ``key``; None when the cache cannot be written (measured again)."""
    path = _choice_file(*key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps({**record, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}))
    except OSError:
        return None
    return path


def _margin(name: str) -> float:
    """How much faster than the others a runtime must be to be kept: PyTorch's 1.05, ONNX Runtime's 1."""
    return BACKENDS[name].race_margin if name in BACKENDS else 1.0


def faster(ms: dict[str, float]) -> str:
    """The runtime to use for these per-image times: the fastest once each is weighed by its margin
    (ONNX Runtime unless PyTorch beats it by 1.05x); a tie goes to the smaller margin."""
    return min(ms, key=lambda name: (ms[name] * _margin(name), _margin(name)))


def _comparison(runtime: str, ms: dict[str, float], threads: int) -> str:
    others = [name for name in ms if name != runtime]
    if not others:
        return f"{label(runtime)} {ms[runtime]:.1f} ms/image on {_threads(threads)}"
    against = ", ".join(
        f"{label(other)}'s {ms[other]:.1f} ({ms[other] / max(ms[runtime], 1e-9):.2f}x)" for other in others
    )
    text = f"{label(runtime)} {ms[runtime]:.1f} ms/image against {against} on {_threads(threads)}"
    for other in others:
        if ms[runtime] > ms[other]:  # kept within the other's margin
            text += f" ({label(other)} is not {_margin(other):.2f}x faster: within what the timing varies)"
    return text


def _threads(threads: int) -> str:
    return f"{threads} CPU thread{'' if threads == 1 else 's'}"

"""Which runtime runs the network on a CPU, and on how many threads: measured on the run's own batches, not assumed.

Neither runtime wins everywhere: ONNX Runtime is faster on a quiet CPU at most sizes, PyTorch can be
faster for some models and sizes, and the answer moves with the thread count and with what runs
beside the network (the decoding threads, other jobs). So ``--runtime auto`` on a CPU runs the
run's first batches on the two in turn (`Race`), timed end to end, from one batch's end to the
next's, so the decoding and writing around the network count too, and runs the rest on the faster.
The answer is cached (``<cache>/runtime/``, keyed by the weights' hash, the size, the batch and the
thread count), so later runs decide at once and say why.

Threads: the network gets the cores that other processes leave free (`pipeline.cpu.free_threads`, from
the share of the CPU they used while the model loaded: `LoadProbe`). PyTorch's thread pool stalls when
it has more threads than free cores (2 cores beside a training: 56 -> 5 images/s with 2 threads,
28 with 1), and ONNX Runtime does no better with them. The thread count keys the cache, so what a
shared machine measured (fewer threads) is kept apart from what a quiet one did.

ONNX Runtime's thread pool spins while it waits for work by default: on a machine whose cores are
busy with another job, the spinning threads compete with that job and with our decoding threads,
and throughput halves. Sessions here do not spin.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.files import cache_dir, write_atomic

# The race's batches, in order: the first of each runtime untimed (allocations, ONNX Runtime's
# shape-specific set-up), then two each in an ABBA order, so a steady drift in the machine's speed
# weighs on both alike.
RACE = ("torch", "onnx", "onnx", "torch", "torch", "onnx")
TIMED = len(RACE) - len(set(RACE))
TORCH_MARGIN = 1.05  # PyTorch must beat ONNX Runtime by more than the timed batches vary on a quiet machine


@dataclass(frozen=True)
class RuntimeChoice:
    runtime: str  # torch or onnx
    reason: str  # one line: why this runtime


def session_options(threads: int) -> Any:
    """ONNX Runtime session options for a CPU that other work may share: ``threads`` threads, no spinning."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def use_session_options(backend: Any, onnx_file: str | Path, threads: int) -> None:
    """Give an ONNX ``AutoBackend`` (which makes its session with the library's defaults) our session instead."""
    import onnxruntime as ort

    inner = backend.backend
    inner.session = ort.InferenceSession(str(onnx_file), session_options(threads), providers=["CPUExecutionProvider"])
    inner.output_names = [output.name for output in inner.session.get_outputs()]


def _choice_file(weights_sha256: str, size: int, batch: int, threads: int) -> Path:
    return cache_dir() / "runtime" / f"{weights_sha256[:20]}-{size}px-b{batch}-t{threads}.json"


def cached_choice(weights_sha256: str, size: int, batch: int, threads: int) -> RuntimeChoice | None:
    """The choice measured earlier for the weights of this SHA-256, size, batch and threads, if there is one."""
    path = _choice_file(weights_sha256, size, batch, threads)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        runtime = record["runtime"]
        ms = record["ms_per_image"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if runtime not in ms:
        return None
    return RuntimeChoice(
        runtime, f"{_comparison(runtime, ms, threads)}, measured {record.get('date', '?')} (cached in {path})"
    )


class Race:
    """The run's first batches on each runtime in turn (`RACE`), timed from one batch's end to the next's; then
    `choice`: the faster, cached for these weights, size, batch and threads."""

    def __init__(self, weights_sha256: str, size: int, batch: int, threads: int) -> None:
        self.key = (weights_sha256, size, batch, threads)
        self.choice: RuntimeChoice | None = None
        self._seconds = {"torch": 0.0, "onnx": 0.0}
        self._images = {"torch": 0, "onnx": 0}
        self._batches = 0
        self._warmed: set[str] = set()  # the runtimes whose first, untimed batch is done
        self._last = time.perf_counter()

    def next(self) -> str:
        """The runtime of the next batch."""
        return RACE[self._batches]

    def finished(self, runtime: str, images: int) -> None:
        """A batch of ``images`` ran on ``runtime`` and its results are out; after the last, `choice` is set."""
        now = time.perf_counter()
        if runtime in self._warmed:
            self._seconds[runtime] += now - self._last
            self._images[runtime] += images
        self._warmed.add(runtime)
        self._last = now
        self._batches += 1
        if self._batches == len(RACE):
            self.choice = self._decide()

    def _decide(self) -> RuntimeChoice:
        ms = {name: round(1000 * self._seconds[name] / self._images[name], 2) for name in self._seconds}
        runtime = faster(ms)
        weights_sha256, size, batch, threads = self.key
        reason = f"{_comparison(runtime, ms, threads)}, timed end to end on {TIMED} of this run's batches"
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


def faster(ms: dict[str, float]) -> str:
    """The runtime to use for these per-image times: ONNX Runtime unless PyTorch beats it by `TORCH_MARGIN`."""
    if "onnx" in ms and "torch" in ms:
        return "torch" if ms["torch"] * TORCH_MARGIN < ms["onnx"] else "onnx"
    return min(ms, key=ms.get)


def _comparison(runtime: str, ms: dict[str, float], threads: int) -> str:
    label = {"onnx": "ONNX Runtime", "torch": "PyTorch"}
    other = next((name for name in ms if name != runtime), None)
    if other is None:
        return f"{label[runtime]} {ms[runtime]:.1f} ms/image on {_threads(threads)}"
    text = (
        f"{label[runtime]} {ms[runtime]:.1f} ms/image against {label[other]}'s {ms[other]:.1f} "
        f"({ms[other] / max(ms[runtime], 1e-9):.2f}x) on {_threads(threads)}"
    )
    if ms[runtime] > ms[other]:  # ONNX Runtime kept within the margin
        text += f" (PyTorch is not {TORCH_MARGIN:.2f}x faster: within what the timing varies)"
    return text


def _threads(threads: int) -> str:
    return f"{threads} CPU thread{'' if threads == 1 else 's'}"

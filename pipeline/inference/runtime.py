"""Which runtime runs the network on a CPU, measured rather than assumed, and ONNX Runtime set up for shared machines.

Neither runtime wins everywhere: ONNX Runtime is faster on a quiet CPU at most sizes, PyTorch can be
faster for some models and sizes, and the answer moves with the thread count. So ``--runtime auto``
on a CPU times both on a few batches of this model, at this size and batch, the first time they
meet, keeps the faster, and caches the answer (``<cache>/runtime/``, keyed by the weights' hash, the
size, the batch and the thread count) so later runs decide at once and say why. That answer holds on
a quiet machine. When other processes keep the cores busy (`SHARED_LOAD`, read over the time the
model takes to load, at least 0.1 s), ONNX Runtime is taken whatever was measured: PyTorch's
thread pool stalls on shared cores (2 cores beside a training: 103 -> 10 images/s) while ONNX
Runtime's keeps its share (84 -> 46). Nothing is measured or cached then, so a quiet run later
still measures the truth.

ONNX Runtime's thread pool spins while it waits for work by default: on a machine whose cores are
busy with another job, the spinning threads compete with that job and with our decoding threads,
and throughput halves. Sessions here use one thread per core this process may run on, as
PyTorch does here, and do not spin.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pipeline.files import cache_dir, write_atomic

TIMED_ROUNDS = 5  # per runtime, alternating, after one untimed call each; the fastest counts (the least disturbed)
MEASURE_BATCH = 8  # at most this many images per timed call
TORCH_MARGIN = 1.05  # PyTorch must beat ONNX Runtime by more than the timed batches vary on a quiet machine
SHARED_LOAD = 0.25  # other processes keeping this share of the machine's CPU time busy: the cores are shared
MIN_LOAD_WINDOW_S = 0.1


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


def cpu_threads() -> int:
    """The threads the network uses on a CPU: one per core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity call on this system (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def give_torch_the_cores(threads: int) -> None:
    """PyTorch's intra-op threads for prediction: ultralytics' import sets ``OMP_NUM_THREADS=1`` when it comes
    before torch's, which leaves PyTorch one thread whatever the machine has."""
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _cpu_seconds() -> tuple[float, float, float]:
    """The machine's busy and total CPU seconds so far, and this process's."""
    import psutil

    cpu, own = psutil.cpu_times(), psutil.Process().cpu_times()
    busy = sum(getattr(cpu, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))
    return busy, busy + cpu.idle + getattr(cpu, "iowait", 0.0), own.user + own.system


class LoadProbe:
    """The CPU counters read when made; `others` gives the share of the machine's CPU time that other
    processes used since (0 quiet, 1 every core). Made before the model loads, its window costs nothing."""

    def __init__(self) -> None:
        self._start, self._since = _cpu_seconds(), time.monotonic()

    def others(self) -> float:
        if (wait := MIN_LOAD_WINDOW_S - (time.monotonic() - self._since)) > 0:
            time.sleep(wait)  # the counters tick every 10 ms: fewer ticks would say little
        busy0, total0, own0 = self._start
        busy1, total1, own1 = _cpu_seconds()
        if total1 <= total0:
            return 0.0
        return min(1.0, max(0.0, (busy1 - busy0 - (own1 - own0)) / (total1 - total0)))


def shared_cores_choice(load: float) -> RuntimeChoice:
    """ONNX Runtime on cores that other work keeps busy, with the reason."""
    return RuntimeChoice(
        "onnx",
        f"other processes keep {load:.0%} of the CPU busy: ONNX Runtime, whose threads keep their share "
        "where PyTorch's stall (what was measured on a quiet machine applies when it is quiet again)",
    )


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


def measure_choice(backends: dict[str, Any], weights_sha256: str, size: int, batch: int, threads: int) -> RuntimeChoice:
    """Time each runtime's network on a few batches (alternating), keep the faster, and cache the answer."""
    images = max(1, min(batch, MEASURE_BATCH))
    inputs = torch.rand(images, 3, size, size)
    times: dict[str, list[float]] = {name: [] for name in backends}
    with torch.inference_mode():
        for backend in backends.values():
            backend(inputs)  # first call: allocations, ONNX Runtime's shape-specific set-up
        for round_ in range(TIMED_ROUNDS):
            order = list(backends) if round_ % 2 == 0 else list(reversed(backends))
            for name in order:
                start = time.perf_counter()
                backends[name](inputs)
                times[name].append((time.perf_counter() - start) / images)
    ms = {name: round(1000 * min(values), 2) for name, values in times.items()}
    runtime = faster(ms)
    record = {
        "runtime": runtime,
        "ms_per_image": ms,
        "size": size,
        "batch": batch,
        "threads": threads,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    path = _choice_file(weights_sha256, size, batch, threads)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(record))
    except OSError:
        pass  # a read-only cache: measured again next time
    return RuntimeChoice(
        runtime, f"{_comparison(runtime, ms, threads)}, measured now on {TIMED_ROUNDS} batches of {images}"
    )


def faster(ms: dict[str, float]) -> str:
    """The runtime to use for these per-image times: ONNX Runtime unless PyTorch beats it by `TORCH_MARGIN`."""
    if "onnx" in ms and "torch" in ms:
        return "torch" if ms["torch"] * TORCH_MARGIN < ms["onnx"] else "onnx"
    return min(ms, key=ms.get)


def _comparison(runtime: str, ms: dict[str, float], threads: int) -> str:
    label = {"onnx": "ONNX Runtime", "torch": "PyTorch"}
    other = next((name for name in ms if name != runtime), None)
    if other is None:
        return f"{label[runtime]} {ms[runtime]:.1f} ms/image on {threads} CPU threads"
    text = (
        f"{label[runtime]} {ms[runtime]:.1f} ms/image against {label[other]}'s {ms[other]:.1f} "
        f"({ms[other] / max(ms[runtime], 1e-9):.2f}x) on {threads} CPU threads"
    )
    if ms[runtime] > ms[other]:  # ONNX Runtime kept within the margin
        text += f" (PyTorch is not {TORCH_MARGIN:.2f}x faster: within what the timing varies)"
    return text

"""The CPU a process may use: its cores, the share other processes leave free, and PyTorch's threads on it.

Training and prediction size their threads the same way: the cores that other processes leave free, at
least one. PyTorch's thread pool stalls when it has more threads than free cores (2 cores beside a
training: 56 -> 5 images/s predicting with 2 threads, 28 with 1), and ultralytics' defaults leave cores
idle (its import sets ``OMP_NUM_THREADS=1``; its ``select_device`` gives a CPU training ``min(8, cores - 1)``
threads, one on a 2-core machine).
"""

from __future__ import annotations

import os
import time

MIN_LOAD_WINDOW_S = 0.1  # the counters tick every 10 ms: fewer ticks would say little


def cpu_threads() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity call on this system (macOS, Windows)
        return max(1, os.cpu_count() or 1)


def free_threads(others: float, cores: int) -> int:
    """Threads for the work: the cores other processes leave free (``others``: the share of the CPU they use),
    at least one. A core counts as taken when they keep more than half of it busy."""
    return max(1, cores - int(others * cores + 0.5))


def use_torch_threads(threads: int) -> None:
    """PyTorch's intra-op threads in this process."""
    import torch

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
    processes used since (0 quiet, 1 every core). Made before a model loads, its window costs nothing."""

    def __init__(self) -> None:
        self._start, self._since = _cpu_seconds(), time.monotonic()

    def others(self) -> float:
        if (wait := MIN_LOAD_WINDOW_S - (time.monotonic() - self._since)) > 0:
            time.sleep(wait)
        busy0, total0, own0 = self._start
        busy1, total1, own1 = _cpu_seconds()
        if total1 <= total0:
            return 0.0
        return min(1.0, max(0.0, (busy1 - busy0 - (own1 - own0)) / (total1 - total0)))

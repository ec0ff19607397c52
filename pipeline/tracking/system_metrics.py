"""MLflow's system-metric collectors, published through a Tracker (so they are spooled too)."""

from __future__ import annotations

import threading
from typing import Any

from mlflow.system_metrics.metrics.cpu_monitor import CPUMonitor
from mlflow.system_metrics.metrics.disk_monitor import DiskMonitor
from mlflow.system_metrics.metrics.network_monitor import NetworkMonitor
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from pipeline.tracking.tracker import Tracker


class SystemMetricsSampler(SystemMetricsMonitor):
    """MLflow's own system-metric collectors (CPU, memory, disk, network, GPU), published through a Tracker.

    MLflow's monitor stops for good at the first failed request; publishing through the Tracker
    spools the samples like every other record instead.
    """

    def __init__(self, tracker: Tracker, interval_s: float = 10.0):
        # Not MLflow's __init__: it opens a client on the store (to log by itself), which at a training's start
        # could fail or race another process creating a new SQLite store. Only the collectors are taken.
        self.monitors = [CPUMonitor(), DiskMonitor(), NetworkMonitor()]
        if gpu_monitor := self._initialize_gpu_monitor():
            self.monitors.append(gpu_monitor)
        self.sampling_interval = interval_s
        self._shutdown_event = threading.Event()
        self._process: threading.Thread | None = None
        self._metrics_prefix = "system/"
        self._tracker = tracker
        self._logging_step = _next_step(tracker.spool.records("metrics"), self._metrics_prefix)

    def monitor(self) -> None:
        while not self._shutdown_event.is_set():
            self.collect_metrics()
            self._shutdown_event.wait(self.sampling_interval)
            self.publish_metrics(self.aggregate_metrics())  # the last, partial interval is published too

    def publish_metrics(self, metrics: dict[str, float]) -> None:
        self._tracker.log_metrics({self._metrics_prefix + k: v for k, v in metrics.items()}, self._logging_step)
        self._logging_step += 1
        for monitor in self.monitors:
            monitor.clear_metrics()

    def finish(self) -> None:
        if self._process is not None:
            self._shutdown_event.set()
            self._process.join(timeout=5)
            self._process = None


def _next_step(records: list[dict[str, Any]], prefix: str) -> int:
    steps = [r["step"] for r in records if any(k.startswith(prefix) for k in r["metrics"])]
    return max(steps) + 1 if steps else 0

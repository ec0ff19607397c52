"""One training's gradient record: the monitor, the health checks, the files in the run, the MLflow side.

Files, under ``<training folder>/gradients/``: ``history.jsonl`` (one line per epoch; a resume reads it
back so the heatmaps and the vanishing streaks carry on), ``events.jsonl`` (health events, append-only),
``heatmaps.png`` (redrawn after each epoch on the painter's thread) and ``report.json`` (at the end). The epoch's metrics are not sent
from here: the trainer puts them in the epoch's record, which carries the exactly-once guarantee.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pipeline.config import GradientsConfig
from pipeline.train.errors import NonFiniteGradients
from pipeline.train.gradient_health import NONFINITE, GradientHealth, HealthEvent
from pipeline.train.gradient_report import HEATMAP, HeatmapPainter, report, write_report
from pipeline.train.gradients import EpochGradients, GradientMonitor

LOG = logging.getLogger("pipeline.train")
ARTIFACT_DIR = "gradients"


class GradientRecorder:
    def __init__(
        self,
        model: nn.Module,
        settings: GradientsConfig,
        folder: Path,
        *,
        amp: bool = False,
        clip_norm: float = 10.0,
        tracker: Any = None,
        resumed_epochs: int = 0,
    ):
        self.settings = settings
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.monitor = GradientMonitor(model, settings.grouping, settings.every, clip_norm)
        self.health = GradientHealth(settings, amp=amp)
        self.tracker = tracker
        self.history: dict[int, EpochGradients] = {}
        self.last: EpochGradients | None = None
        self._tags_sent: dict[str, str] = {}
        self._restore(resumed_epochs)
        self.painter = HeatmapPainter(self.folder / HEATMAP, self._log_artifact) if settings.heatmaps else None

    # ---- the optimizer step ----------------------------------------------------------------------------

    def due(self) -> bool:
        return self.monitor.due()

    def observe_gradients(self) -> Tensor:
        return self.monitor.observe_gradients()

    def observe_update(self) -> None:
        self.monitor.observe_update()

    # ---- epochs ----------------------------------------------------------------------------------------

    def begin_epoch(self) -> None:
        self.monitor.reset()
        self.last = None

    def end_epoch(self, epoch: int) -> EpochGradients | None:
        """Reduce, judge and draw the epoch (1-based); raises NonFiniteGradients when told to stop on them."""
        self.last = self.monitor.end_epoch(epoch)
        if self.last is None:
            return None
        if epoch <= max(self.history, default=0):  # a redo: count the epoch once in the streaks
            self.health.rewind([e for e in self._ordered() if e.epoch < epoch])
        self.history[epoch] = self.last
        self._append("history.jsonl", self.last.to_json())
        events = self.health.check(self.last)
        for event in events:
            LOG.warning(event.message())
            self._append("events.jsonl", event.to_json())
        self._publish(events)
        fatal = next((e for e in events if e.kind == NONFINITE), None)
        if fatal is not None and self.settings.stop_on_nonfinite:
            raise NonFiniteGradients(fatal.message() + "; stopped (gradients.stop_on_nonfinite)")
        return self.last

    def metrics(self) -> dict[str, float]:
        """The last epoch's metrics, for the epoch record."""
        return self.last.metrics(self.settings.reductions) if self.last is not None else {}

    def finish(self) -> Path:
        """Finish the last heatmap, write the JSON report and hand the files to the tracker."""
        if self.painter is not None:
            self.painter.close()
        events = self._read("events.jsonl")
        summary = {
            "grouping": self.settings.grouping,
            "every": self.settings.every,
            "health": self.health.status(),
            "vanishing_layers": sorted(self.health.vanishing),
            "exploding_epochs": self.health.exploding_epochs,
            "numel": dict(zip(self.monitor.groups.names, self.monitor.groups.numel.tolist(), strict=True)),
        }
        path = write_report(self.folder / "report.json", report(self._ordered(), events, summary))
        for name in ("report.json", "events.jsonl"):
            if (self.folder / name).exists():
                self._log_artifact(self.folder / name)
        return path

    # ---- internals -------------------------------------------------------------------------------------

    def _publish(self, events: list[HealthEvent]) -> None:
        if self.painter is not None:
            self.painter.request(self._ordered())
        tags = self.health.tags()
        if self.tracker is not None and tags != self._tags_sent:  # journal the tags when they change, not every epoch
            self.tracker.set_tags(tags)
            self._tags_sent = tags
        if events:
            self._log_artifact(self.folder / "events.jsonl")

    def _log_artifact(self, path: Path) -> None:
        # The same artifact path each time: the run always shows the latest version of the file.
        if self.tracker is not None:
            self.tracker.log_artifact(path, ARTIFACT_DIR)

    def _ordered(self) -> list[EpochGradients]:
        return [self.history[e] for e in sorted(self.history)]

    def _restore(self, resumed_epochs: int) -> None:
        """A resumed training keeps the epochs its checkpoint covers; a later line for an epoch replaces an earlier one."""
        if resumed_epochs == 0:  # a new training in a reused folder starts a new record
            for name in ("history.jsonl", "events.jsonl", "report.json"):
                (self.folder / name).unlink(missing_ok=True)
            return
        for line in self._read("history.jsonl"):
            epoch = EpochGradients.from_json(line)
            if epoch.epoch <= resumed_epochs and epoch.groups == self.monitor.groups.names:
                self.history[epoch.epoch] = epoch
        self.health.rewind(self._ordered())  # the streaks carry on; the events were raised the first time

    def _append(self, name: str, record: dict[str, Any]) -> None:
        with (self.folder / name).open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")

    def _read(self, name: str) -> list[dict[str, Any]]:
        path = self.folder / name
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a kill: the epoch is redone and written again
                continue
        return records

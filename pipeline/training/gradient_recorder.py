"""One training's gradient record: the monitor, the diagnosis, the files in the run, the MLflow side.

Files, under ``<training folder>/gradients/``: ``history.jsonl`` (one line per epoch; a resume reads it
back so the heatmaps and the diagnosis carry on), ``diagnosis.json`` (the findings per epoch and the run's
health and causes, rewritten each epoch; diagnosis.py), ``events.jsonl`` (every finding, append-only),
``heatmaps.png`` (redrawn after each epoch on the painter's thread) and ``report.json`` (at the end). The epoch's metrics are not sent
from here: the trainer puts them in the epoch's record, which carries the exactly-once guarantee. The files
rewritten each epoch go to MLflow after the first epoch, then at most every UPLOAD_INTERVAL_S, and their last
version at the end: on a short training every epoch's upload (and the server's work storing it) is most of
what tracking costs, and only the latest version of a file is kept in the run anyway.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from pipeline.config import GradientsConfig
from pipeline.files import write_atomic
from pipeline.training.assignment import Assignment, assignment_from_json, assignment_to_json, level_metrics
from pipeline.training.diagnosis import NONFINITE, EpochRecord, Finding, ModelFacts, diagnose, merge, summarize
from pipeline.training.errors import NonFiniteGradients
from pipeline.training.gradient_health import message, model_facts
from pipeline.training.gradient_report import HEATMAP, TABLE, HeatmapPainter, report, write_report, write_table
from pipeline.training.gradients import EpochGradients, GradientMonitor

LOG = logging.getLogger("pipeline.training")
ARTIFACT_DIR = "gradients"
DIAGNOSIS = "diagnosis.json"
UPLOAD_INTERVAL_S = 30.0


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
        optimizer: Any = None,
    ):
        self.settings = settings
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.monitor = GradientMonitor(model, settings.grouping, settings.every, clip_norm)
        self.facts: ModelFacts = model_facts(model, settings.grouping, amp=amp, optimizer=optimizer)
        self.tracker = tracker
        self.history: dict[int, EpochGradients] = {}
        self.records: dict[int, EpochRecord] = {}  # what the diagnosis reads: gradients, loss, positives per level
        self.findings: dict[int, list[Finding]] = {}
        self.last: EpochGradients | None = None
        self.last_assignment: Assignment | None = None  # the last epoch's positives per level (level_metrics)
        self._tags_sent: dict[str, str] = {}
        self._uploads = threading.Lock()  # the painter's thread logs the heatmaps
        self._uploaded: dict[Path, float] = {}  # when each file last went to the tracker
        self._unsent: set[Path] = set()  # rewritten since
        self._restore(resumed_epochs)
        self.painter = HeatmapPainter(self.folder / HEATMAP, self._log_artifact) if settings.heatmaps else None

    # ---- the optimizer step ----------------------------------------------------------------------------

    def due(self) -> bool:
        return self.monitor.due()

    def observe_gradients(self, loss: Tensor | dict[str, Tensor] | None = None) -> Tensor:
        return self.monitor.observe_gradients(loss)

    def observe_update(self) -> None:
        self.monitor.observe_update()

    # ---- epochs ----------------------------------------------------------------------------------------

    def begin_epoch(self) -> None:
        self.monitor.reset()
        self.last = None

    def end_epoch(
        self, epoch: int, loss: float | None = None, assignment: Assignment | None = None
    ) -> EpochGradients | None:
        """Reduce, diagnose and draw the epoch (1-based), given its mean train loss and positives per level;
        raises NonFiniteGradients when told to stop on them."""
        self.last = self.monitor.end_epoch(epoch)
        self.last_assignment = assignment
        if self.last is None:
            return None
        for later in [e for e in self.records if e >= epoch]:  # a redo: the diagnosis reads the epoch once
            del self.records[later]
        self.history[epoch] = self.last
        self.records[epoch] = EpochRecord(self.last, loss, assignment)
        self._append("history.jsonl", self.last.to_json())
        self._log_artifact(write_table(self._ordered(), self.folder / TABLE))  # every layer, reduction, epoch
        found = diagnose([self.records[e] for e in sorted(self.records)], self.facts)
        self.findings[epoch] = merge(self.findings.get(epoch, []), found)
        for finding in found:
            LOG.log(logging.INFO if finding.severity == "info" else logging.WARNING, message(finding))
            self._append("events.jsonl", finding.to_json())
        self._write_diagnosis()
        self._publish(found)
        fatal = next((f for f in found if f.cause == NONFINITE), None)
        if fatal is not None and self.settings.stop_on_nonfinite:
            raise NonFiniteGradients(message(fatal) + "; stopped (gradients.stop_on_nonfinite)")
        return self.last

    def metrics(self) -> dict[str, float]:
        """The last epoch's metrics, for the epoch record."""
        if self.last is None:
            return {}
        # Per-block (or per-layer) statistics and the run-wide totals, and the positives each head level got.
        return self.last.metrics(self.settings.reductions, self.settings.detail) | level_metrics(self.last_assignment)

    def finish(self) -> Path:
        """Finish the last heatmap, write the JSON report and hand the files to the tracker."""
        if self.painter is not None:
            self.painter.close()
        events = self._read("events.jsonl")  # (the painter is closed: no upload races the last ones below)
        diagnosis = self.diagnosis()
        summary = {
            "grouping": self.settings.grouping,
            "every": self.settings.every,
            "health": diagnosis["health"],
            "causes": diagnosis["causes"],
            "numel": dict(zip(self.monitor.groups.names, self.monitor.groups.numel.tolist(), strict=True)),
        }
        path = write_report(self.folder / "report.json", report(self._ordered(), events, summary))
        last = {self.folder / name for name in ("report.json", "events.jsonl", DIAGNOSIS)} | self._unsent
        for file in sorted(last):
            if file.exists():
                self._log_artifact(file, now=True)
        return path

    # ---- internals -------------------------------------------------------------------------------------

    def diagnosis(self) -> dict[str, Any]:
        """diagnosis.json's content: health, causes, the latest finding of each cause, the findings per epoch."""
        out = summarize(self.findings)
        out["inputs"] = {  # what the diagnosis read, per epoch: a resume carries on from it
            str(e): {"loss": r.loss, "assignment": assignment_to_json(r.assignment)}
            for e, r in sorted(self.records.items())
        }
        return out

    def tags(self) -> dict[str, str]:
        diagnosis = summarize(self.findings)
        return {"gradients.health": diagnosis["health"], "gradients.causes": ",".join(diagnosis["causes"])}

    def _write_diagnosis(self) -> None:
        write_atomic(self.folder / DIAGNOSIS, json.dumps(self.diagnosis(), indent=1, allow_nan=True))

    def _publish(self, found: list[Finding]) -> None:
        if self.painter is not None:
            self.painter.request(self._ordered(), self.findings)
        tags = self.tags()
        if self.tracker is not None and tags != self._tags_sent:  # journal the tags when they change, not every epoch
            self.tracker.set_tags(tags)
            self._tags_sent = tags
        self._log_artifact(self.folder / DIAGNOSIS)
        if found:
            self._log_artifact(self.folder / "events.jsonl")

    def _log_artifact(self, path: Path, now: bool = False) -> None:
        """Hand ``path`` to the tracker, unless it went less than UPLOAD_INTERVAL_S ago (then at the next chance,
        or at the end). The same artifact path each time: the run always shows the latest version of the file."""
        if self.tracker is None:
            return
        with self._uploads:
            last = self._uploaded.get(path)
            if not now and last is not None and time.monotonic() - last < UPLOAD_INTERVAL_S:
                self._unsent.add(path)
                return
            self._uploaded[path] = time.monotonic()
            self._unsent.discard(path)
        self.tracker.log_artifact(path, ARTIFACT_DIR)

    def _ordered(self) -> list[EpochGradients]:
        return [self.history[e] for e in sorted(self.history)]

    def _restore(self, resumed_epochs: int) -> None:
        """A resumed training keeps the epochs its checkpoint covers; a later line for an epoch replaces an earlier one."""
        if resumed_epochs == 0:  # a new training in a reused folder starts a new record
            for name in ("history.jsonl", "events.jsonl", "report.json", DIAGNOSIS, TABLE):
                (self.folder / name).unlink(missing_ok=True)
            return
        for line in self._read("history.jsonl"):
            epoch = EpochGradients.from_json(line)
            if epoch.epoch <= resumed_epochs and epoch.groups == self.monitor.groups.names:
                self.history[epoch.epoch] = epoch
        # The diagnosis carries on from what it read and found in the epochs the checkpoint covers.
        saved = self._read_json(DIAGNOSIS)
        inputs = saved.get("inputs", {})
        for e, gradients in self.history.items():
            kept = inputs.get(str(e), {})
            self.records[e] = EpochRecord(gradients, kept.get("loss"), assignment_from_json(kept.get("assignment")))
        for e, found in saved.get("epochs", {}).items():
            if int(e) <= resumed_epochs:
                self.findings[int(e)] = [Finding.from_json(f) for f in found]

    def _read_json(self, name: str) -> dict[str, Any]:
        try:
            return json.loads((self.folder / name).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

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

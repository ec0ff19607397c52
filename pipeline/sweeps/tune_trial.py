"""One sweep trial as a Ray Tune Trainable: one child run, trained in a thread, one Tune result per epoch.

The training runs in a thread of the trial's actor and stops after each epoch (`EpochListener`) until
Tune asks for the next step, so a scheduler's decision falls between epochs: when ASHA stops a trial,
Tune calls `cleanup`, the training hears "stop" at that boundary and ends its run as KILLED with
``pipeline.stopped_by=asha``; cleanup waits for that, so every epoch it trained is complete in MLflow.
The last epoch is not reported on its own: its result is the trial's final one, after the final
validation and the model's logging. A checkpoint is the training folder's name: a restored trial
(`sweep` after a kill) resumes that folder from its last.pt into the same run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from pipeline.config import Config
from pipeline.sweeps.sweep import (
    INDEX_TAG,
    SCORE,
    Child,
    child_config,
    first_error_line,
    record_failure,
    short_name,
    validated_child,
)
from pipeline.training.epoch_listener import EpochReport, StoppedEarly
from pipeline.training.epoch_metrics import SUMMARY_METRICS

LOG = logging.getLogger("pipeline.sweeps")
TRIAL_TAG = "pipeline.sweeps.trial"
CHECKPOINT_FILE = "trial.json"
STATUS = "trial_status"  # in a trial's final result: FINISHED or FAILED
_CLEANUP_WAIT_S = 300.0  # a stopped training's run is closed within finish_timeout_s; this bounds a hung one


@dataclass
class TrialContext:
    """What every trial needs from the driver (sent once to each actor by `tune.with_parameters`)."""

    raw: dict[str, Any]  # the config file as read
    config_path: str
    overrides: list[str]  # for every child
    planned: list[list[str]]  # each planned child's overrides, by index; empty for Optuna
    parent_run_id: str
    sweep_name: str
    tracking_uri: str
    cwd: str  # the driver's working folder: relative paths in the config are read from it
    threads: int = 1  # torch threads per trial (its CPUs)
    cluster: bool = False  # on the user's Ray cluster ($RAY_ADDRESS): a missing path may be one the worker cannot see
    names: dict[str, str] = field(default_factory=dict)  # Optuna's flat keys -> section.key


class _Channel:
    """Between the training thread and Tune: epoch reports one way, go-on or stop the other."""

    def __init__(self) -> None:
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._go = threading.Semaphore(0)
        self._stop = False

    def listen(self, report: EpochReport) -> str | None:  # runs in the training thread
        self.messages.put(("epoch", report))
        self._go.acquire()
        return "asha" if self._stop else None

    def go_on(self) -> None:
        self._go.release()

    def stop(self) -> None:
        self._stop = True
        self._go.release()


def _final_metrics(run_id: str, uri: str) -> dict[str, float]:
    """A finished run's last epoch as MLflow has it (the followed metric), its best score and its epoch count."""
    from pipeline.tracking.store import client_for

    client = client_for(uri)
    metrics = client.get_run(run_id).data.metrics
    history = client.get_metric_history(run_id, "mAP50_95")
    final = {key: metrics[key] for key in (*SUMMARY_METRICS, SCORE) if key in metrics}
    return {**final, "epochs": max((m.step for m in history), default=0)}


class SweepTrial(tune.Trainable):
    def setup(self, config: dict[str, Any], context: TrialContext) -> None:

        self.context = context
        self.index = int(config["index"])  # the plan's numbering, or the Optuna searcher's
        if context.planned:  # a grid or a random search: planned and validated by the driver
            combination = context.planned[self.index]
        else:  # Optuna: this trial's values, validated by the config when the training starts
            from pipeline.sweeps.search_space import overrides_of

            drawn = {context.names.get(k, k): v for k, v in config.items() if k != "index"}
            combination = overrides_of(drawn)
        self.child = Child(self.index, combination, f"{context.sweep_name} {short_name(combination)}")
        self.channel = _Channel()
        self.thread: threading.Thread | None = None
        self.waiting = False  # the training waits at an epoch boundary for the next step
        self.save_dir: str | None = None
        self.epoch = 0  # the last epoch trained (ASHA's time)
        self.resume_dir: str | None = None
        if Path(context.cwd).is_dir():  # Tune moved into its trial folder; the config's relative paths are the driver's
            os.chdir(context.cwd)

    # ---- the training thread -----------------------------------------------------------------------

    def _config(self) -> Config:
        ctx = self.context
        config = validated_child(ctx.raw, ctx.config_path, ctx.overrides, self.child.overrides)
        data = Path(config.data.path).expanduser()
        if ctx.cluster and not data.exists() and (data.suffix or "/" in config.data.path):
            host = socket.gethostname()
            raise FileNotFoundError(
                f"data.path: {config.data.path} is not visible on worker {host}; "
                "a sweep on a Ray cluster needs its data on a file system every worker sees"
            )
        config = child_config(config, self.child, ctx.parent_run_id, ctx.sweep_name)
        tags = {**config.tracking.tags, TRIAL_TAG: self.trial_id}
        tracking = config.tracking.model_copy(update={"uri": ctx.tracking_uri, "tags": tags})
        # The trial's share of the CPUs (--cpus-per-trial), not the cores the trials beside it leave free this moment.
        train = config.train.model_copy(update={"threads": config.train.threads or ctx.threads})
        return config.model_copy(update={"tracking": tracking, "train": train})

    def _earlier_run(self) -> tuple[str, str]:
        """What a sweep killed earlier left of this trial: ("finished", run id) is kept as it is, ("resume", folder)
        resumes into its run from its last.pt, ("new", "") trains (a run killed before its first checkpoint is closed)."""
        from pipeline.tracking import runs as tracking_runs
        from pipeline.tracking.registry import run_output_dir

        uri = self.context.tracking_uri
        found = tracking_runs.child_run(self.context.parent_run_id, INDEX_TAG, str(self.index), uri)
        if found is None or found[1] not in {"RUNNING", "FINISHED"}:
            return ("resume", self.resume_dir) if self.resume_dir else ("new", "")
        run_id, status = found
        if status == "FINISHED":
            return "finished", run_id
        folder = self.resume_dir or run_output_dir(run_id, uri)
        if folder and (Path(folder) / "weights" / "last.pt").is_file():
            return "resume", folder
        note = "the sweep was stopped before this trial's first epoch ended; the trial was trained again"
        tracking_runs.finish_run(run_id, "KILLED", {}, {"pipeline.error": note}, uri)
        return "new", ""

    def _train(self) -> None:
        from pipeline.tracking import runs as tracking_runs
        from pipeline.training.run import resume, train

        uri = self.context.tracking_uri
        config: Config | None = None
        end: dict[str, Any] = dict.fromkeys(SUMMARY_METRICS, math.nan)  # Tune wants the followed metric in every result
        try:
            config = self._config()
            try:
                kind, earlier = self._earlier_run()
            except Exception as exc:  # noqa: BLE001 - the tracking server away: train; the spool keeps the records
                LOG.warning(
                    "sweep: trial %d: MLflow cannot say what an earlier try left (%s)",
                    self.index,
                    first_error_line(exc),
                )
                kind, earlier = ("resume", self.resume_dir) if self.resume_dir else ("new", "")
            if kind == "finished":
                run_id: str | None = earlier
            elif kind == "resume":
                run_id = resume(earlier, tracking_uri=uri, on_epoch=self.channel.listen).run_id
            else:
                run_id = train(config, on_epoch=self.channel.listen).run_id
            end.update({STATUS: "FINISHED", "run_id": run_id or ""})
            try:
                end.update(_final_metrics(run_id, uri) if run_id else {})
            except Exception as exc:  # noqa: BLE001 - the training finished; its records wait in its spool
                LOG.warning(
                    "sweep: trial %d: its final metrics are not readable yet (%s)", self.index, first_error_line(exc)
                )
        except StoppedEarly:
            end[STATUS] = "KILLED"  # cleanup stopped it; Tune reads no more results
        except Exception as exc:  # noqa: BLE001 - one failed trial must not end the sweep
            self.child.error = first_error_line(exc)
            run_id = None
            if config is not None:
                run_id = record_failure(tracking_runs, self.context.parent_run_id, self.child, config, uri)
            end.update({STATUS: "FAILED", "error": self.child.error, "run_id": run_id or ""})
        self.channel.messages.put(("end", end))

    # ---- Tune's side ---------------------------------------------------------------------------------

    def _about(self) -> dict[str, Any]:
        return {"index": self.index, "overrides": " ".join(self.child.overrides), "epoch": self.epoch}

    def step(self) -> dict[str, Any]:
        if self.thread is None:
            self.thread = threading.Thread(target=self._train, name=f"trial-{self.index}", daemon=True)
            self.thread.start()
        elif self.waiting:
            self.waiting = False
            self.channel.go_on()
        kind, message = self.channel.messages.get()
        if kind == "epoch":
            self.waiting = True
            self.save_dir, self.epoch = str(message.save_dir), message.epoch
            return {**message.metrics, "run_id": message.run_id or "", **self._about()}
        self.epoch = max(self.epoch, int(message.pop("epochs", 0)))
        return {**message, **self._about(), "done": True}

    def save_checkpoint(self, checkpoint_dir: str) -> dict[str, Any] | None:
        Path(checkpoint_dir, CHECKPOINT_FILE).write_text(json.dumps({"save_dir": self.save_dir}), encoding="utf-8")
        return None

    def load_checkpoint(self, checkpoint: dict[str, Any] | str) -> None:
        saved = json.loads(Path(str(checkpoint), CHECKPOINT_FILE).read_text(encoding="utf-8"))
        self.resume_dir = saved.get("save_dir")

    def cleanup(self) -> None:
        if self.thread is not None and self.thread.is_alive():
            self.channel.stop()  # the training ends its run as KILLED (pipeline.stopped_by) at this boundary
            self.thread.join(_CLEANUP_WAIT_S)

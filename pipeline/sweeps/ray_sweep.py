"""``sweep --engine ray``: the sweep's trials run by Ray Tune, in parallel, stopped early by ASHA, resumable.

Each trial is one child run of the parent, trained as `SweepTrial` says (`pipeline.sweeps.tune_trial`).
The plan is the sequential sweep's own (`plan_sweep`): a grid or random configs, every one validated
before Ray starts; Optuna draws its trials as results come. Tune keeps its state under
``<train.project>/sweeps/<name>-<key>/``, where ``key`` hashes the command (config file, overrides,
search, space, seed, scheduler): the same command after a kill finds the unfinished sweep there and
continues it through Tune's restore (``Tuner.restore``): finished trials are not rerun, a trial that was
training resumes into its own run. ``sweep --resume PARENT_RUN`` finds that folder from the parent's tag.
One process runs a sweep's folder at a time (`held_state_folder`): the same command started twice at once
stops the second with one line naming the first, or with ``--wait`` waits for it.

A local Ray listens on 127.0.0.1 only; ``$RAY_ADDRESS`` joins the user's cluster. A store in a file on
this machine (SQLite, ``file:``) cannot be shared by processes on several machines: on a cluster it is
refused. On one machine parallel trials share it; the tracker's spool retries a write the database was
too busy to take.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError
from pipeline.destinations import writer_lock
from pipeline.files import write_atomic
from pipeline.messages import UserError
from pipeline.sweeps.sweep import (
    SCORE,
    Child,
    SweepPlan,
    SweepResult,
    finish_parent,
    first_error_line,
    parse_grid,
    plan_sweep,
    record_failure,
    short_name,
)
from pipeline.training.epoch_metrics import SUMMARY_METRICS

LOG = logging.getLogger("pipeline.sweeps")
STATE_FILE = "sweep.json"
STATE_TAG = "pipeline.sweeps.state"  # on the parent run: the folder `sweep --resume` continues from
SCHEDULERS = ("asha",)


class SweepError(UserError):
    """Ray Tune itself could not go on (the sweep's folder keeps its state for a resume)."""


class SweepResumeError(ConfigError):
    """Nothing to resume; the message says why in one line."""


@dataclass(frozen=True)
class RayOptions:
    parallel: int = 2  # trials at a time
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    early_stop: str = ""  # "" (every trial trains all its epochs) or "asha"
    metric: str = "mAP50_95"  # what ASHA and Optuna follow
    grace: int = 1  # epochs every trial trains before ASHA may stop it

    @property
    def mode(self) -> str:
        return "min" if "loss" in self.metric else "max"

    def check(self, epochs: int) -> None:
        if self.parallel < 1:
            raise ConfigError(f"--parallel {self.parallel}: must be at least 1")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ConfigError("--cpus-per-trial must be above 0 and --gpus-per-trial at least 0")
        if self.early_stop and self.early_stop not in SCHEDULERS:
            raise ConfigError(f"--early-stop {self.early_stop}: one of {', '.join(SCHEDULERS)}")
        if self.metric not in SUMMARY_METRICS:  # what each trial reports to Tune after every epoch
            raise ConfigError(
                f"--metric {self.metric}: one of {', '.join(SUMMARY_METRICS)} (reported after every epoch)"
            )
        if self.grace < 1:
            raise ConfigError(f"--grace {self.grace}: must be at least 1 epoch")
        if self.early_stop and self.grace >= epochs:
            LOG.warning("--grace %d: the trials train %d epochs; ASHA can stop none of them", self.grace, epochs)


def check_tracking_for_cluster(uri: str, address: str) -> None:
    """On a Ray cluster every worker must reach the tracking store: a file on this machine cannot be that."""
    in_a_file = uri.startswith(("sqlite:", "file:")) or (
        "://" not in uri and uri not in {"databricks", "databricks-uc"}
    )
    if address and in_a_file:
        raise ConfigError(
            f"tracking.uri: {uri} is a store in a file on this machine; trials on the Ray cluster at {address} "
            "need a tracking server every worker reaches (mlflow server, http://...)"
        )


def _state_folder(plan: SweepPlan, arguments: dict[str, Any]) -> tuple[Path, dict[str, Any] | None]:
    """The sweep's Tune folder and its state: the unfinished one this command left, else a new folder."""
    command = json.dumps(arguments, sort_keys=True, default=str).encode()
    digest = hashlib.sha256(command + Path(arguments["config_path"]).read_bytes()).hexdigest()[:10]
    root = Path(plan.base.train.project).expanduser().resolve() / "sweeps"
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in plan.name)[:60]
    for folder in sorted(root.glob(f"{slug}-{digest}*")):
        state = _read_state(folder)
        if state is not None and state.get("status") != "FINISHED":
            return folder, state
    number, folder = 1, root / f"{slug}-{digest}"
    while folder.exists():
        number += 1
        folder = root / f"{slug}-{digest}-{number}"
    return folder, None


@contextmanager
def held_state_folder(plan: SweepPlan, arguments: dict[str, Any]) -> Iterator[tuple[Path, dict[str, Any] | None]]:
    """`_state_folder`, held with `writer_lock` while the sweep runs: the same command started twice at once
    never runs Tune twice in one folder; the second stops at once, or with ``--wait`` waits, then takes the
    folder the command would take after the first (a new one once the first finished)."""
    while True:
        folder, _ = _state_folder(plan, arguments)
        with writer_lock(folder, "sweep", "--name"):
            again, state = _state_folder(plan, arguments)  # what the previous holder left
            if again == folder:
                yield folder, state
                return


def _read_state(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / STATE_FILE, json.dumps(state, indent=1))


def ray_sweep(
    config_path: str | Path,
    grid: Mapping[str, Sequence[Any]] | Sequence[str],
    overrides: Sequence[str] = (),
    name: str = "",
    on_child: Callable[[Child], None] | None = None,
    search: str = "grid",
    space: Sequence[str] = (),
    samples: int = 1,
    seed: int = 0,
    options: RayOptions = RayOptions(),
) -> SweepResult:
    """Train the sweep's trials with Ray Tune as children of one parent run (or continue the unfinished one)."""
    from pipeline.ray_local import cluster_address
    from pipeline.tracking import runs as tracking_runs
    from pipeline.tracking.store import resolve_tracking_uri

    grid = grid if isinstance(grid, Mapping) else parse_grid(list(grid), required=search == "grid")
    plan = plan_sweep(config_path, grid, overrides, name, search, space, samples, seed)
    options.check(plan.max_epochs)
    uri = resolve_tracking_uri(plan.base.tracking.uri)
    check_tracking_for_cluster(uri, cluster_address())
    arguments = {
        "config_path": str(Path(config_path).resolve()),
        "grid": {k: list(map(str, v)) for k, v in grid.items()},
        "overrides": list(overrides),
        "name": name,
        "search": search,
        "space": list(space),
        "samples": samples,
        "seed": seed,
        "options": asdict(options),
    }
    with held_state_folder(plan, arguments) as (folder, state):  # one sweep at a time in its folder
        resuming = state is not None
        if state is not None:
            parent = state["parent_run_id"]
            tracking_runs.reopen_run(parent, uri)
            LOG.warning("sweep: continuing the unfinished sweep %s (parent run %s)", folder, parent)
        else:
            params = {
                **plan.params,
                "engine": "ray",
                "parallel": options.parallel,
                "cpus_per_trial": options.cpus_per_trial,
                "gpus_per_trial": options.gpus_per_trial,
                "scheduler": options.early_stop or "none",
                "metric": options.metric,
                **({"grace": options.grace} if options.early_stop else {}),
            }
            tags = {**plan.base.tracking.tags, STATE_TAG: str(folder)}
            parent = tracking_runs.start_parent_run(plan.base.tracking.experiment, plan.name, params, tags, uri)
            state = {"parent_run_id": parent, "status": "RUNNING", "arguments": arguments}
            _write_state(folder, state)
        result = SweepResult(parent, plan.base.tracking.experiment, uri)
        status = "FAILED"
        try:
            grid_results = _fit(plan, folder, parent, uri, options, seed, samples, on_child, resuming)
            result.children = sorted((_child_of(plan, r, parent, uri) for r in grid_results), key=lambda c: c.index)
            unfinished = [c for c in result.children if c.status in {"PENDING", "RUNNING"}]
            status = "KILLED" if unfinished else "FINISHED" if result.finished else "FAILED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            finish_parent(tracking_runs, result, status, uri)
            _write_state(folder, {**state, "status": status})
        return result


def resume_sweep(
    parent_run_id: str, tracking_uri: str = "", on_child: Callable[[Child], None] | None = None
) -> SweepResult:
    """Continue the Ray sweep whose parent run is ``parent_run_id`` (the command it was started with, from its folder)."""
    from pipeline.tracking.registry import StoreUnavailable, run_tag

    try:
        folder = run_tag(parent_run_id, STATE_TAG, tracking_uri)
    except StoreUnavailable as exc:
        raise SweepResumeError(f"sweep --resume {parent_run_id}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - an unknown run, a server error: one line either way
        raise SweepResumeError(f"sweep --resume {parent_run_id}: MLflow cannot say ({first_error_line(exc)})") from None
    state = _read_state(Path(folder)) if folder else None
    if state is None:
        raise SweepResumeError(
            f"sweep --resume {parent_run_id}: not a Ray sweep's parent run, or its folder {folder} is gone"
        )
    if state.get("status") == "FINISHED":
        raise SweepResumeError(f"sweep --resume {parent_run_id}: this sweep finished; nothing to resume")
    a = state["arguments"]
    return ray_sweep(
        a["config_path"],
        a["grid"],
        a["overrides"],
        a["name"],
        on_child,
        a["search"],
        a["space"],
        a["samples"],
        a["seed"],
        RayOptions(**a["options"]),
    )


def _fit(
    plan: SweepPlan,
    folder: Path,
    parent: str,
    uri: str,
    options: RayOptions,
    seed: int,
    samples: int,
    on_child: Callable[[Child], None] | None,
    resuming: bool,
) -> Any:
    from pipeline.ray_local import cluster_address, start_ray

    # Tune's console tables, its hint about checkpointing often (a trial checkpoints every epoch) and its CSV and
    # TensorBoard copies of what MLflow has stay off; its result.json per trial is kept (callbacks, below).
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # A local Ray's workers inherit this process' environment, MLflow's credentials with it. They are not sent
    # in Ray's runtime environment (which Ray records): a cluster's workers need them in their own environment.
    start_ray()
    from ray import tune

    from pipeline.sweeps.tune_trial import SweepTrial, TrialContext

    names = {r.key.replace(".", "__"): r.key for r in plan.ranges}  # Optuna's parameter names take no dots
    context = TrialContext(
        raw=plan.raw,
        config_path=plan.config_path,
        overrides=plan.overrides,
        planned=[child.overrides for child, _ in plan.children],
        parent_run_id=parent,
        sweep_name=plan.name,
        tracking_uri=uri,
        cwd=os.getcwd(),
        threads=max(1, int(options.cpus_per_trial)),
        names=names,
        cluster=bool(cluster_address()),
    )
    trainable = tune.with_resources(
        tune.with_parameters(SweepTrial, context=context),
        {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial},
    )
    if plan.children:
        param_space: dict[str, Any] = {"index": tune.grid_search([child.index for child, _ in plan.children])}
    else:
        param_space = {flat: r.domain() for flat, r in zip(names, plan.ranges, strict=True)}
    if resuming and tune.Tuner.can_restore(str(folder)):
        tuner = tune.Tuner.restore(str(folder), trainable, resume_unfinished=True, param_space=param_space)
        return _fit_quietly(tuner)
    from ray.tune import CheckpointConfig, FailureConfig, RunConfig
    from ray.tune.logger import JsonLoggerCallback

    scheduler = search_alg = None
    if options.early_stop == "asha":
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr="epoch", max_t=plan.max_epochs, grace_period=options.grace, reduction_factor=2
        )
    if not plan.children:
        search_alg = _optuna(seed)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=options.metric,
            mode=options.mode,
            scheduler=scheduler,
            search_alg=search_alg,
            num_samples=1 if plan.children else samples,
            max_concurrent_trials=options.parallel,
            reuse_actors=False,
        ),
        run_config=RunConfig(
            name=folder.name,
            storage_path=str(folder.parent),
            verbose=0,
            checkpoint_config=CheckpointConfig(checkpoint_frequency=1),
            failure_config=FailureConfig(max_failures=0),
            # result.json per trial, which Tune's results read back; Tune's other loggers copy what MLflow has
            callbacks=[JsonLoggerCallback(), *([_progress(on_child)] if on_child else [])],
        ),
    )
    return _fit_quietly(tuner)


def _fit_quietly(tuner: Any) -> Any:
    """Tune's run; an error of Tune itself (not of a trial: those are recorded) as one line."""
    from ray.tune.error import TuneError

    # Tune reads each trial's result files back at the end; a restored trial has none of its first try's (noise)
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    try:
        return tuner.fit()
    except TuneError as exc:
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        raise SweepError(f"sweep: Ray Tune stopped: {lines[-1][:300] if lines else type(exc).__name__}") from None


def _optuna(seed: int) -> Any:
    try:
        from pipeline.sweeps.numbered_optuna import NumberedOptunaSearch

        return NumberedOptunaSearch(seed=seed)
    except (ImportError, AssertionError):  # Ray asserts that optuna imports
        raise ConfigError('--search optuna: Optuna is not installed (pip install -e ".[optuna]")') from None


def _progress(on_child: Callable[[Child], None]) -> Any:
    from ray import tune

    class _Progress(tune.Callback):
        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            on_child(_child_from(trial.last_result or {}, trial.config, None))

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            on_child(_child_from(trial.last_result or {}, trial.config, "the trial's process ended"))

    return _Progress()


def _child_from(metrics: Mapping[str, Any], config: Mapping[str, Any], error: str | None) -> Child:
    """A trial's child as its last Tune result tells it: finished or failed at the end, stopped between epochs."""
    from pipeline.sweeps.tune_trial import STATUS

    index = int(metrics.get("index", config.get("index", -1)))
    overrides = str(metrics.get("overrides", "")).split()
    child = Child(index, overrides, short_name(overrides), run_id=str(metrics.get("run_id") or "") or None)
    if error is not None:
        child.status, child.error = "FAILED", error
    elif STATUS in metrics:
        child.status, child.error = str(metrics[STATUS]), str(metrics.get("error", ""))
        score = metrics.get(SCORE)
        child.score = float(score) if score is not None and child.status == "FINISHED" else None
    elif "epoch" in metrics:
        child.status = "KILLED"  # stopped by the scheduler between epochs (its run says pipeline.stopped_by)
    return child


def _child_of(plan: SweepPlan, result: Any, parent: str, uri: str) -> Child:
    """A child from Tune's result; a trial whose process died before it could record its run is recorded FAILED here."""
    from pipeline.tracking import runs as tracking_runs

    error = first_error_line(result.error) if result.error is not None else None
    child = _child_from(result.metrics or {}, result.config or {}, error)
    if error is not None and 0 <= child.index < len(plan.children):
        planned, config = plan.children[child.index]
        child.overrides, child.run_name = planned.overrides, planned.run_name
        child.run_id = record_failure(tracking_runs, parent, child, config, uri)
    return child

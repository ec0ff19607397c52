"""A sweep: every combination of ``--grid key=v1,v2`` values (or configs drawn at random from ``--space``
ranges) trained as child runs of one parent run.

Every child's config is built and checked before the first training starts (`plan_sweep`), so a typo
in the grid stops the sweep at once. Here the children train one after the other in this process
(the local engine; `pipeline.sweeps.ray_sweep` runs the same plan with Ray Tune). A child that
fails is recorded as a FAILED run (by its training, or here when it failed before its run existed)
with the error as the tag ``pipeline.error``, and the sweep goes on. The parent run holds the grid
or the space as params and, at the end, how many children finished, failed or were stopped early,
and which one did best.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, build_config, load_raw, parse_override
from pipeline.sweeps import search_space
from pipeline.sweeps.search_space import split_values

LOG = logging.getLogger("pipeline.sweeps")
INDEX_TAG = "pipeline.sweeps.index"
COMBINATION_TAG = "pipeline.sweep.combination"
SCORE = "best.mAP50_95"


@dataclass
class Child:
    index: int
    overrides: list[str]  # the combination, as section.key=value
    run_name: str
    run_id: str | None = None
    status: str = "PENDING"
    error: str = ""
    score: float | None = None  # best.mAP50_95 of a finished child


@dataclass
class SweepResult:
    parent_run_id: str
    experiment: str
    tracking_uri: str
    children: list[Child] = field(default_factory=list)

    @property
    def finished(self) -> list[Child]:
        return [child for child in self.children if child.status == "FINISHED"]

    @property
    def stopped(self) -> list[Child]:
        """Children an early-stopping scheduler ended between epochs (their runs end as KILLED)."""
        return [child for child in self.children if child.status == "KILLED"]

    @property
    def failed(self) -> list[Child]:
        return [child for child in self.children if child.status not in {"FINISHED", "KILLED"}]

    @property
    def best(self) -> Child | None:
        scored = [c for c in self.children if c.score is not None and not math.isnan(c.score)]
        return max(scored, key=lambda c: c.score) if scored else None


def parse_grid(items: Sequence[str], required: bool = True) -> dict[str, list[str]]:
    """``["model.freeze=null,10", "augment.preset=surface,none"]`` -> key -> raw values (read as YAML later)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        values = split_values(raw) if sep else []
        if not sep or not raw.strip() or any(not v for v in values):
            raise ConfigError(f"--grid {item!r}: expected section.key=v1,v2,... e.g. model.freeze=null,10")
        parse_override(f"{key}={values[0]}")  # the key must be section.key
        if key.strip() in grid:
            raise ConfigError(f"--grid {item!r}: {key.strip()} is already in the grid")
        grid[key.strip()] = values
    if not grid and required:
        raise ConfigError("sweep: give at least one --grid section.key=v1,v2")
    return grid


def combinations(grid: Mapping[str, Sequence[Any]]) -> list[list[str]]:
    """Every combination as overrides, the last key varying fastest."""
    keys = list(grid)
    return [[f"{k}={v}" for k, v in zip(keys, values, strict=True)] for values in itertools.product(*grid.values())]


def short_name(overrides: list[str]) -> str:
    """``augment.preset=surface model.freeze=10`` -> ``preset=surface freeze=10`` (a run name)."""
    return " ".join(o.partition("=")[0].rpartition(".")[2] + "=" + o.partition("=")[2] for o in overrides)


SEARCHES = ("grid", "random", "optuna")


@dataclass
class SweepPlan:
    """What a sweep will train, every config validated: the base, the sweep's name, each child and its config."""

    base: Config
    raw: dict[str, Any]  # the config file as read, each child's starting point
    name: str
    children: list[tuple[Child, Config]]  # empty for Optuna: it chooses each trial's values as results come
    params: dict[str, Any]  # what the parent run records about the search
    config_path: str
    overrides: list[str]  # for every child
    ranges: list[Any] = field(default_factory=list)  # search_space.Range, for Optuna

    @property
    def max_epochs(self) -> int:
        """The longest child's epochs (Optuna's children train the base config's)."""
        return max([config.train.epochs for _, config in self.children] or [self.base.train.epochs])


def validated_child(
    raw: dict[str, Any], config_path: str | Path, overrides: Sequence[str], combination: list[str]
) -> Config:
    try:
        return build_config(raw, f"{config_path} (sweep {' '.join(combination)})", [*overrides, *combination])
    except ConfigError as exc:
        raise ConfigError(str(exc).replace(" (with overrides)", "")) from None


def plan_sweep(
    config_path: str | Path,
    grid: Mapping[str, Sequence[Any]],
    overrides: Sequence[str] = (),
    name: str = "",
    search: str = "grid",
    space: Sequence[str] = (),
    samples: int = 1,
    seed: int = 0,
) -> SweepPlan:
    """Every child's config, validated before any training (a bad value stops here). A grid trains every
    combination; a random search the ``samples`` configs drawn with ``seed``; Optuna is planned by its bounds."""
    if search not in SEARCHES:
        raise ConfigError(f"--search {search}: one of {', '.join(SEARCHES)}")
    if search == "grid" and space:
        raise ConfigError("--space: ranges are for --search random or optuna; a grid search takes --grid values")
    raw = load_raw(config_path) or {}
    base = build_config(raw, str(config_path), list(overrides))
    if not base.tracking.enabled:
        raise ConfigError(f"{config_path}: tracking.enabled: a sweep records its runs; it must be true")
    sweep_name = name or base.tracking.run_name or f"sweep-{Path(config_path).stem}"
    params: dict[str, Any] = {"config": str(config_path), "search": search}
    ranges = []
    if search == "grid":
        if not grid:
            raise ConfigError("sweep: give at least one --grid section.key=v1,v2")
        combos = combinations(grid)
        params.update({f"grid.{key}": ",".join(map(str, values)) for key, values in grid.items()})
    else:
        ranges = search_space.parse_space(space, grid)
        params.update({f"space.{r.key}": r.text() for r in ranges})
        params.update({"samples": samples, "seed": seed})
        if search == "random":
            combos = search_space.draw(ranges, samples, seed)
        else:
            if samples < 1:
                raise ConfigError(f"--samples {samples}: must be at least 1")
            for bound in search_space.bound_configs(ranges):
                validated_child(raw, config_path, overrides, bound)
            combos = []
    children = []
    for index, combination in enumerate(combos):
        child = Child(index, combination, f"{sweep_name} {short_name(combination)}")
        children.append((child, validated_child(raw, config_path, overrides, combination)))
    params["children"] = len(children) if search != "optuna" else samples
    return SweepPlan(base, raw, sweep_name, children, params, str(config_path), list(overrides), ranges)


def child_config(config: Config, child: Child, parent_run_id: str, sweep_name: str) -> Config:
    tags = {
        **config.tracking.tags,
        "mlflow.parentRunId": parent_run_id,
        INDEX_TAG: str(child.index),
        COMBINATION_TAG: " ".join(child.overrides),
    }
    tracking = config.tracking.model_copy(update={"run_name": child.run_name, "tags": tags})
    train = config.train.model_copy(update={"name": f"{sweep_name}-{child.index + 1}"})
    return config.model_copy(update={"tracking": tracking, "train": train})


def first_error_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def sweep(
    config_path: str | Path,
    grid: Mapping[str, Sequence[Any]] | Sequence[str],
    overrides: Sequence[str] = (),
    name: str = "",
    on_child: Callable[[Child], None] | None = None,
    search: str = "grid",
    space: Sequence[str] = (),
    samples: int = 1,
    seed: int = 0,
) -> SweepResult:
    """Train every combination of ``grid`` (key -> values, or ``key=v1,v2`` strings), or ``samples`` configs
    drawn from ``space`` (``search="random"``), one after another in this process, as children of one parent run.

    ``on_child`` is called after each child ends (finished or failed), e.g. to print a line."""
    from pipeline.tracking import run_metric
    from pipeline.tracking import runs as tracking_runs
    from pipeline.tracking.store import resolve_tracking_uri
    from pipeline.training.run import train

    if not isinstance(grid, Mapping):
        grid = parse_grid(list(grid), required=search == "grid")
    if search == "optuna":
        raise ConfigError("--search optuna: needs --engine ray (Optuna chooses trials as results come)")
    planned_sweep = plan_sweep(config_path, grid, overrides, name, search, space, samples, seed)
    base, sweep_name, planned = planned_sweep.base, planned_sweep.name, planned_sweep.children
    uri = resolve_tracking_uri(base.tracking.uri)
    parent = tracking_runs.start_parent_run(
        base.tracking.experiment,
        sweep_name,
        {**planned_sweep.params, "engine": "local"},
        dict(base.tracking.tags),
        tracking_uri=uri,
    )
    result = SweepResult(parent, base.tracking.experiment, uri)
    status = "FAILED"
    try:
        for child, config in planned:
            result.children.append(child)
            config = child_config(config, child, parent, sweep_name)
            try:
                trained = train(config)
            except Exception as exc:  # noqa: BLE001 - one failed child must not end the sweep
                child.status, child.error = "FAILED", first_error_line(exc)
                LOG.warning("sweep: child %d (%s) failed: %s", child.index, child.run_name, child.error)
                child.run_id = record_failure(tracking_runs, parent, child, config, uri)
            else:
                child.run_id, child.status = trained.run_id, "FINISHED"
                child.score = run_metric(trained.run_id, SCORE, uri) if trained.run_id else None
            if on_child is not None:
                on_child(child)
        status = "FINISHED" if result.finished else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        finish_parent(tracking_runs, result, status, uri)
    return result


def record_failure(tracking_runs: Any, parent: str, child: Child, config: Config, uri: str) -> str | None:
    """Make sure the child's run says FAILED and why; create that run when the training never opened one."""
    try:
        found = tracking_runs.child_run(parent, INDEX_TAG, str(child.index), uri)
        if found is None:
            return tracking_runs.record_failed_child(
                parent, child.run_name, config.flat(), config.tracking.tags, child.error, uri
            )
        run_id, run_status = found
        tracking_runs.finish_run(
            run_id, "FAILED" if run_status == "RUNNING" else run_status, {}, {"pipeline.error": child.error}, uri
        )
        return run_id
    except Exception as exc:  # noqa: BLE001 - the server may be away; the sweep's own summary still has the error
        LOG.warning(
            "sweep: could not record the failure of child %d in MLflow (%s)", child.index, first_error_line(exc)
        )
        return None


def finish_parent(tracking_runs: Any, result: SweepResult, status: str, uri: str) -> None:
    """The parent's summary (children finished, failed, stopped; the best child) and its end."""
    metrics: dict[str, float] = {
        "children.total": len(result.children),
        "children.finished": len(result.finished),
        "children.failed": len(result.failed),
        "children.stopped": len(result.stopped),
    }
    tags = {}
    if (best := result.best) is not None and best.run_id:
        metrics[SCORE] = best.score
        tags = {"pipeline.best_child": best.run_id, "pipeline.best_combination": " ".join(best.overrides)}
    try:
        tracking_runs.finish_run(result.parent_run_id, status, metrics, tags, uri)
    except Exception as exc:  # noqa: BLE001 - the children are recorded; the parent's summary is a convenience
        LOG.warning("sweep: could not close the parent run %s (%s)", result.parent_run_id, first_error_line(exc))

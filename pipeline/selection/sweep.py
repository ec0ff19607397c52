"""A grid sweep: every combination of ``--grid key=v1,v2`` values trained as a child run of one parent run.

Every combination's config is built and checked before the first training starts, so a typo in the
grid stops the sweep at once. The children train one after the other in this process. A child that
fails is recorded as a FAILED run (by its training, or here when it failed before its run existed)
with the error as the tag ``pipeline.error``, and the sweep goes on. The parent run holds the grid
as params and, at the end, how many children finished or failed and which one did best.
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

LOG = logging.getLogger("pipeline.sweep")
INDEX_TAG = "pipeline.sweep.index"
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
    def failed(self) -> list[Child]:
        return [child for child in self.children if child.status != "FINISHED"]

    @property
    def best(self) -> Child | None:
        scored = [c for c in self.children if c.score is not None and not math.isnan(c.score)]
        return max(scored, key=lambda c: c.score) if scored else None


def split_values(text: str) -> list[str]:
    """``null,10`` -> ['null', '10']; commas inside brackets stay (``[0,1],[2]`` -> ['[0,1]', '[2]'])."""
    values, depth, current = [], 0, ""
    for char in text:
        depth += char in "[{"
        depth -= char in "]}"
        if char == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return values


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
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
    if not grid:
        raise ConfigError("sweep: give at least one --grid section.key=v1,v2")
    return grid


def combinations(grid: Mapping[str, Sequence[Any]]) -> list[list[str]]:
    """Every combination as overrides, the last key varying fastest."""
    keys = list(grid)
    return [[f"{k}={v}" for k, v in zip(keys, values, strict=True)] for values in itertools.product(*grid.values())]


def _short(overrides: list[str]) -> str:
    """``augment.preset=surface model.freeze=10`` -> ``preset=surface freeze=10`` (a run name)."""
    return " ".join(o.partition("=")[0].rpartition(".")[2] + "=" + o.partition("=")[2] for o in overrides)


def plan(
    config_path: str | Path, grid: Mapping[str, Sequence[Any]], overrides: Sequence[str] = (), name: str = ""
) -> tuple[Config, str, list[tuple[Child, Config]]]:
    """The base config, the sweep's name and each child's config, all validated (a bad value stops here,
    before any training)."""
    raw = load_raw(config_path) or {}
    base = build_config(raw, str(config_path), list(overrides))
    if not base.tracking.enabled:
        raise ConfigError(f"{config_path}: tracking.enabled: a sweep records its runs; it must be true")
    sweep_name = name or base.tracking.run_name or f"sweep-{Path(config_path).stem}"
    children = []
    for index, combination in enumerate(combinations(grid)):
        child = Child(index, combination, f"{sweep_name} {_short(combination)}")
        try:
            config = build_config(raw, f"{config_path} (sweep {' '.join(combination)})", [*overrides, *combination])
        except ConfigError as exc:
            raise ConfigError(str(exc).replace(" (with overrides)", "")) from None
        children.append((child, config))
    return base, sweep_name, children


def _child_config(config: Config, child: Child, parent_run_id: str, sweep_name: str) -> Config:
    tags = {
        **config.tracking.tags,
        "mlflow.parentRunId": parent_run_id,
        INDEX_TAG: str(child.index),
        COMBINATION_TAG: " ".join(child.overrides),
    }
    tracking = config.tracking.model_copy(update={"run_name": child.run_name, "tags": tags})
    train = config.train.model_copy(update={"name": f"{sweep_name}-{child.index + 1}"})
    return config.model_copy(update={"tracking": tracking, "train": train})


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"[:500]


def sweep(
    config_path: str | Path,
    grid: Mapping[str, Sequence[Any]] | Sequence[str],
    overrides: Sequence[str] = (),
    name: str = "",
    on_child: Callable[[Child], None] | None = None,
) -> SweepResult:
    """Train every combination of ``grid`` (key -> values, or ``key=v1,v2`` strings) as children of one parent run.

    ``on_child`` is called after each child ends (finished or failed), e.g. to print a line."""
    from pipeline.tracking import run_metric
    from pipeline.tracking import runs as tracking_runs
    from pipeline.tracking.store import resolve_tracking_uri
    from pipeline.train.run import train

    if not isinstance(grid, Mapping):
        grid = parse_grid(list(grid))
    base, sweep_name, planned = plan(config_path, grid, overrides, name)
    uri = resolve_tracking_uri(base.tracking.uri)
    params = {f"grid.{key}": ",".join(map(str, values)) for key, values in grid.items()}
    params.update({"config": str(config_path), "children": len(planned)})
    parent = tracking_runs.start_parent_run(
        base.tracking.experiment, sweep_name, params, dict(base.tracking.tags), tracking_uri=uri
    )
    result = SweepResult(parent, base.tracking.experiment, uri)
    status = "FAILED"
    try:
        for child, config in planned:
            result.children.append(child)
            config = _child_config(config, child, parent, sweep_name)
            try:
                trained = train(config)
            except Exception as exc:  # noqa: BLE001 - one failed child must not end the sweep
                child.status, child.error = "FAILED", _first_line(exc)
                LOG.warning("sweep: child %d (%s) failed: %s", child.index, child.run_name, child.error)
                child.run_id = _record_failure(tracking_runs, parent, child, config, uri)
            else:
                child.run_id, child.status = trained.run_id, "FINISHED"
                child.score = run_metric(trained.run_id, SCORE, uri) if trained.run_id else None
            if on_child is not None:
                on_child(child)
        status = "FINISHED" if len(result.failed) < len(result.children) else "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        _finish_parent(tracking_runs, result, status, uri)
    return result


def _record_failure(tracking_runs: Any, parent: str, child: Child, config: Config, uri: str) -> str | None:
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
        LOG.warning("sweep: could not record the failure of child %d in MLflow (%s)", child.index, _first_line(exc))
        return None


def _finish_parent(tracking_runs: Any, result: SweepResult, status: str, uri: str) -> None:
    metrics: dict[str, float] = {
        "children.total": len(result.children),
        "children.finished": len(result.children) - len(result.failed),
        "children.failed": len(result.failed),
    }
    tags = {}
    if (best := result.best) is not None and best.run_id:
        metrics[SCORE] = best.score
        tags = {"pipeline.best_child": best.run_id, "pipeline.best_combination": " ".join(best.overrides)}
    try:
        tracking_runs.finish_run(result.parent_run_id, status, metrics, tags, uri)
    except Exception as exc:  # noqa: BLE001 - the children are recorded; the parent's summary is a convenience
        LOG.warning("sweep: could not close the parent run %s (%s)", result.parent_run_id, _first_line(exc))

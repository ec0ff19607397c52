"""Promote a training's model to the MLflow model registry: a new version, an alias, and the reason.

``promote("best", ...)`` picks the finished training run of an experiment with the best value of a
metric (``best.mAP50_95`` by default: the best checkpoint's final validation); ``promote(RUN_ID,
...)`` takes that run. The version is tagged with why it was chosen (the metric, its value, the
runs it was compared with), and ``models:/<name>@<alias>`` then resolves to it, for
``predict --model models:/<name>@champion``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.messages import UserError


class PromoteError(UserError, ValueError):
    """A promotion that cannot be done; the message is one line."""


@dataclass
class Promotion:
    run_id: str
    name: str
    alias: str
    version: str
    metric: str
    value: float | None
    compared: list[str] = field(default_factory=list)

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"


def promote(
    target: str,
    *,
    experiment: str = "",
    parent: str = "",
    name: str,
    alias: str = "champion",
    metric: str = "best.mAP50_95",
    lowest: bool = False,
    tracking_uri: str = "",
) -> Promotion:
    """Register the model of run ``target`` (or of the ``best`` run of ``experiment``, or of the sweep
    ``parent``'s children, by ``metric``)."""
    from pipeline.tracking import best_run, register_model, run_metric  # mlflow loads only when needed

    if target == "best":
        try:
            run_id, value, compared = best_run(experiment, metric, tracking_uri, lowest, parent=parent)
        except LookupError as exc:
            raise PromoteError(str(exc)) from None
        among = f"sweep {parent}" if parent else experiment
        chosen = f"{'lowest' if lowest else 'highest'} {metric} of {len(compared)} finished runs in {among}"
    else:
        try:
            value = run_metric(target, metric, tracking_uri)
        except Exception as exc:  # noqa: BLE001 - an unknown id is an MlflowException deep in the client
            raise PromoteError(f"run {target}: not found ({type(exc).__name__})") from None
        run_id, compared = target, [target]
        chosen = "named on the command line"
    reason = {
        "pipeline.chosen": chosen,
        "pipeline.metric": metric,
        "pipeline.metric_value": "" if value is None else f"{value:.6g}",
        "pipeline.compared_runs": ",".join(compared)[:4000],
        "pipeline.source_run": run_id,
    }
    try:
        version = register_model(run_id, name, alias, reason, tracking_uri)
    except Exception as exc:  # noqa: BLE001 - MLflow says "not found" in several ways; one line is what helps
        raise PromoteError(
            f"run {run_id}: its model cannot be registered ({type(exc).__name__}: {exc})"[:300]
        ) from None
    return Promotion(run_id, name, alias, version, metric, value, compared)

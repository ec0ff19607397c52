"""Promote a training's model to the MLflow model registry: a new version, an alias, and the reason.

``promote("best", ...)`` picks the finished training run of an experiment with the best value of a
metric (``best.mAP50_95`` by default: the best checkpoint's final validation); ``promote(RUN_ID,
...)`` takes that run. The version is tagged with why it was chosen (the metric, its value, the
runs it was compared with), and ``models:/<name>@<alias>`` then resolves to it, for
``predict --model models:/<name>@champion``.

With ``data``, the promotion is gated (`pipeline.promotion.gates`): the candidate and the model now
behind the alias are evaluated on the same split; a failing gate, or (with ``no_regress``) a class
whose AP50 fell by more than the margin, refuses it. The candidate is registered either way (unless
``dry_run``), tagged with the decision, its reason and the numbers; only an accepted one gets the alias.
A ``false_reject<=R`` gate measures the share of good images (``good``, and the split's background images)
the candidate's screen rejects: the thresholds calibrated for it (stored with its run, or ``screen``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.inference.screen import Screen, read_screen
from pipeline.messages import UserError
from pipeline.promotion.gates import FALSE_REJECT, Decision, Gate, decide, parse_gates

TAG_PREFIX = "pipeline.promotion"


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
    decision: Decision | None = None  # None: promoted without gates (no --data)
    compared_with: str = "none"  # the version the candidate was evaluated against, models:/<name>/<version>
    previous: str | None = None  # the version behind the alias before this promotion
    dry_run: bool = False  # nothing registered: version is ""

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    @property
    def accepted(self) -> bool:
        return self.decision is None or self.decision.accepted


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
    data: str | Path = "",
    split: str = "val",
    gates: Sequence[str] = (),
    no_regress: float | None = None,
    dry_run: bool = False,
    device: str = "auto",
    good: str | Path | None = None,
    screen: str | Path | None = None,
) -> Promotion:
    """Register the model of run ``target`` (or of the ``best`` run of ``experiment``, or of the sweep
    ``parent``'s children, by ``metric``); with ``data``, only if it passes ``gates`` and ``no_regress``
    against the model now behind ``alias`` (a refused one is registered without the alias)."""
    from pipeline.tracking import best_run, register_model, run_metric  # mlflow loads only when needed

    parsed = _checked_gates(data, split, gates, no_regress)  # before any lookup or evaluation: a typo costs nothing
    if (good or screen) and not any(gate.metric == FALSE_REJECT for gate in parsed):
        raise PromoteError("--good and --screen: they serve a --gate 'false_reject<=R'; add one, or leave them out")
    screen_file = read_screen(screen) if screen else None  # a bad file is one line before any lookup
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
    decision, compared_with, previous = None, "none", None
    if data:
        screening = Screening(good, screen_file, device, tracking_uri)
        decision, compared_with, previous = _gated(
            run_id, name, alias, data, split, parsed, no_regress, device, tracking_uri, screening
        )
        reason.update(decision.tags(TAG_PREFIX))
        reason[f"{TAG_PREFIX}.compared_with"] = compared_with
        reason[f"{TAG_PREFIX}.data"] = str(Path(data).resolve())[:4000]  # a record that still says which, later
        reason[f"{TAG_PREFIX}.split"] = split
    if dry_run:
        return Promotion(run_id, name, alias, "", metric, value, compared, decision, compared_with, previous, True)
    accepted = decision is None or decision.accepted
    try:
        version = register_model(run_id, name, alias, reason, tracking_uri, move_alias=accepted)
    except Exception as exc:  # noqa: BLE001 - MLflow says "not found" in several ways; one line is what helps
        raise PromoteError(
            f"run {run_id}: its model cannot be registered ({type(exc).__name__}: {exc})"[:300]
        ) from None
    return Promotion(run_id, name, alias, version, metric, value, compared, decision, compared_with, previous)


def _checked_gates(data: str | Path, split: str, gates: Sequence[str], no_regress: float | None) -> list[Gate]:
    """The gates parsed against the data's classes (the classes its evaluation reports), or PromoteError."""
    if (gates or no_regress is not None) and not data:
        given = "--gate" if gates else "--no-regress"
        raise PromoteError(f"{given}: needs --data, the dataset both models are evaluated on")
    if no_regress is not None and not (math.isfinite(no_regress) and no_regress >= 0):
        raise PromoteError(f"--no-regress: expected a margin of 0 or more (e.g. 0.02), got {no_regress}")
    if not data:
        return []
    from pipeline.training.epoch_metrics import class_key

    names = data_classes(data, split)
    classes = {name: class_key(name) for name in names} | {class_key(name): class_key(name) for name in names}
    return parse_gates(gates, classes)


def data_classes(data: str | Path, split: str) -> list[str]:
    """The class names of a data.yaml, a YOLO folder or an imported manifest, whose ``split`` exists.

    Evaluation reports per-class metrics under these names (and refuses a model with another class count),
    so a gate is checked against them before any model is loaded."""
    from pipeline.data.dataset import read_data_yaml
    from pipeline.data.manifest import is_manifest, load_manifest

    path = Path(data)
    if is_manifest(path):
        path = load_manifest(path).out_dir / "data.yaml"  # evaluate says "not imported yet" when it is absent
        if not path.is_file():
            raise PromoteError(f"{data}: not imported yet; run: yolo-pipeline data import --manifest {data}")
    return [str(name) for _, name in sorted(read_data_yaml(path, require=(split,)).names.items())]


@dataclass(frozen=True)
class Screening:
    """What a false_reject gate measures with: good images, the candidate's thresholds (a screen.json, else those
    stored with its run)."""

    good: str | Path | None
    screen: Screen | None  # --screen, read
    device: str
    tracking_uri: str

    def thresholds(self, model: str) -> dict[str, float]:
        if self.screen is not None:
            return dict(self.screen.thresholds)
        from pipeline.tracking.screens import stored_screen

        stored = stored_screen(model, self.tracking_uri)
        if stored is None:
            raise PromoteError(
                f"--gate false_reject: {model} has no screen: calibrate it with --track, or pass --screen FILE"
            )
        return stored.thresholds

    def false_reject(self, model: str, data: str | Path, split: str, thresholds: dict[str, float]) -> float:
        from pipeline.screen.calibrate import CalibrateError
        from pipeline.screen.check import measured_false_reject

        try:
            return measured_false_reject(
                model, data, thresholds, split=split, good=self.good, device=self.device, tracking_uri=self.tracking_uri
            )
        except CalibrateError as exc:
            raise PromoteError(f"--gate {exc}") from None


def _gated(
    run_id: str,
    name: str,
    alias: str,
    data: str | Path,
    split: str,
    gates: list[Gate],
    no_regress: float | None,
    device: str,
    tracking_uri: str,
    screening: Screening,
) -> tuple[Decision, str, str | None]:
    """Evaluate the candidate and the version behind the alias on the same split; (decision, compared with,
    that version)."""
    from pipeline.evaluation.evaluation import evaluate
    from pipeline.tracking.registry import StoreUnavailable, alias_version

    try:
        current = alias_version(name, alias, tracking_uri)
    except StoreUnavailable as exc:
        raise PromoteError(str(exc)) from None
    model = f"runs:/{run_id}/model"
    screened = any(gate.metric == FALSE_REJECT for gate in gates)
    thresholds = screening.thresholds(model) if screened else {}  # looked up before any evaluation
    candidate = evaluate(model, data, split=split, device=device, tracking_uri=tracking_uri)
    metrics = candidate.metrics()
    if screened:
        metrics[FALSE_REJECT] = screening.false_reject(model, data, split, thresholds)
    if current is None:
        return decide(gates, metrics, None, no_regress), "none", None
    version, current_run = current
    pinned = f"models:/{name}/{version}"  # not the alias: it cannot move between the two evaluations
    if current_run == run_id:
        now = candidate  # the same run's model: the same weights, evaluated once
    else:
        now = evaluate(pinned, data, split=split, device=device, tracking_uri=tracking_uri)
    return decide(gates, metrics, now.metrics(), no_regress), pinned, version

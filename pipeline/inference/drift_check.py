"""predict's drift check: what a run saw against the baseline its screen was calibrated with (`pipeline.drift`).

The baseline is found where the thresholds were: beside a ``--screen`` file (screen.json names it), inside a bundle,
or with an MLflow model's calibration run; else the one the model's training recorded on its validation split:
beside a ``.pt`` (``drift_baseline.npz``, for that very file), in the training run behind an MLflow model, or in
the files of a served MLflow model (beside its ``MLmodel``). Each screened image adds its input statistics
(measured on the decoding threads), its detections at the verdict thresholds and the network's pooled backbone
features to a `Collector`; at the end the run is compared with the baseline (``drift.json``, one line), and what
it saw is kept as ``drift_sample.npz`` (a baseline file of its own: calibrate builds the baseline from it). Under
``--watch`` each window of images is compared as it closes.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checkpoints import MLFLOW_SCHEMES, file_sha256
from pipeline.drift import DIGEST_TAG, FILENAME, ORIGINS, Baseline, BaselineError, Collector, DriftReport, Sample
from pipeline.inference.batching import Outcome
from pipeline.inference.bundle import OpenedBundle
from pipeline.inference.screen import Screen
from pipeline.messages import first_line

if TYPE_CHECKING:
    from pipeline.tracking.screens import ScreenLookup

LOG = logging.getLogger("pipeline.inference")

REPORT = "drift.json"  # in the results folder: the run against the baseline
SAMPLE = "drift_sample.npz"  # in the results folder: what the run saw, in the baseline's format
PLOT = "drift.png"  # with --track: each statistic's baseline against the run's
NO_BASELINE = (
    "no baseline: a training records one beside its best.pt (train.drift_baseline), calibrate beside screen.json "
    "(predict --screen FILE reads it)"
)
ATYPICAL_REVIEW = 20  # the most atypical images a drifted run adds to --review's queue


@dataclass
class FoundBaseline:
    """The baseline a run is compared with, or why there is none (``note``: one line). ``same_model``: the baseline is
    known to be these weights' although its SHA-256 is not the file's (a training's, whose model MLflow saved again)."""

    baseline: Baseline | None
    where: str = ""
    note: str = ""
    same_model: bool = False


def find_baseline(
    screen: Screen | None,
    screen_path: str,
    opened: Any,
    model: str,
    tracking_uri: str = "",
    lookup: ScreenLookup | None = None,
) -> FoundBaseline:
    """The baseline of ``--screen``'s file, else of the bundle's screen, else stored with an MLflow model's
    calibration, else the one its training recorded (beside a ``.pt``, or in the run behind an MLflow model); a file
    that is named but cannot be used is a note, never a stop (the verdicts do not need it). ``lookup``: the MLflow
    model's stored screen as the caller asked for it already (else it is asked here)."""
    if screen is not None:
        return _beside(screen, Path(screen_path).parent, f"--screen {screen_path}")
    if isinstance(opened, OpenedBundle):
        return _beside(opened.screen, opened.folder, f"the bundle {opened.folder}")
    if model.startswith(MLFLOW_SCHEMES):
        return _stored(opened.pinned or model, tracking_uri, lookup)
    return _trained_beside(Path(model), opened)


def _beside(screen: Screen, folder: Path, where: str) -> FoundBaseline:
    named = screen.drift_baseline
    if not named.get("file"):
        return FoundBaseline(None, note=f"{where} names no baseline (calibrated before drift checks: calibrate again)")
    try:
        baseline = Baseline.load(folder / Path(named["file"]).name)  # beside the screen file, never elsewhere
    except BaselineError as exc:
        return FoundBaseline(None, note=str(exc))
    if named.get("sha256") and named["sha256"] != baseline.digest():
        return FoundBaseline(None, note=f"{folder / named['file']}: not the baseline {where} was calibrated with")
    return FoundBaseline(baseline, where=f"{folder / named['file']}")


def _trained_beside(weights: Path, opened: Any) -> FoundBaseline:
    """The baseline a training left beside its checkpoint, when it was recorded for this very file."""
    path = weights.with_name(FILENAME)
    if weights.suffix != ".pt" or not weights.is_file():
        return FoundBaseline(None, note=NO_BASELINE)
    if not path.is_file():  # none beside it: the weights may be a served MLflow model's, which holds it
        return _in_logged_model(weights) or FoundBaseline(None, note=NO_BASELINE)
    try:
        baseline = Baseline.load(path)
    except BaselineError as exc:
        return FoundBaseline(None, note=str(exc))
    sha256 = opened.weights_sha256 if opened is not None else file_sha256(weights)
    if baseline.model_sha256 != sha256:
        other = f"recorded for sha256 {baseline.model_sha256[:12]}, {weights.name} is {sha256[:12]}"
        return FoundBaseline(None, note=f"{path} belongs to other weights ({other})")
    return FoundBaseline(baseline, where=f"{ORIGINS.get(baseline.origin, path.name)} ({path})")


def _in_logged_model(weights: Path) -> FoundBaseline | None:
    """The training's baseline in the MLflow model folder these weights are part of (``mlflow models serve`` and
    ``mlflow.pyfunc.load_model`` run from one): the training put it beside ``MLmodel``; MLflow's copy of best.pt has
    other bytes, the same network. None when the weights are in no such folder, or it holds no baseline."""
    from pipeline.inference.serving import model_folder

    folder = model_folder(weights)
    if folder is None or not (folder / FILENAME).is_file():
        return None
    try:
        baseline = Baseline.load(folder / FILENAME)
    except BaselineError as exc:
        return FoundBaseline(None, note=str(exc))
    where = f"{ORIGINS.get(baseline.origin, 'the baseline')} (in the model {folder})"
    return FoundBaseline(baseline, where=where, same_model=True)


def _stored(model: str, tracking_uri: str, lookup: ScreenLookup | None) -> FoundBaseline:
    from pipeline.inference.screen import read_screen
    from pipeline.tracking.screens import look_up_screen, stored_screen_file

    try:
        lookup = lookup or look_up_screen(model, tracking_uri)
        if lookup.error is not None:
            raise lookup.error  # said as any other failure to read the store, below
        stored = lookup.stored
        if stored is None:
            return _trained_run(model, tracking_uri)
        with tempfile.TemporaryDirectory(prefix="yolo-pipeline-baseline-") as tmp:
            screen_file = stored_screen_file(stored, tmp, tracking_uri)
            if screen_file is None:
                return FoundBaseline(None, note=f"the calibration run of {model} keeps no screen.json")
            screen = read_screen(screen_file)
            if screen.drift_baseline.get("file"):
                stored_screen_file(stored, tmp, tracking_uri, name=Path(screen.drift_baseline["file"]).name)
            found = _beside(screen, Path(screen_file).parent, f"the screen stored with {model}")
    except Exception as exc:  # noqa: BLE001 - a store that does not answer costs the drift check, not the run
        return FoundBaseline(None, note=f"the baseline stored with {model} could not be read ({first_line(exc, 150)})")
    if found.baseline is not None:
        found.where = f"the calibration run {stored.calibration_run} of {model}"
    return found


def _trained_run(model: str, tracking_uri: str) -> FoundBaseline:
    """The baseline the training run behind ``model`` recorded (the run that logged these weights: MLflow's copy of
    best.pt has other bytes, the same network), when its file is the one the run's digest tag names."""
    from pipeline.tracking.screens import training_baseline_file

    with tempfile.TemporaryDirectory(prefix="yolo-pipeline-baseline-") as tmp:
        stored = training_baseline_file(model, tmp, tracking_uri)
        if stored is None:
            return FoundBaseline(None, note=f"{model} has no screen stored with it: {NO_BASELINE}")
        try:
            baseline = Baseline.load(stored.file)
        except BaselineError as exc:
            return FoundBaseline(None, note=str(exc))
    if baseline.digest() != stored.digest:
        return FoundBaseline(None, note=f"the drift baseline of run {stored.run_id} is not the one its tag names")
    where = f"{ORIGINS.get(baseline.origin, 'the baseline')} (run {stored.run_id} of {model})"
    return FoundBaseline(baseline, where=where, same_model=True)


class DriftCheck:
    """One run's collection and its comparison with ``baseline`` (None: collected only, for drift_sample.npz);
    ``window``: also compare every ``window`` images (``--watch``)."""

    def __init__(
        self,
        baseline: Baseline | None,
        thresholds: dict[str, float],
        model_sha256: str = "",
        window: int | None = None,
        same_model: bool = False,
    ) -> None:
        self.baseline = baseline
        self.model_sha256 = model_sha256
        self.same_model = same_model  # `FoundBaseline.same_model`: no "the model differs" note
        self.collector = Collector(thresholds)
        self.window = window if baseline is not None else None
        self.windowed = Collector(thresholds, window=window) if self.window else None
        self.since_window = 0
        self._seen: Sample | None = None  # the run's sample, made once for the report, the files and the review

    def add(self, outcome: Outcome) -> DriftReport | None:
        """One screened image; the report of the window it closes, if it closes one."""
        if outcome.statistics is None:
            return None
        self.collector.add(outcome.statistics, outcome.detections, outcome.embedding, name=outcome.path)
        self._seen = None
        if self.windowed is None:
            return None
        self.windowed.add(outcome.statistics, outcome.detections, outcome.embedding, name=outcome.path)
        self.since_window += 1
        if self.since_window < (self.window or 0):
            return None
        self.since_window = 0
        return self._compare(self.windowed.sample())

    def report(self) -> DriftReport | None:
        """The whole run against the baseline; None without one, or without an image."""
        return self._compare(self.seen()) if len(self.collector) else None

    def seen(self) -> Sample:
        """What the run saw so far (one snapshot of the collector until the next image)."""
        if self._seen is None:
            self._seen = self.collector.sample()
        return self._seen

    def _compare(self, sample: Sample) -> DriftReport | None:
        if self.baseline is None:
            return None
        from pipeline.drift.checks import compare  # scipy.stats: loaded by the first comparison, not by the CLI

        return compare(self.baseline, sample, model_sha256=None if self.same_model else self.model_sha256 or None)

    def write(self, out: Path, report: DriftReport | None, source: str) -> None:
        """drift.json (with a report) and drift_sample.npz (what the run saw) in the results folder."""
        if report is not None:
            report.write(out / REPORT)
        if len(self.collector):
            Baseline(self.seen(), model_sha256=self.model_sha256, data=source).save(out / SAMPLE)

    def plot(self, path: Path) -> Path | None:
        """Each statistic's distribution, baseline against this run (None without matplotlib: a line PC's install)."""
        if self.baseline is None or not len(self.collector):
            return None
        from pipeline.drift.plot import plot_drift

        return plot_drift(self.baseline.sample, self.seen(), path)

    def atypical(self, report: DriftReport | None, limit: int = ATYPICAL_REVIEW) -> list[tuple[str, str]]:
        """(path, why) of the images that drive ``report``'s drift, the strongest first: those a drifted run sends to
        review (none when it did not drift). The most atypical; where the neighbours check drifted, the images most
        grouped among themselves first (a group of like images from elsewhere, each inside the baseline's range,
        which the most atypical would miss)."""
        if self.baseline is None or not len(self.collector) or report is None or not report.drifted:
            return []
        from pipeline.drift.checks import rank_atypical, rank_grouped

        grouped = any(check.drifted and check.name == "neighbours" for check in report.checks)
        ranked = (rank_grouped if grouped else rank_atypical)(self.baseline, self.seen())
        return [(found.name, found.reason) for found in ranked[:limit]]


def drift_tags(report: DriftReport) -> dict[str, str]:
    """A report as tags of the run: drifted or not, and the baseline it was compared with (its digest)."""
    tags = {"pipeline.drift": "drifted" if report.drifted else "none"}
    if report.baseline.get("digest"):
        tags[DIGEST_TAG] = report.baseline["digest"]
    return tags


def drift_metrics(report: DriftReport) -> dict[str, float]:
    """A report as MLflow metrics: ``drift.drifted`` (0/1), ``drift.images`` and each check's corrected p-value."""
    metrics = {"drift.drifted": float(report.drifted), "drift.images": float(report.images)}
    for check in report.ran:
        if check.p_holm is not None:
            metrics[f"drift.p.{check.name}"] = float(check.p_holm)
    return metrics

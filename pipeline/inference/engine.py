"""Predict over a folder: decoding threads feed batches to the model, results go to files.

Reading, decoding and letterboxing run in a pool of threads (OpenCV releases the GIL), a bounded
window ahead of the model, so the model never waits for a disk and memory holds a few batches
whatever the folder's size. Images are batched in the order they are found; equally sized images
share a batch (a change of size closes one), so each batch is padded only to the model's stride.
With tiling, an image is its tiles, which share batches with other images' tiles, and its
detections are merged once its last tile is done (`pipeline.inference.tiling`). These steps live
in `pipeline.inference.batching`, shared with the Ray engine. Results are written in the order
the images were found, as each is finished (`pipeline.inference.results`): a killed run loses at
most the batch in flight, and the same command again carries on where it stopped. ``engine="ray"``
runs the same steps in Ray actors (`pipeline.inference.ray_engine`) and writes through the same code.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.checkpoints import MLFLOW_SCHEMES
from pipeline.cpu import LoadProbe
from pipeline.data.dataset import IMAGE_SUFFIXES
from pipeline.destinations import writer_lock
from pipeline.inference.batching import Outcome, Tiling, outcome_of, prepare_ahead, run_batches
from pipeline.inference.bundle import OpenedBundle
from pipeline.inference.decode import long_side, read_image
from pipeline.inference.discover import Count, count_images, iter_images, printable
from pipeline.inference.draw import write_annotated, write_crops
from pipeline.inference.drift_check import PLOT as DRIFT_PLOT
from pipeline.inference.drift_check import REPORT as DRIFT_REPORT
from pipeline.inference.drift_check import DriftCheck, drift_metrics, drift_tags, find_baseline
from pipeline.inference.errors import ResultsError, SourceError
from pipeline.inference.hot_folder import HotFolder, stop_on_signals
from pipeline.inference.opening import build_detector, open_model
from pipeline.inference.options import PredictOptions, RunOptions
from pipeline.inference.results import (
    ERRORS,
    KIND,
    PREDICTIONS,
    SETTINGS,
    SUMMARY,
    AppendLog,
    DoneSet,
    Verdict,
    check_out,
    check_settings,
    claim_out,
    read_log,
    record_said,
    recorded_settings,
    write_summary,
)
from pipeline.inference.review import Queue, check_queue, write_uncertain
from pipeline.inference.scale import inference_scale, tile_choice
from pipeline.inference.screen import Screen, expected_rate, merged_thresholds, read_screen, unexpected_fails
from pipeline.messages import first_line

if TYPE_CHECKING:
    from pipeline.drift import DriftReport
    from pipeline.inference.opening import Opened
    from pipeline.tracking.screens import ScreenLookup

LOG = logging.getLogger("pipeline.inference")


SCREEN_WARNING_TAG = "pipeline.screen.warning"  # with --track: the screen failed far more than calibration expected


@dataclass
class PredictResult:
    out: Path
    model: str
    images: int = 0  # predicted by this run
    errors: int = 0  # failed in this run
    skipped: int = 0  # done by an earlier run into the same folder
    seconds: float = 0.0
    total_images: int = 0  # in the folder, this run's and earlier ones'
    total_errors: int = 0
    detections: dict[str, int] = field(default_factory=dict)
    failed_verdicts: int = 0
    run_id: str | None = None  # the MLflow run of the model, when it came from MLflow
    runtime: str = "torch"  # what ran the network: torch, onnx, or torch+onnx (the run ended while auto raced them)
    note: str = ""  # why it is not the runtime asked for, or why tracking failed, if either
    imgsz: int = 0  # the size the network ran at
    scale: str = ""  # what the user was told about that size's scale, if anything
    tracking_run_id: str | None = None  # the MLflow run holding this prediction's summary (--track)
    thresholds: dict[str, float] = field(default_factory=dict)  # the verdicts' thresholds, "default" for the rest
    thresholds_source: str = ""  # where they came from (a screen stored with the model, --screen, --threshold)
    conf: float = 0.0  # the lowest score kept: --conf, or lower when a threshold (less the review band) is below it
    review: Queue | None = None  # the review queue written (--review)
    screen_warning: str = ""  # the screen failed far more images than its calibration expected of good parts
    uncertain: int = 0  # images found uncertain (--review); the queue holds those whose files could be read
    watch_latency: dict[str, float] = field(default_factory=dict)  # --watch: p50_ms, p95_ms from written to verdict
    drift: DriftReport | None = None  # this run's images against the screen's baseline (drift.json)
    drift_note: str = ""  # why drift was not checked, when it was not

    @property
    def images_per_s(self) -> float:
        return (self.images + self.errors) / self.seconds if self.seconds > 0 else 0.0


def predict(
    source: str | Path, model: str, out: str | Path, options: RunOptions | None = None, **values: Any
) -> PredictResult:
    """Run ``model`` over the images of ``source`` and write the results to ``out`` (see the module doc).

    ``options``: a `PredictOptions` (or the `RunOptions` it shares with evaluate and calibrate), or its fields as
    keywords (``conf=0.5, engine="ray"``); keywords given with ``options`` replace its fields. ``engine``:
    ``local`` (threads and batches in this process) or ``ray`` (`pipeline.inference.ray_engine`: the same steps
    in Ray actors, the same files).
    The verdicts' thresholds are ``screen``'s (a screen.json), else those stored with a ``runs:/`` or
    ``models:/`` model (`pipeline.tracking.screens`), with ``thresholds`` laid over them class by class;
    ``result.thresholds_source`` says which. ``review``: a folder for the uncertain images' review queue
    (`pipeline.inference.review`), from every image of the results folder.
    """
    options = PredictOptions.given(options, values, "predict")
    # Cheap checks first: a refused folder or an empty source costs no model load and no export.
    out = check_out(out)
    # One writer per results folder (and review queue), held for the whole run: a second predict into it stops
    # at once or waits (--wait), so no image is predicted twice and no file is written by two processes.
    with writer_lock(out, KIND, "--out"), writer_lock(options.review or None, KIND, "--review"):
        return _predict_into(source, model, check_out(out), options)


def _predict_into(source: str | Path, model: str, out: Path, options: PredictOptions) -> PredictResult:
    """`predict`'s work, with ``out`` held by this process."""
    before = recorded_settings(out)
    where = _walk_from(source, before)
    if options.review:  # beside the results, never inside them or the source (whose next walk would find it)
        check_queue(
            options.review, others=[("--out", out), *([("the source", Path(where))] if Path(where).is_dir() else [])]
        )
    screen = read_screen(options.screen) if options.screen else None  # a bad file costs no model load
    if options.watch:  # the images come as they arrive (`HotFolder`), none may be there yet
        if not Path(where).is_dir():
            raise SourceError(f"--watch: {printable(source)}: not a folder")
        images, first_side = iter(()), 0
    else:
        images = _first_checked(iter_images(where, exclude=out), source)
        first, images = _peek(images)
        first_side = long_side(first)
    load = LoadProbe()  # over the model's load: what other processes use of the CPU, for the network's threads
    opened = open_model(model, options.tracking_uri)
    tiles = tile_choice(options.tile, options.overlap, opened.training_tile)
    if tiles.line:
        LOG.info("predict: %s", tiles.line)
    scale = inference_scale(options.imgsz, tiles.size, opened.trained_imgsz, opened.training_image_side, first_side)
    if scale.line:
        LOG.info("predict: %s", scale.line)
    # both engines, and the recorded settings
    options = options.model_copy(update={"imgsz": scale.size, "tile": tiles.size, "overlap": tiles.overlap})
    names = [opened.names[i] for i in sorted(opened.names)]
    _verdict(options.thresholds, names, options.conf)  # the user's own first: a typo is named as theirs
    lookup = _screen_lookup(model, opened, options, screen)  # asked once: the thresholds and the drift check share it
    stored, origin, expected = _screen_thresholds(model, opened, options, screen, lookup)
    merged = merged_thresholds(stored, options.thresholds)
    verdict = _verdict(merged, names, options.conf, origin)
    about = thresholds_source(origin, options.thresholds, merged, names, options.conf)
    LOG.debug("predict: thresholds: %s", about)
    options = options.model_copy(update={"conf": _kept_conf(options, verdict, names)})
    settings = _settings(opened, where, names, verdict, options.imgsz, options)
    settings["thresholds_source"] = about  # said, not compared: the same thresholds by another route are the same
    if options.thresholds:  # the calibration's rate was for its own thresholds, not for these
        expected = None
    if expected is not None:  # what the fails are checked against at the end (said, not compared)
        settings["expected_false_reject"] = dict(zip(("rate", "low", "high"), expected, strict=True))
    claim_out(out, source=settings["source"], model=settings["model"])
    check_settings(out, settings)  # before the export: a refused rerun costs no more than the model's load
    detector = build_detector(opened, options, load)
    result = PredictResult(out, model, run_id=detector.run_id, note=detector.note)  # its runtime: once the run ends
    result.imgsz, result.scale = scale.size, scale.line
    result.thresholds, result.thresholds_source = settings["thresholds"], about
    result.conf = options.conf
    LOG.info("predict: runtime %s: %s", detector.runtime, detector.reason)
    done = DoneSet.of(out)
    predictions, errors = AppendLog(out / PREDICTIONS), AppendLog(out / ERRORS)
    save_images, save_crops = options.save_images, options.save_crops
    tiling = Tiling(options.tile, options.overlap, observe=options.drift)
    drift = (
        _drift_check(screen, model, opened, options, settings["thresholds"], result, lookup) if options.drift else None
    )

    def finish(outcome: Outcome) -> None:
        """Write one image's results (or its error), in the order the images were found."""
        if outcome.error:
            errors.append({"path": outcome.path, "reason": outcome.error})
            result.errors += 1
            if hot is not None:
                hot.failed(outcome.path)
            return
        if save_images or save_crops:
            image = outcome.image if outcome.image is not None else read_image(Path(outcome.path))
            if save_images:
                write_annotated(out, outcome.path, image, outcome.detections)
            if save_crops:
                write_crops(out, outcome.path, image, outcome.detections)
        height, width = outcome.shape
        predictions.append(
            {
                "image_id": predictions.lines + 1,
                "path": outcome.path,
                "width": width,
                "height": height,
                "detections": outcome.detections,
            }
        )
        result.images += 1
        window = drift.add(outcome) if drift is not None else None
        if hot is not None:  # after the record: a moved image is always a screened one
            hot.screened(outcome.path, outcome.detections)
            if window is not None:
                hot.drift_window(window)

    hot = _hot_folder(where, out, verdict, names, options, settings, detector.run_id) if options.watch else None
    # A folder or list is counted ahead (its listings, not its images), for the bar's total and ETA.
    count = count_images(where, out, done) if options.progress and hot is None else None
    start = time.perf_counter()
    try:
        todo = _not_done(images, done, result)
        bar = _progress(options.progress, count)
        if options.engine == "ray":
            from pipeline.inference.ray_engine import ray_outcomes

            # Ray actors load the same model, even if an alias moves meanwhile.
            for outcome in ray_outcomes(todo, opened.pinned, options):
                finish(outcome)
                bar.update(1)
        else:
            threads = options.workers or min(8, os.cpu_count() or 1)
            # Images prepared ahead of the model: enough to fill two batches; a few when each is many tiles.
            window = threads + (2 if tiling.size else 2 * options.batch)
            with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool, _watching(hot):
                if hot is not None:
                    todo = hot.paths(done, lambda _: _skipped(result))
                prepared = prepare_ahead(pool, todo, detector, save_images or save_crops, tiling, window)
                for finished in run_batches(prepared, detector, options.batch):
                    finish(outcome_of(finished, detector))
                    bar.update(1)
        bar.close()
    finally:
        predictions.close()
        errors.close()
        result.seconds = time.perf_counter() - start
    result.runtime = detector.runtime  # what the race decided, or torch+onnx if the run ended before it did
    result.watch_latency = hot.latency() if hot is not None else {}
    totals = write_summary(out, names, verdict)
    result.total_images, result.detections, result.failed_verdicts = (
        totals["images"],
        totals["detections"],
        totals["failed_verdicts"],
    )
    result.total_errors = errors.lines
    # Over the whole folder (earlier runs into it too), as the summary counts it; replaced by each run.
    result.screen_warning = unexpected_fails(result.failed_verdicts, result.total_images, expected)
    record_said(out, screen_warning=result.screen_warning)
    if drift is not None:
        result.drift = drift.report()
        drift.write(out, result.drift, settings["source"])
        if result.drift is not None:
            LOG.debug("predict: %s", result.drift.line())  # the command prints it, with the other totals
            if options.track:  # the dashboard's picture: each statistic's baseline against this run's
                drift.plot(out / DRIFT_PLOT)
    if options.review:  # from the log, so a resumed run reviews every image of the folder, not only its own
        atypical = drift.atypical(result.drift) if drift is not None else []
        result.review, chosen = write_uncertain(
            options.review, read_log(out / PREDICTIONS), verdict.threshold, options.band, names, model, atypical
        )
        result.uncertain = len(chosen)
    if hot is not None and hot.tracker is not None:  # the watch's own run: its minutes, now the whole
        _finish_watch_run(result, hot.tracker)
    elif options.track:
        params = {**settings, "out": str(out), "batch": options.batch, "runtime": result.runtime}
        _track(result, params, options.experiment, options.tracking_uri)
    return result


def _drift_check(
    screen: Screen | None,
    model: str,
    opened: Opened,
    options: PredictOptions,
    thresholds: dict[str, float],
    result: PredictResult,
    lookup: ScreenLookup | None = None,
) -> DriftCheck:
    """The run's drift check, against the baseline found with the thresholds' screen (`find_baseline`); without one
    the run is still collected (drift_sample.npz) and ``result.drift_note`` says why nothing is compared."""
    found = find_baseline(screen, options.screen, opened, model, options.tracking_uri, lookup)
    if found.baseline is None:
        result.drift_note = f"not checked: {found.note}"
    else:
        LOG.debug("predict: drift baseline %s", found.where)
    window = options.drift_window if options.watch else None
    return DriftCheck(found.baseline, thresholds, opened.weights_sha256, window, same_model=found.same_model)


def _skipped(result: PredictResult) -> None:
    result.skipped += 1


def _hot_folder(
    where: str,
    out: Path,
    verdict: Verdict,
    names: list[str],
    options: PredictOptions,
    settings: dict[str, Any],
    model_run_id: str | None,
) -> HotFolder:
    """The watch of ``where``, with an MLflow run of its own under --track (its figures sent in the background)."""
    tracker = None
    if options.track:
        from pipeline.tracking import Tracker

        spool = out / ".watch-tracking" / f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        tracker = Tracker(spool, options.tracking_uri, options.experiment, run_name=f"watch {where}")
        tags = {"pipeline.kind": "prediction", "pipeline.watch": "true"}
        tracker.start(tags={**tags, **({"pipeline.model_run_id": model_run_id} if model_run_id else {})})
        tracker.log_params({**settings, "out": str(out), "batch": options.batch, "move_done": options.move_done})
    return HotFolder(Path(where), out, verdict, names, options.move_done, tracker)


@contextlib.contextmanager
def _watching(hot: HotFolder | None) -> Iterator[None]:
    """The watch running, and SIGINT/SIGTERM ending it after the images in hand (nothing without --watch)."""
    if hot is None:
        yield
        return
    with hot, stop_on_signals(hot.stop):
        yield


def _finish_watch_run(result: PredictResult, tracker: Any) -> None:
    """The watch's run gets the summary's totals and files, and ends; what the server has not taken stays journaled."""
    totals = {"total_images": result.total_images, "total_failed_verdicts": result.failed_verdicts}
    totals["total_errors"] = result.total_errors  # "total_": the minutes' own figures have the short names
    totals.update({f"total_latency_{k}": v for k, v in result.watch_latency.items() if k != "images"})
    tracker.log_metrics(totals, step=0)
    for name in (SUMMARY, ERRORS, SETTINGS, *((DRIFT_REPORT,) if result.drift is not None else ())):
        if (result.out / name).exists():
            tracker.log_artifact(result.out / name)
    tracker.finish()
    result.tracking_run_id = tracker.run_id


def _track(result: PredictResult, params: dict[str, Any], experiment: str, tracking_uri: str) -> None:
    """The summary as an MLflow run tagged with the model's run; a server that does not answer costs a note."""
    from pipeline.tracking import log_prediction

    summary = {
        "images": result.images,
        "errors": result.errors,
        "skipped": result.skipped,
        "total_images": result.total_images,
        "total_errors": result.total_errors,
        "failed_verdicts": result.failed_verdicts,
        "seconds": result.seconds,
        "images_per_s": result.images_per_s,
        **({"review.images": result.review.images} if result.review is not None else {}),
        **{f"detections.{name}": n for name, n in result.detections.items()},
    }
    if result.drift is not None:
        summary.update(drift_metrics(result.drift))
    files = [result.out / name for name in (SUMMARY, ERRORS, SETTINGS)]
    tags = {SCREEN_WARNING_TAG: result.screen_warning} if result.screen_warning else {}
    if result.drift is not None:  # this run's (an earlier run's drift.json in the folder is not this one's)
        tags.update(drift_tags(result.drift))
        files += [result.out / DRIFT_REPORT, result.out / DRIFT_PLOT]
    try:
        result.tracking_run_id = log_prediction(summary, params, files, experiment, tracking_uri, result.run_id, tags)
    except Exception as exc:  # noqa: BLE001 - the results are in the files whatever MLflow says
        result.note = f"tracking: could not log the summary ({type(exc).__name__}: {str(exc)[:150]}); the files hold it"


def _verdict(thresholds: dict[str, float], names: list[str], conf: float, origin: str = "") -> Verdict:
    unknown = sorted(set(thresholds) - set(names) - {"default"})
    if unknown:
        where = f" ({origin})" if origin else ""
        raise ResultsError(f"threshold {unknown[0]!r}{where}: the model has no such class (it has {', '.join(names)})")
    for name, value in thresholds.items():
        if not 0 <= value <= 1:
            raise ResultsError(f"threshold {name}={value}: must be between 0 and 1")
    default = thresholds.get("default", conf)
    return Verdict({k: v for k, v in thresholds.items() if k != "default"}, default)


def _screen_lookup(model: str, opened: Opened, options: PredictOptions, screen: Screen | None) -> ScreenLookup | None:
    """The screen stored with an MLflow model's version (or run), asked once; None where none is looked for (a
    ``--screen``, a bundle's own, a local file)."""
    if screen is not None or isinstance(opened, OpenedBundle) or not model.startswith(MLFLOW_SCHEMES):
        return None
    from pipeline.tracking.screens import look_up_screen

    # the version the alias pointed to when the model was opened: the thresholds calibrated for these weights
    return look_up_screen(opened.pinned or model, options.tracking_uri)


def _screen_thresholds(
    model: str, opened: Opened, options: PredictOptions, screen: Screen | None, lookup: ScreenLookup | None = None
) -> tuple[dict[str, float], str, tuple[float, float, float] | None]:
    """The thresholds of ``--screen``, else those stored with an MLflow model's version (or run), where they came
    from, and the false-reject rate they were calibrated to (if known); none for a local file. A store that does
    not answer costs one line: --threshold and --conf go on. ``lookup``: the store asked already (`_screen_lookup`)."""
    if screen is not None:
        if screen.model_sha256 and screen.model_sha256 != opened.weights_sha256:
            LOG.info(
                "predict: --screen %s was calibrated for another model (%s); its thresholds are used",
                options.screen,
                screen.model,
            )
        return screen.thresholds, f"{screen.describe()}, from {options.screen}", screen.expected_false_reject()
    if isinstance(opened, OpenedBundle):  # the screen it was exported with
        own = opened.screen
        return own.thresholds, f"{own.describe()}, from the bundle {opened.folder}", own.expected_false_reject()
    if not model.startswith(MLFLOW_SCHEMES):
        return {}, "", None
    lookup = lookup or _screen_lookup(model, opened, options, screen)
    if lookup.error is not None:  # a store gone since the model was fetched, an MLflow error: one line
        fallback = "--threshold and --conf" if options.thresholds else "--conf"
        LOG.info(
            "predict: the thresholds stored with %s could not be looked up (%s); verdicts use %s",
            model,
            first_line(lookup.error, 150),
            fallback,
        )
        return {}, "", None
    stored = lookup.stored
    if stored is None:
        return {}, "", None
    about = f"{stored.about or 'thresholds'}, stored with {stored.source}"
    return stored.thresholds, about, expected_rate(stored.false_reject)


def thresholds_source(
    origin: str, given: dict[str, float], merged: dict[str, float], names: list[str], conf: float
) -> str:
    """Where the verdicts' thresholds came from, in one line: ``calibrated on val of data.yaml (recall >= 0.95,
    2026-12-01), stored with models:/defects/3; --threshold scratch=0.4 overrides``."""
    parts = [origin] if origin else []
    if given:
        pairs = ", ".join(f"{name}={value:g}" for name, value in given.items())
        parts.append(f"--threshold {pairs}" + ((" overrides" if len(given) == 1 else " override") if origin else ""))
    if not parts:
        return f"none: an image fails when any detection reaches --conf {conf:g}"
    rest = [name for name in names if name not in merged]
    if rest and "default" not in merged:  # the classes no threshold names fail at --conf
        parts.append(f"{', '.join(rest) if len(rest) <= 3 else f'{len(rest)} other classes'} at --conf {conf:g}")
    return "; ".join(parts)


def _kept_conf(options: PredictOptions, verdict: Verdict, names: list[str]) -> float:
    """The lowest score kept: --conf, or the lowest threshold in use (less the --review band) when that is lower.

    A detection below --conf is never kept, so a threshold below it could never fail an image, and a review
    would not see the scores just under a threshold. The one line says so, whether --conf was given or not."""
    band = options.band if options.review else 0.0
    name, lowest = min(((n, verdict.threshold(n)) for n in names), key=lambda pair: pair[1])
    kept = max(0.0, round(lowest - band, 6))
    if kept >= options.conf:
        return options.conf
    which = name if name in verdict.thresholds else "default"
    why = f"the lowest threshold in use ({which} {lowest:g})"
    if band:
        why += f" less the --review band {band:g}, so the review sees the scores on both sides of each threshold"
    else:
        why += ": a detection below --conf is never kept, so a threshold under it could never fail an image"
    LOG.info("predict: --conf %g lowered to %g, %s", options.conf, kept, why)
    return kept


def _settings(
    opened: Opened, source: str, names: list[str], verdict: Verdict, imgsz: int, options: PredictOptions
) -> dict[str, Any]:
    """What the results in a folder depend on: a rerun must match them to add to it.

    The model is pinned by its bytes (SHA-256) and, from MLflow, its run and registry version: a
    retrained model at the same path, or an alias moved to another version, is another model.
    """
    local = isinstance(opened, OpenedBundle) or (
        not opened.source.startswith(MLFLOW_SCHEMES) and Path(opened.source).is_file()
    )
    return {
        "source": source,
        "model": os.path.abspath(opened.source) if local else opened.source,
        **opened.identity,
        "classes": names,
        "imgsz": imgsz,
        "conf": options.conf,
        "iou": options.iou,
        "max_det": options.max_det,
        "thresholds": {**verdict.thresholds, "default": verdict.default},
        "tile": options.tile,
        "overlap": options.overlap if options.tile else 0,
    }


def normalised_source(source: str | Path) -> str:
    """The source as an absolute path (or pattern): the same images however the folder was named."""
    return os.path.abspath(os.path.expanduser(os.fspath(source)))


def _walk_from(source: str | Path, before: dict[str, Any] | None) -> str:
    """What to walk: the normalised source, so recorded paths are absolute and a rerun from another folder
    finds them done; a folder of an earlier version (no recorded source) is walked as it was, as given."""
    if before is not None and "source" not in before:
        return os.fspath(source)
    return normalised_source(source)


def _first_checked(paths: Iterator[Path], source: str | Path) -> Iterator[Path]:
    """``paths``, once it is known to hold at least one: no image at all is an error, not an empty pass."""
    first = next(paths, None)
    if first is None:
        raise SourceError(f"{printable(source)}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return itertools.chain([first], paths)


def _peek(paths: Iterator[Path]) -> tuple[Path, Iterator[Path]]:
    """The first of ``paths`` (there is one: `_first_checked`), and all of them still to come."""
    first = next(paths)
    return first, itertools.chain([first], paths)


def _not_done(paths: Iterable[Path], done: DoneSet, result: PredictResult) -> Iterator[str]:
    for path in paths:
        text = str(path)
        if len(done) and text in done:
            result.skipped += 1
        else:
            yield text


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(enabled: bool, count: Count | None) -> Any:
    """The bar over the images of the source: with a count, it shows the whole source (and so an ETA) and
    starts at the images done by earlier runs, which this run skips; without one (a glob), it counts up."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    total, initial = count if count is not None else (None, 0)
    return tqdm(
        total=total, initial=initial, unit="img", desc="predict", file=sys.stderr, dynamic_ncols=True, mininterval=0.5
    )

"""Calibrate a defect screen: per-class score thresholds chosen on a split, written as screen.json.

The model predicts every image of the split once at a low threshold (``predict_split``, as evaluate
does); the detections are matched to the objects as COCO matches them (IoU >= 0.5); each class gets
the operating point its recall target (or the false-alarm budget) asks for, with a bootstrap interval
of its recall; then the thresholds are held within a false-reject budget on good images (``--good``, the
split's own background images, else an estimate: `false_rejects`). The files go to ``--out`` (built beside it, swapped in whole); ``--track`` logs a
calibration run and, for a ``models:/`` or ``runs:/`` model, stores the thresholds with that model
version (or run), where ``predict`` finds them.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline.checkpoints import MODEL_URI_SCHEMES
from pipeline.data.dataset import DataYaml, content_hash
from pipeline.destinations import build_then_swap, reserve
from pipeline.drift import DIGEST_TAG, Baseline, rethresholded
from pipeline.drift import FILENAME as BASELINE
from pipeline.evaluation.evaluation import data_spec
from pipeline.evaluation.matching import IOU, match_split
from pipeline.inference.options import RunOptions
from pipeline.inference.screen import FILE_NAME, Screen
from pipeline.messages import UserError
from pipeline.screen.calibration_report import markdown, plot_operating_curve, plot_pr_curves, table_lines
from pipeline.screen.false_rejects import good_scores
from pipeline.screen.operating_points import LEVEL, PREFER, OperatingPoints, operating_points
from pipeline.screen.screened_split import screened_split

KIND = "calibrate"  # the marker's kind of an --out folder: a rerun replaces it once the new files are whole
DEFAULT_OUT = "calibration"
FILES = (FILE_NAME, "screen.md", "pr_curves.png", "operating_curve.png")
MAX_FALSE_REJECT = 0.05  # the default image-level budget: 1 good part in 20 sent to a second look
LOW_CONF = 0.001  # every detection an operating point could want: the thresholds are chosen far above it
RUN_FIELDS = ("imgsz", "batch", "device", "tracking_uri")  # what calibrate (and --check) take of `RunOptions`


class CalibrateError(UserError, ValueError):
    """A calibration that cannot run; the message is one line."""


@dataclass
class Calibration:
    screen: Screen
    files: list[str]
    lines: list[str]  # unreachable targets, classes without objects, the image-level rates: one line each
    inference_s: float  # the model's prediction of the split (loading included)
    calibration_s: float  # everything else but tracking: data hash, matching, operating points, files
    run_id: str | None = None  # the calibration run, with --track
    attached: str | None = None  # where the thresholds were stored: "models:/name/3" or "run <id>"
    model_run_id: str | None = None
    tracking_s: float = 0.0
    notes: list[str] = field(default_factory=list)  # what was not done, and why (e.g. thresholds not attached)

    def table(self) -> list[str]:
        return table_lines(self.screen)


def calibrate(
    model: str,
    data: str | Path,
    *,
    split: str = "val",
    target_recall: float = 0.95,
    recalls: dict[str, float] | None = None,
    max_fp_per_image: float | None = None,
    good: str | Path | None = None,
    max_false_reject: float | None = MAX_FALSE_REJECT,
    prefer: str = "budget",
    out: str | Path | None = None,
    track: bool = False,
    experiment: str = "calibrations",
    seed: int = 0,
    bootstrap: int = 1000,
    options: RunOptions | None = None,
    **run: Any,
) -> Calibration:
    """Per-class thresholds for ``model`` on ``split`` of ``data``: the highest whose recall reaches
    ``target_recall`` (``recalls`` per class), or with ``max_fp_per_image`` the lowest within that budget; raised
    jointly where needed to falsely reject at most ``max_false_reject`` of the good images (``good``: a folder of
    defect-free images; ``prefer="recall"`` keeps the recall targets and reports the rate). ``options``: how the
    model runs (`RunOptions`), or as keywords ``imgsz``, ``batch``, ``device``, ``tracking_uri`` (also where
    ``track`` logs); the conf is always LOW_CONF."""
    options = run_options(options, run, "calibrate")
    tracking_uri = options.tracking_uri
    recalls = dict(recalls or {})
    spec = data_spec(data, split)
    _check_options(target_recall, recalls, max_fp_per_image, bootstrap, spec)
    _check_budget(max_false_reject, prefer)
    # Held from before the model loads (a refused --out costs nothing) to the swap: one writer per folder.
    with reserve(out or DEFAULT_OUT, KIND, replace=True) as folder:
        started = time.perf_counter()
        found, problems, good_images = screened_split(model, data, options, split=split, good=good)
        inferred = time.perf_counter()
        matches = match_split(found.truth, found.detections, IOU)
        mode = "fp_budget" if max_fp_per_image is not None else "recall"
        chosen = operating_points(
            matches,
            targets=recalls,
            default=target_recall,
            max_fp_per_image=max_fp_per_image,
            good=good_scores(good_images.detections, len(matches.classes)) if good_images else None,
            max_false_reject=max_false_reject,
            prefer=prefer,
            split=split,
            samples=bootstrap,
            seed=seed,
        )
        if not chosen.thresholds:
            raise CalibrateError(f"{data}: {split} has no object of any class; nothing to calibrate on")
        baseline = _baseline(found, chosen.thresholds, str(data), split)
        screen = Screen(
            thresholds=chosen.thresholds,
            model=model,
            data=str(data),
            split=split,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            mode=mode,
            targets={} if mode == "fp_budget" else {"default": target_recall, **recalls},
            max_fp_per_image=max_fp_per_image,
            max_false_reject=max_false_reject,
            prefer=prefer,
            false_reject=asdict(chosen.false_reject) if chosen.false_reject else {},
            escape=chosen.escape,
            good=str(good) if good is not None else "",
            model_sha256=found.model_sha256,
            data_hash=content_hash(spec.splits),  # as a training records its data (dataset.hash)
            iou=IOU,
            classes=chosen.classes,
            images=chosen.images,
            bootstrap={"samples": bootstrap, "seed": seed, "level": LEVEL, "resampled": "images"},
            drift_baseline=(
                {"file": BASELINE, "sha256": baseline.digest(), "images": baseline.images} if baseline else {}
            ),
        )
        files = _write(screen, chosen, folder, baseline)
        skipped = [f"{problems} label problems left out (yolo-pipeline data validate names them)"] if problems else []
        result = Calibration(
            screen=screen,
            files=[str(p) for p in files],
            lines=list(chosen.lines) + skipped + (good_images.lines() if good_images else []),
            inference_s=inferred - started,
            calibration_s=time.perf_counter() - inferred,
            model_run_id=found.model_run_id,
        )
        registry_model = model.startswith(MODEL_URI_SCHEMES)
        if track:
            tracked = time.perf_counter()
            result.run_id = _log(result, files, experiment, tracking_uri)
            if registry_model:
                from pipeline.tracking.screens import attach_screen, serve_screen

                result.attached = attach_screen(
                    model, screen.thresholds, screen.describe(), result.run_id, tracking_uri, screen.false_reject
                )
                if screen.drift_baseline:  # which baseline the version's predictions are compared with
                    from pipeline.tracking.screens import tag_model

                    tag_model(model, {DIGEST_TAG: screen.drift_baseline["sha256"]}, tracking_uri)
                # The served model (`mlflow models serve`) reads screen.json from its own files: one logged model
                # for a version and its run, so the last calibration of these weights is the screen they serve.
                served = serve_screen(model, folder / FILE_NAME, tracking_uri)
                result.notes.append(
                    f"screen.json put into the files of {served}: served with {model}, until the next calibration"
                    if served
                    else f"{model} has no MLflow 3 logged model: its served model keeps no screen (tags only)"
                )
            result.tracking_s = time.perf_counter() - tracked
        elif registry_model:
            result.notes.append(
                f"thresholds not stored with {model}: add --track to attach them (predict then uses them)"
            )
        return result


def run_options(options: RunOptions | None, run: dict[str, Any], command: str) -> RunOptions:
    """How calibrate and its check run the model: ``options`` with ``run`` (their keywords of `RUN_FIELDS`) laid
    over them, at LOW_CONF whatever they say."""
    return RunOptions.given(options, run, command, RUN_FIELDS).model_copy(update={"conf": LOW_CONF})


def _check_options(
    target: float, recalls: dict[str, float], max_fp: float | None, bootstrap: int, spec: DataYaml
) -> None:
    """Every option that can be wrong, said before the model loads."""
    for option, value in [("--target-recall", target), *((f"--recall {k}", v) for k, v in recalls.items())]:
        if not isinstance(value, int | float) or math.isnan(value) or not 0 < value <= 1:
            raise CalibrateError(f"{option}: a recall target is a number in (0, 1], got {value!r}")
    classes = list(spec.names.values())
    unknown = sorted(set(recalls) - set(classes))
    if unknown:
        raise CalibrateError(f"--recall: no class {', '.join(unknown)}; the model's classes: {', '.join(classes)}")
    if max_fp is not None:
        if math.isnan(max_fp) or max_fp < 0:
            raise CalibrateError(f"--max-fp-per-image: a number >= 0, got {max_fp!r}")
        if recalls:
            raise CalibrateError("--recall and --max-fp-per-image: choose thresholds by one of them, not both")
    if bootstrap < 10:
        raise CalibrateError(f"--bootstrap: at least 10 resamples for an interval, got {bootstrap}")


def _check_budget(max_false_reject: float | None, prefer: str) -> None:
    if max_false_reject is not None and (math.isnan(max_false_reject) or not 0 <= max_false_reject <= 1):
        raise CalibrateError(f"--max-false-reject: a share of good images in [0, 1], got {max_false_reject!r}")
    if prefer not in PREFER:
        raise CalibrateError(f"--prefer: one of {', '.join(PREFER)}, got {prefer!r}")


def _baseline(found: Any, thresholds: dict[str, float], data: str, split: str) -> Baseline | None:
    """What the model saw on the split at the chosen thresholds: the baseline predict's drift check compares with."""
    if found.seen is None or not found.seen.images:
        return None
    sample = rethresholded(found.seen, thresholds)
    return Baseline(sample=sample, model_sha256=found.model_sha256, data=data, split=split)


def _write(screen: Screen, chosen: OperatingPoints, folder: Path, baseline: Baseline | None = None) -> list[Path]:
    """screen.json, screen.md, pr_curves.png, (when a false-reject rate exists) operating_curve.png and the drift
    baseline the screen names, built beside ``folder`` and swapped in whole."""
    info: dict[str, Any] = {"model": screen.model, "data": screen.data, "split": screen.split}
    names = [*(FILES if chosen.operating is not None else FILES[:3]), *([BASELINE] if baseline else [])]
    with build_then_swap(folder, KIND, "--out", **info) as staging:
        if baseline is not None:
            baseline.save(staging / BASELINE)
        screen.write(staging / FILES[0])
        (staging / FILES[1]).write_text(markdown(screen, chosen.lines), encoding="utf-8")
        plot_pr_curves(chosen.curves, screen, staging / FILES[2])
        if chosen.operating is not None:
            plot_operating_curve(chosen.operating, screen, staging / FILES[3])
    return [folder / name for name in names]


def _log(result: Calibration, files: list[Path], experiment: str, tracking_uri: str) -> str:
    """A run tagged ``pipeline.kind=calibration``: per-class metrics, the options, the three files."""
    from pipeline.tracking.runs import log_summary_run
    from pipeline.training.epoch_metrics import class_key

    screen = result.screen
    summary: dict[str, Any] = {}
    for name, point in screen.classes.items():
        if point.objects == 0:
            continue
        for key in ("threshold", "recall", "recall_low", "recall_high", "precision", "fp_per_image", "objects"):
            summary[f"{key}.{class_key(name)}"] = getattr(point, key)
    summary.update({f"images.{k}": v for k, v in screen.images.items() if v is not None})
    for side, rates in (("false_reject", screen.false_reject), ("escape", screen.escape)):
        summary.update({f"{side}.{k}": rates[k] for k in ("rate", "low", "high") if rates.get(k) is not None})
    summary.update({"time.inference_s": result.inference_s, "time.calibration_s": result.calibration_s})
    params: dict[str, Any] = {
        "model": screen.model,
        "data": screen.data,
        "split": screen.split,
        "mode": screen.mode,
        "iou": screen.iou,
        "bootstrap": screen.bootstrap["samples"],
        "seed": screen.bootstrap["seed"],
        "data_hash": screen.data_hash,
        "model_sha256": screen.model_sha256,
    }
    if screen.mode == "fp_budget":
        params["max_fp_per_image"] = screen.max_fp_per_image
    params.update({"max_false_reject": screen.max_false_reject, "prefer": screen.prefer, "good": screen.good})
    if screen.false_reject:
        params["false_reject.how"] = screen.false_reject["how"]
    params.update({f"target_recall.{class_key(k)}": v for k, v in screen.targets.items()})
    tags = {"pipeline.model_run_id": result.model_run_id} if result.model_run_id else {}
    name = f"calibrate {Path(screen.data).name} {screen.split}"
    return log_summary_run(
        "calibration",
        summary,
        params,
        files,
        experiment,
        name,
        tracking_uri,
        tags,
        folders={FILE_NAME: "screen", BASELINE: "screen"},
    )


__all__ = ["Calibration", "CalibrateError", "calibrate"]

"""``predict``: a detector over image folders, its flags generated from `PredictOptions`."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import inference  # `inference.predict` loads the engine (torch, ultralytics) when first called
from pipeline.checkpoints import add_trust_option
from pipeline.cli.common import add_options, options_from
from pipeline.config import class_values
from pipeline.destinations import add_wait_option
from pipeline.inference.hot_folder import percentile_line
from pipeline.inference.options import PredictOptions

_METAVARS = {"screen": "FILE", "review": "DIR"}  # predict's options that name a file or a folder


def cmd_predict(args: argparse.Namespace) -> int:
    thresholds = class_values(args.threshold, "--threshold", "CLASS=SCORE (or default=SCORE), e.g. scratch=0.4")
    options = options_from(args, PredictOptions, thresholds=thresholds)
    result = inference.predict(args.source, args.model, args.out, options)
    if result.note:
        print(f"note: {result.note}")
    done_before = f", {result.skipped} done by an earlier run" if result.skipped else ""
    print(
        f"predicted {result.images} images, {result.errors} failed{done_before}, in {result.seconds:.1f} s "
        f"({result.images_per_s:.1f} images/s, {result.runtime})"
    )
    print("detections: " + ", ".join(f"{name} {n}" for name, n in result.detections.items()))
    passed = result.total_images - result.failed_verdicts
    print(f"verdicts:   {result.failed_verdicts} fail, {passed} pass (of {result.total_images} images in {args.out})")
    if result.thresholds_source:
        print(f"thresholds: {result.thresholds_source}")
    print(f"wrote:      predictions.jsonl, summary.csv, coco_results.json in {args.out}")
    if result.run_id:
        print(f"model:      {args.model} (MLflow run {result.run_id})")
    if result.tracking_run_id:
        print(f"MLflow run: {result.tracking_run_id} (experiment {args.experiment}), the summary of this prediction")
    if (queue := result.review) is not None:
        print(
            f"review:     {queue.images} uncertain images (a top score within {args.band:g} of its threshold), most "
            f"uncertain first: tasks.json, label_config.xml, review.csv, images/ in {queue.folder}"
        )
        for missing in queue.missing:
            print(f"review:     left out {missing}")
    if result.watch_latency:
        print(f"watch:      {percentile_line(result.watch_latency)} ({result.watch_latency['images']:.0f} images)")
    if result.drift is not None:
        print(f"{result.drift.line()} (drift.json in {args.out})")
    elif result.drift_note:
        print(f"drift: {result.drift_note}")
    if result.total_errors:
        print(f"failed:     {result.total_errors} images, each with its reason in {Path(args.out) / 'errors.jsonl'}")
    if result.screen_warning:  # last, where it is seen
        print(f"warning:    {result.screen_warning}")
    return 1 if result.total_errors and not args.watch else 0  # a watch ends by a signal, as asked: not a failure


def _add_thresholds(parser: argparse.ArgumentParser) -> None:
    """`PredictOptions.thresholds` as ``--threshold CLASS=SCORE``, repeated."""
    parser.add_argument(
        "--threshold",
        action="append",
        default=[],
        metavar="CLASS=SCORE",
        help="an image fails when a detection of CLASS reaches SCORE; default=SCORE for the other classes "
        "(default: --screen's, else those stored with a runs:/ or models:/ model, else --conf); a --conf above "
        "the lowest threshold is lowered to it",
    )


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "predict", help="run a detector over image folders; results to files; a rerun resumes where it stopped"
    )
    p.add_argument("source", help="a folder (recursive), a glob ('parts/**/*.png'), an image, or a text file of paths")
    p.add_argument(
        "--model",
        required=True,
        help="a .pt file, runs:/<id>/model, models:/<name>@<alias>, models:/<name>/<n>, or a bundle folder (export)",
    )
    p.add_argument("--out", required=True, help="results folder; the same command again skips the images done")
    add_options(p, PredictOptions, own={"thresholds": _add_thresholds}, metavars=_METAVARS)
    add_trust_option(p)
    add_wait_option(p)
    p.set_defaults(func=cmd_predict)

"""``calibrate`` (and ``calibrate --check``): a defect screen's per-class thresholds, chosen on a split or checked on
another; how the model runs is generated from `RunOptions` (the fields calibrate takes, `RUN_FIELDS`)."""

from __future__ import annotations

import argparse
import os

from pipeline.checkpoints import add_trust_option
from pipeline.cli.common import add_options, options_from
from pipeline.config import class_values
from pipeline.data.dataset import SPLITS
from pipeline.destinations import add_wait_option
from pipeline.inference.options import RunOptions
from pipeline.inference.screen import read_screen
from pipeline.screen.calibrate import MAX_FALSE_REJECT, RUN_FIELDS, CalibrateError, calibrate
from pipeline.screen.check import check_screen


def _check(args: argparse.Namespace) -> int:
    """``calibrate --check SCREEN``: what the screen's thresholds reach on another split."""
    chosen = (args.target_recall, args.max_fp_per_image, args.max_false_reject)
    if any(option is not None for option in chosen) or args.recall or args.track or args.prefer != "budget":
        raise CalibrateError(
            "--check: the thresholds come from the screen file; no targets, budgets or --track with it"
        )
    screen = read_screen(args.check)
    done = check_screen(
        args.model,
        args.data,
        screen,
        split=args.split,
        good=args.good,
        seed=args.seed,
        bootstrap=args.bootstrap,
        options=options_from(args, RunOptions, RUN_FIELDS),
    )
    print(f"{args.check}: {screen.describe()}; checked on {args.split} of {args.data}")
    print("\n".join(done.table()))
    for line in done.lines:
        print(line)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    if args.check:
        return _check(args)
    if args.max_fp_per_image is not None and args.target_recall is not None:
        raise CalibrateError("--target-recall and --max-fp-per-image: choose thresholds by one of them, not both")
    recalls = class_values(args.recall, "--recall", "CLASS=RECALL, e.g. scratch=0.99")
    done = calibrate(
        args.model,
        args.data,
        split=args.split,
        target_recall=0.95 if args.target_recall is None else args.target_recall,
        recalls=recalls,
        max_fp_per_image=args.max_fp_per_image,
        good=args.good,
        max_false_reject=MAX_FALSE_REJECT if args.max_false_reject is None else args.max_false_reject,
        prefer=args.prefer,
        out=args.out,
        track=args.track,
        experiment=args.experiment,
        seed=args.seed,
        bootstrap=args.bootstrap,
        options=options_from(args, RunOptions, RUN_FIELDS),
    )
    screen = done.screen
    print(f"{screen.model}: {screen.describe()}")
    print("\n".join(done.table()))
    for line in done.lines + done.notes:
        print(line)
    folder = os.path.dirname(done.files[0])
    print(f"wrote: {os.path.join(folder, '')} ({', '.join(os.path.basename(p) for p in done.files)})")
    if done.run_id:
        print(f"MLflow run: {done.run_id} (experiment {args.experiment})")
    if done.attached:
        print(f"thresholds attached to {done.attached} (tags pipeline.screen.*; screen.json in run {done.run_id})")
    print(f"calibration: {done.calibration_s:.1f} s beyond the model's inference ({done.inference_s:.1f} s)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "calibrate", help="per-class score thresholds for a defect screen, from recall targets or a false-alarm budget"
    )
    p.add_argument("--model", required=True, help="a .pt file, runs:/<id>/model or models:/<name>@<alias>")
    p.add_argument("--data", required=True, help="a data.yaml, a folder in YOLO layout, or an imported manifest")
    p.add_argument("--split", default="val", choices=SPLITS, help="the split to calibrate on (default: val)")
    p.add_argument(
        "--target-recall",
        type=float,
        metavar="R",
        help="per class, the highest threshold whose recall reaches R (default: 0.95)",
    )
    p.add_argument(
        "--recall", action="append", default=[], metavar="CLASS=R", help="another target for one class (repeat)"
    )
    p.add_argument(
        "--max-fp-per-image",
        type=float,
        metavar="F",
        help="instead: per class, the lowest threshold with at most F false detections per image",
    )
    p.add_argument(
        "--good",
        metavar="DIR",
        help="a folder of defect-free images: the share of good parts the screen rejects is measured on them "
        "(with the split's own background images); without any, it is estimated",
    )
    p.add_argument(
        "--max-false-reject",
        type=float,
        metavar="R",
        help="at most this share of good images rejected: thresholds are raised jointly where the recall targets "
        "would reject more (default: 0.05)",
    )
    p.add_argument(
        "--prefer",
        choices=("budget", "recall"),
        default="budget",
        help="when recall targets and the false-reject budget cannot both hold: budget (default) keeps the budget, "
        "recall keeps the targets and reports the rate",
    )
    p.add_argument(
        "--out",
        default="calibration",
        help="for screen.json, screen.md, pr_curves.png, operating_curve.png (calibration/)",
    )
    p.add_argument(
        "--check",
        metavar="SCREEN",
        help="instead: the recall a screen.json's thresholds reach on --split (one calibration never saw, e.g. test)",
    )
    p.add_argument("--track", action="store_true", help="log a calibration run; store the thresholds with the model")
    p.add_argument("--experiment", default="calibrations", help="MLflow experiment for --track")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap over images")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the recall interval")
    add_options(p, RunOptions, RUN_FIELDS)
    add_trust_option(p)
    add_wait_option(p)
    p.set_defaults(func=cmd_calibrate)

"""The ``yolo-pipeline`` commands that work across runs: compare, sweep, evaluate, promote.

Each parses its arguments, calls the library function and prints a short summary; `pipeline.cli` adds
them to its parser.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

from pipeline.checkpoints import add_trust_option
from pipeline.config import class_values
from pipeline.data.dataset import SPLITS
from pipeline.destinations import add_wait_option
from pipeline.promotion.promotion import PromoteError, Promotion

_TRACKING_HELP = "MLflow server (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"


def cmd_compare(args: argparse.Namespace) -> int:
    from pipeline.comparison import compare

    done = compare(
        args.experiment,
        filter=args.filter,
        runs=args.runs,
        parent=args.parent,
        sort=args.sort,
        ascending=args.ascending,
        out=args.out,
        tracking_uri=args.tracking_uri,
    )
    print(done.text)
    print()
    params = ", ".join(done.table.params) or "none (every param is the same)"
    print(f"{len(done.runs)} run{'s' if len(done.runs) != 1 else ''}; params that differ: {params}")
    if done.best is not None:
        print(f"first by {done.sort}: {done.best['run']} ({done.best['run_id']})")
    if done.caution:
        print(done.caution)
    if done.files:
        folder = done.files[0].parent
        print(f"wrote: {os.path.join(folder, '')} ({', '.join(p.name for p in done.files)})")  # never two separators
        print(f"report: {folder / 'report.html'}")
    return 0


def _score(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.4f}"


def cmd_sweep(args: argparse.Namespace) -> int:
    from pipeline.config import ConfigError

    def report(child: object) -> None:
        if child.status == "FINISHED":
            outcome = f"best.mAP50_95 {_score(child.score)}"
        else:
            outcome = "stopped early (asha)" if child.status == "KILLED" else child.status
        print(f"[{child.index + 1}] {' '.join(child.overrides)}: {outcome}  (run {child.run_id or '-'})", flush=True)
        if child.error:
            print(f"    {child.error}", flush=True)

    if args.resume:
        from pipeline.sweeps.ray_sweep import resume_sweep

        result = resume_sweep(args.resume, args.tracking_uri, on_child=report)
    elif not args.config:
        raise ConfigError("sweep: name the experiment YAML (or --resume PARENT_RUN)")
    else:
        search = dict(search=args.search, space=args.space, samples=args.samples, seed=args.seed)
        ray_only = [
            flag for flag, given in (("--early-stop", args.early_stop), ("--parallel", args.parallel != 1)) if given
        ]
        if args.engine == "local" and (ray_only or args.search == "optuna"):
            what = ", ".join(ray_only or ["--search optuna"])
            raise ConfigError(f"sweep: {what} needs --engine ray (the local engine trains one child after another)")
        if args.engine == "ray":
            from pipeline.sweeps.ray_sweep import RayOptions, ray_sweep

            options = RayOptions(
                parallel=args.parallel,
                cpus_per_trial=args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial,
                early_stop=args.early_stop,
                metric=args.metric,
                grace=args.grace,
            )
            result = ray_sweep(args.config, args.grid, args.overrides, args.name, report, options=options, **search)
        else:
            from pipeline.sweeps.sweep import sweep

            result = sweep(args.config, args.grid, args.overrides, name=args.name, on_child=report, **search)
    print()
    stopped = f", {len(result.stopped)} stopped early" if result.stopped else ""
    print(
        f"sweep: {len(result.finished)} of {len(result.children)} children finished, {len(result.failed)} failed{stopped}"
    )
    if (best := result.best) is not None:
        print(f"best:  {' '.join(best.overrides)} (run {best.run_id}, best.mAP50_95 {_score(best.score)})")
    print(f"MLflow parent run: {result.parent_run_id} (experiment {result.experiment}, {result.tracking_uri})")
    print(f"compare: yolo-pipeline compare --parent {result.parent_run_id} --out compare/")
    return 1 if result.failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.evaluation.evaluation import evaluate

    result = evaluate(
        args.model,
        args.data,
        split=args.split,
        imgsz=args.imgsz,
        batch=args.batch,
        conf=args.conf,
        iou=args.iou,
        device=args.device,
        out=args.out,
        track=args.track,
        experiment=args.experiment,
        tracking_uri=args.tracking_uri,
        review=args.review,
        screen=args.screen,
    )
    u, c = result.ultralytics, result.coco
    print(f"{result.model} on {result.data} [{result.split}]: {result.images} images, {result.instances} objects")
    print(
        f"ultralytics: mAP50 {u['mAP50']:.4f}  mAP50-95 {u['mAP50_95']:.4f}  P {u['precision']:.4f}  R {u['recall']:.4f}"
    )
    print("COCO:        " + "  ".join(f"{k} {_score(v)}" for k, v in c.items()))
    print(f"mAP50 side by side: ultralytics {u['mAP50']:.4f}, COCO {_score(c['AP50'])}")
    print(f"{'class':<20} {'objects':>7} {'AP50':>7} {'AP50-95':>7} {'COCO AP50':>9} {'COCO AP':>7}")
    for name, v in result.per_class.items():
        cells = [_score(v["AP50"]), _score(v["AP50_95"]), _score(v["coco.AP50"]), _score(v["coco.AP"])]
        print(f"{name:<20} {v['instances'] or 0:>7} {cells[0]:>7} {cells[1]:>7} {cells[2]:>9} {cells[3]:>7}")
    if result.files:
        print(f"wrote: {', '.join(result.files)}")
    if (review := result.review) is not None:
        print(f"thresholds: {review['thresholds_source']}")
        for note in review["notes"]:
            print(f"review:     {note}")
        print(
            f"review:     {review['images']} images, {review['missed']} missed objects, {review['false_alarms']} false "
            f"alarms, worst first: tasks.json, label_config.xml, review.csv, crops/, images/ in {review['folder']}"
        )
    if args.json:
        print(json.dumps(result.metrics(), indent=1))
    if result.run_id:
        print(f"MLflow run: {result.run_id} (experiment {args.experiment})")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.promotion.promotion import promote

    if args.target == "best" and not (args.experiment or args.parent):
        raise PromoteError("promote best: --experiment (or --parent) names the runs to choose from")
    done = promote(
        args.target,
        experiment=args.experiment,
        parent=args.parent,
        name=args.name,
        alias=args.alias,
        metric=args.metric,
        lowest=args.lowest,
        tracking_uri=args.tracking_uri,
        data=args.data or "",
        split=args.split,
        gates=args.gate,
        no_regress=args.no_regress,
        dry_run=args.dry_run,
        device=args.device,
        good=args.good,
        screen=args.screen,
    )
    value = "no value" if done.value is None else f"{done.value:.4f}"
    chosen = f"best of {len(done.compared)} runs" if args.target == "best" else "as named"
    if done.decision is not None:
        _print_decision(done, args)
    if done.dry_run:
        verdict = "would be accepted" if done.accepted else "would be refused"
        print(f"dry run:    run {done.run_id} ({done.metric} {value}, {chosen}) {verdict}; nothing registered")
        for line in done.decision.failures if done.decision else []:
            print(line, file=sys.stderr)
        return 0 if done.accepted else 1
    print(f"registered {done.name} version {done.version} from run {done.run_id} ({done.metric} {value}, {chosen})")
    if not done.accepted:
        stays = f"stays on version {done.previous}" if done.previous else "not set"
        print(f"refused:    {done.uri} {stays}; version {done.version} is tagged with why")
        for line in done.decision.failures:
            print(line, file=sys.stderr)
        return 1
    print(f"alias:      {done.uri} -> version {done.version}")
    print(f"predict:    yolo-pipeline predict FOLDER --model {done.uri} --out DIR")
    return 0


def _print_decision(done: Promotion, args: argparse.Namespace) -> None:
    """The side-by-side table of a gated promotion and its verdict."""
    from pipeline.promotion.gates import format_table

    decision = done.decision
    current = done.compared_with if decision.compared else "none"
    print(f"candidate:  runs:/{done.run_id}/model   current: {current} ({done.uri})   on {args.data} [{args.split}]")
    print(format_table(decision.rows, current=f"v{done.previous}" if done.previous else "current"))
    if not decision.compared:
        print(
            f"no model behind {done.uri} yet: nothing to compare with"
            + (", nothing to regress against" * bool(args.no_regress is not None))
        )
    failed = len(decision.failures)
    said = decision.reason if decision.accepted else f"{failed} check{'s' * (failed != 1)} failed, one line each below"
    print(f"decision:   {'accepted' if decision.accepted else 'refused'} ({said})")


def _check(args: argparse.Namespace) -> int:
    """``calibrate --check SCREEN``: what the screen's thresholds reach on another split."""
    from pipeline.inference.screen import read_screen
    from pipeline.screen.calibrate import CalibrateError
    from pipeline.screen.check import check_screen

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
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
        tracking_uri=args.tracking_uri,
    )
    print(f"{args.check}: {screen.describe()}; checked on {args.split} of {args.data}")
    print("\n".join(done.table()))
    for line in done.lines:
        print(line)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pipeline.screen.calibrate import MAX_FALSE_REJECT, CalibrateError, calibrate

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
        tracking_uri=args.tracking_uri,
        seed=args.seed,
        bootstrap=args.bootstrap,
        imgsz=args.imgsz,
        batch=args.batch,
        device=args.device,
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


def add_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("compare", help="training runs side by side: differing params, mAP, per-class AP, charts")
    p.add_argument("--experiment", default="", help="compare the training runs of this experiment")
    p.add_argument(
        "--filter",
        default="",
        help="MLflow search filter, e.g. \"metrics.mAP50 > 0.5 and params.`model.freeze` = '10'\"",
    )
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN_ID", help="compare these runs")
    p.add_argument("--parent", default="", help="compare the children of this sweep parent run")
    p.add_argument("--sort", default="mAP50_95.best", help="a column or metric to sort by (default: mAP50_95.best)")
    p.add_argument("--ascending", action="store_true", help="lowest first (for losses and times)")
    p.add_argument("--out", help="write runs.csv, runs.md, four charts and report.html into this folder")
    p.add_argument("--tracking-uri", default="", help=_TRACKING_HELP)
    add_wait_option(p)
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser(
        "sweep",
        help="train a grid, random or Optuna search as child runs of one parent run (in this process, or with Ray Tune)",
    )
    p.add_argument("config", nargs="?", default="", help="the experiment YAML every child starts from")
    p.add_argument("overrides", nargs="*", help="section.key=value for every child, e.g. train.epochs=3")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a key and its values, e.g. model.freeze=null,10 (repeat for more keys; a choice in random/optuna)",
    )
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=FUNC(...)",
        help="a range for random/optuna: uniform(a,b), loguniform(a,b), quniform(a,b,q), randint(a,b), choice(x,y)",
    )
    p.add_argument("--search", choices=["grid", "random", "optuna"], default="grid", help="how trials are chosen")
    p.add_argument("--samples", type=int, default=4, help="trials of a random or Optuna search (default 4)")
    p.add_argument(
        "--seed", type=int, default=0, help="the random or Optuna search's seed (the same seed, the same draws)"
    )
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local: one child after another here")
    p.add_argument("--parallel", type=int, default=1, help="ray: trials at a time (default 1)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="ray: CPUs each trial reserves (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="ray: GPUs each trial reserves, e.g. 0.25")
    p.add_argument("--early-stop", choices=["asha"], default="", help="ray: stop weak trials between epochs")
    p.add_argument(
        "--metric", default="mAP50_95", help="what ASHA and Optuna follow (default mAP50_95; losses: lowest)"
    )
    p.add_argument("--grace", type=int, default=1, help="epochs every trial trains before ASHA may stop it")
    p.add_argument("--resume", default="", metavar="PARENT_RUN", help="continue this Ray sweep after a kill")
    p.add_argument("--tracking-uri", default="", help=f"with --resume: {_TRACKING_HELP}")
    p.add_argument("--name", default="", help="the parent run's name (default: sweep-<config name>)")
    add_wait_option(p)
    p.set_defaults(func=cmd_sweep)

    p = commands.add_parser("evaluate", help="ultralytics and COCO (pycocotools) metrics of a model on a split")
    p.add_argument("--model", required=True, help="a .pt file, runs:/<id>/model or models:/<name>@<alias>")
    p.add_argument("--data", required=True, help="a data.yaml, a folder in YOLO layout, or an imported manifest")
    p.add_argument("--split", default="val", choices=SPLITS)
    p.add_argument("--imgsz", type=int, default=0, help="image size (default: the model's training size)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--conf", type=float, default=0.001, help="lowest score kept (low, as for any AP)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="write evaluation.json, predictions.json and ground_truth.json here")
    p.add_argument(
        "--review",
        metavar="DIR",
        help="also write the images with missed objects and false alarms at the screen's thresholds, worst first, "
        "as a Label Studio review queue (tasks.json, review.csv, crops/, images/)",
    )
    p.add_argument(
        "--screen", metavar="FILE", help="--review: the thresholds of this screen.json (default: stored with --model)"
    )
    p.add_argument("--json", action="store_true", help="also print the flat metrics as JSON")
    p.add_argument("--track", action="store_true", help="log the metrics to MLflow as an evaluation run")
    p.add_argument("--experiment", default="evaluations", help="MLflow experiment for --track")
    p.add_argument("--tracking-uri", default="", help=_TRACKING_HELP)
    add_trust_option(p)
    add_wait_option(p)
    p.set_defaults(func=cmd_evaluate)

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
    p.add_argument("--tracking-uri", default="", help=_TRACKING_HELP)
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap over images")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the recall interval")
    p.add_argument("--imgsz", type=int, default=0, help="image size (default: the model's training size)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="auto")
    add_trust_option(p)
    add_wait_option(p)
    p.set_defaults(func=cmd_calibrate)

    p = commands.add_parser("promote", help="register a run's model in the MLflow registry and point an alias at it")
    p.add_argument("target", help="a run id, or best: the finished run of --experiment with the best --metric")
    p.add_argument("--experiment", default="", help="the experiment whose runs `best` chooses from")
    p.add_argument("--parent", default="", help="`best` chooses among the children of this sweep parent run")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--metric", default="best.mAP50_95", help="what `best` ranks by (default: best.mAP50_95)")
    p.add_argument("--lowest", action="store_true", help="`best` is the lowest value (for losses)")
    p.add_argument("--data", help="gate the promotion: evaluate the candidate and the alias's model on this dataset")
    p.add_argument("--split", default="val", choices=SPLITS, help="the split --data is evaluated on (default: val)")
    p.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="METRIC>=VALUE",
        help="refuse unless the candidate meets it, e.g. 'recall.scratch>=0.95', 'AP50>=0.6' (>=, >, <=, <; repeat)",
    )
    p.add_argument(
        "--no-regress",
        type=float,
        metavar="MARGIN",
        help="refuse when the overall mAP50 or any class's AP50 is more than MARGIN below the alias's model",
    )
    p.add_argument(
        "--good",
        metavar="DIR",
        help="--gate false_reject: defect-free images it is measured on (with --split's background images)",
    )
    p.add_argument(
        "--screen",
        metavar="FILE",
        help="--gate false_reject: the screen.json whose thresholds it is measured at (default: stored with the run)",
    )
    p.add_argument("--dry-run", action="store_true", help="evaluate and decide, register nothing (exit 1: refused)")
    p.add_argument("--device", default="auto", help="where --data is evaluated (default: auto)")
    p.add_argument("--tracking-uri", default="", help=_TRACKING_HELP)
    p.set_defaults(func=cmd_promote)

"""The ``yolo-pipeline`` commands that work across runs: compare, sweep, evaluate, promote.

Each parses its arguments, calls the library function and prints a short summary; `pipeline.cli` adds
them to its parser.
"""

from __future__ import annotations

import argparse
import json
import math
import os

from pipeline.checkpoints import add_trust_option
from pipeline.data.dataset import SPLITS
from pipeline.selection.promotion import PromoteError

_TRACKING_HELP = "MLflow server (default: $MLFLOW_TRACKING_URI, else ./mlflow.db)"


def cmd_compare(args: argparse.Namespace) -> int:
    from pipeline.selection.comparison import compare

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
    from pipeline.selection.sweep import sweep

    def report(child: object) -> None:
        outcome = child.status if child.status != "FINISHED" else f"best.mAP50_95 {_score(child.score)}"
        print(f"[{child.index + 1}] {' '.join(child.overrides)}: {outcome}  (run {child.run_id or '-'})", flush=True)
        if child.error:
            print(f"    {child.error}", flush=True)

    result = sweep(args.config, args.grid, args.overrides, name=args.name, on_child=report)
    finished = len(result.children) - len(result.failed)
    print()
    print(f"sweep: {finished} of {len(result.children)} children finished, {len(result.failed)} failed")
    if (best := result.best) is not None:
        print(f"best:  {' '.join(best.overrides)} (run {best.run_id}, best.mAP50_95 {_score(best.score)})")
    print(f"MLflow parent run: {result.parent_run_id} (experiment {result.experiment}, {result.tracking_uri})")
    print(f"compare: yolo-pipeline compare --parent {result.parent_run_id} --out compare/")
    return 1 if result.failed else 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from pipeline.selection.evaluation import evaluate

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
    if args.json:
        print(json.dumps(result.metrics(), indent=1))
    if result.run_id:
        print(f"MLflow run: {result.run_id} (experiment {args.experiment})")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from pipeline.selection.promotion import promote

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
    )
    value = "no value" if done.value is None else f"{done.value:.4f}"
    chosen = f"best of {len(done.compared)} runs" if args.target == "best" else "as named"
    print(f"registered {done.name} version {done.version} from run {done.run_id} ({done.metric} {value}, {chosen})")
    print(f"alias:      {done.uri} -> version {done.version}")
    print(f"predict:    yolo-pipeline predict FOLDER --model {done.uri} --out DIR")
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
    p.set_defaults(func=cmd_compare)

    p = commands.add_parser("sweep", help="train every combination of --grid values as child runs of one parent run")
    p.add_argument("config", help="the experiment YAML every child starts from")
    p.add_argument("overrides", nargs="*", help="section.key=value for every child, e.g. train.epochs=3")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        required=True,
        metavar="KEY=V1,V2",
        help="a key and its values, e.g. model.freeze=null,10 (repeat for more keys)",
    )
    p.add_argument("--name", default="", help="the parent run's name (default: sweep-<config name>)")
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
    p.add_argument("--json", action="store_true", help="also print the flat metrics as JSON")
    p.add_argument("--track", action="store_true", help="log the metrics to MLflow as an evaluation run")
    p.add_argument("--experiment", default="evaluations", help="MLflow experiment for --track")
    p.add_argument("--tracking-uri", default="", help=_TRACKING_HELP)
    add_trust_option(p)
    p.set_defaults(func=cmd_evaluate)

    p = commands.add_parser("promote", help="register a run's model in the MLflow registry and point an alias at it")
    p.add_argument("target", help="a run id, or best: the finished run of --experiment with the best --metric")
    p.add_argument("--experiment", default="", help="the experiment whose runs `best` chooses from")
    p.add_argument("--parent", default="", help="`best` chooses among the children of this sweep parent run")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--metric", default="best.mAP50_95", help="what `best` ranks by (default: best.mAP50_95)")
    p.add_argument("--lowest", action="store_true", help="`best` is the lowest value (for losses)")
    p.add_argument("--tracking-uri", default="", help=_TRACKING_HELP)
    p.set_defaults(func=cmd_promote)

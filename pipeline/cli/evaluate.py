"""``evaluate``: ultralytics' and COCO's metrics of a model on a split, its run options generated from `RunOptions`."""

from __future__ import annotations

import argparse
import json

from pipeline.checkpoints import add_trust_option
from pipeline.cli.common import add_options, options_from, score
from pipeline.data.dataset import SPLITS
from pipeline.destinations import add_wait_option
from pipeline.evaluation.evaluation import evaluate
from pipeline.inference.options import RunOptions


def cmd_evaluate(args: argparse.Namespace) -> int:
    result = evaluate(
        args.model,
        args.data,
        split=args.split,
        out=args.out,
        track=args.track,
        experiment=args.experiment,
        review=args.review,
        screen=args.screen,
        options=options_from(args, RunOptions),
    )
    u, c = result.ultralytics, result.coco
    print(f"{result.model} on {result.data} [{result.split}]: {result.images} images, {result.instances} objects")
    print(
        f"ultralytics: mAP50 {u['mAP50']:.4f}  mAP50-95 {u['mAP50_95']:.4f}  P {u['precision']:.4f}  R {u['recall']:.4f}"
    )
    print("COCO:        " + "  ".join(f"{k} {score(v)}" for k, v in c.items()))
    print(f"mAP50 side by side: ultralytics {u['mAP50']:.4f}, COCO {score(c['AP50'])}")
    print(f"{'class':<20} {'objects':>7} {'AP50':>7} {'AP50-95':>7} {'COCO AP50':>9} {'COCO AP':>7}")
    for name, v in result.per_class.items():
        cells = [score(v["AP50"]), score(v["AP50_95"]), score(v["coco.AP50"]), score(v["coco.AP"])]
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


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("evaluate", help="ultralytics and COCO (pycocotools) metrics of a model on a split")
    p.add_argument("--model", required=True, help="a .pt file, runs:/<id>/model or models:/<name>@<alias>")
    p.add_argument("--data", required=True, help="a data.yaml, a folder in YOLO layout, or an imported manifest")
    p.add_argument("--split", default="val", choices=SPLITS)
    add_options(p, RunOptions, ("imgsz", "batch", "conf", "iou", "device"))
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
    add_options(p, RunOptions, ("tracking_uri",))
    add_trust_option(p)
    add_wait_option(p)
    p.set_defaults(func=cmd_evaluate)

"""``export``: a model and its screen as a bundle a line PC runs (`pipeline.export.bundles`)."""

from __future__ import annotations

import argparse
import sys

from pipeline.checkpoints import add_trust_option
from pipeline.cli.common import add_options, options_from
from pipeline.data.dataset import SPLITS
from pipeline.destinations import add_wait_option
from pipeline.inference.bundle import FORMATS
from pipeline.inference.options import RunOptions


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline.export.bundles import GateRefused, export_bundle

    try:
        result = export_bundle(
            args.model,
            args.out,
            args.format,
            screen=args.screen,
            data=args.data,
            split=args.split,
            max_recall_drop=args.max_recall_drop,
            max_map50_drop=args.max_map50_drop,
            calibration_images=args.calibration_images,
            track=args.track,
            experiment=args.experiment,
            options=options_from(args, RunOptions, _RUN_OPTIONS),
        )
    except GateRefused as refused:
        for line in refused.result.failures:
            print(f"error: {line}", file=sys.stderr)
        print(f"error: INT8 refused by the accuracy gate; nothing written to {args.out}", file=sys.stderr)
        return 1
    info = result.info
    print(f"exported {args.model} as {result.format} ({info.describe()}) to {result.out} in {result.seconds:.1f} s")
    print(f"thresholds: {result.screen_source}")
    print(f"drift:      baseline {result.baseline}")
    if (found := result.gate) is not None:
        print(f"gate:       passed on {found.split} of {found.data} ({found.fp32.images} images)")
        for row in found.table():
            print(f"            {row}")
    print(f"run it:     yolo-pipeline predict FOLDER --model {result.out} --out RESULTS")
    if result.note:
        print(f"note: {result.note}")
    if result.tracking_run_id:
        print(f"MLflow run: {result.tracking_run_id} (experiment {args.experiment})")
    return 0


_RUN_OPTIONS = ("batch", "tracking_uri")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export", help="a model and its screen as a bundle a line PC runs (ONNX or OpenVINO, FP32 or INT8)"
    )
    p.add_argument("--model", required=True, help="a .pt file, runs:/<id>/model or models:/<name>@<alias>")
    p.add_argument("--out", required=True, help="the bundle's folder (replaced whole only if export made it)")
    p.add_argument("--format", default="onnx", choices=tuple(FORMATS), help="the network's format and precision")
    p.add_argument(
        "--screen",
        metavar="FILE",
        help="its thresholds (default: those stored with --model, else 0.25 for every class, uncalibrated)",
    )
    p.add_argument(
        "--data", help="INT8: images to quantize on (its train split) and to gate on (default: the training's data)"
    )
    p.add_argument("--split", default="val", choices=SPLITS, help="INT8: the split the accuracy gate screens")
    p.add_argument(
        "--max-recall-drop", type=float, default=0.02, help="INT8: the most a class's recall may fall against FP32"
    )
    p.add_argument("--max-map50-drop", type=float, default=0.01, help="INT8: the most mAP50 may fall against FP32")
    p.add_argument("--calibration-images", type=int, default=100, help="INT8: training images the quantizer sees")
    p.add_argument("--track", action="store_true", help="record the export in MLflow, tagged on the model version")
    p.add_argument("--experiment", default="exports", help="MLflow experiment for --track")
    add_options(p, RunOptions, _RUN_OPTIONS)
    add_trust_option(p)
    add_wait_option(p)
    p.set_defaults(func=cmd_export)

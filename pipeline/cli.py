"""The ``yolo-pipeline`` command: parse, load the config, dispatch, print a short summary."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import ConfigError, load_config
from pipeline.data.dataset import DatasetError
from pipeline.train.errors import NonFiniteGradients
from pipeline.train.run import ResumeError
from pipeline.train.weights import WeightsError

# Errors whose message is already the one line a user needs.
_USER_ERRORS = (ConfigError, DatasetError, ResumeError, WeightsError, FileNotFoundError)


def _ui_hint(uri: str | None) -> str:
    if not uri:
        return ""
    if uri.startswith(("http://", "https://")):
        return f"Open the MLflow UI at {uri}"
    return f"Open the MLflow UI: mlflow ui --backend-store-uri {uri}  (then http://127.0.0.1:5000)"


def _metrics_table(epochs: list[dict[str, float]]) -> str:
    columns = [
        ("epoch", "epoch"),
        ("train/box_loss", "box_loss"),
        ("train/cls_loss", "cls_loss"),
        ("metrics/precision(B)", "P"),
        ("metrics/recall(B)", "R"),
        ("metrics/mAP50(B)", "mAP50"),
        ("metrics/mAP50-95(B)", "mAP50-95"),
    ]
    lines = ["  ".join(f"{title:>9}" for _, title in columns)]
    for row in epochs:
        cells = [f"{int(row.get('epoch', 0)):>9d}"] + [f"{row.get(key, float('nan')):>9.4f}" for key, _ in columns[1:]]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _print_training(result: object) -> None:
    print()
    print(_metrics_table(result.epochs))
    print()
    for note in result.notes:
        print(f"note: {note}")
    print(f"training folder: {result.save_dir}")
    if result.best_weights:
        print(f"best weights:    {result.best_weights}")
    if result.gradient_health:
        print(f"gradients:       {result.gradient_health}  ({result.save_dir / 'gradients' / 'heatmaps.png'})")
    if result.run_id:
        print(f"MLflow run:      {result.run_id}  ({result.tracking_uri})")
        print(f"model URI:       runs:/{result.run_id}/model")
    if result.pending_records:
        print(
            f"{result.pending_records} tracking records are still spooled in {result.spool_dir}; "
            f"send them with: yolo-pipeline sync {result.spool_dir}"
        )
    if hint := _ui_hint(result.tracking_uri):
        print(hint)


def cmd_train(args: argparse.Namespace) -> int:
    from pipeline.train import train

    config = load_config(args.config, args.overrides)
    _print_training(train(config))
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from pipeline.train import resume

    _print_training(resume(args.target, project=args.project, tracking_uri=args.tracking_uri))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from pipeline.spool import Spool
    from pipeline.tracking import sync

    folders = [Path(p) for p in args.spools] or sorted(
        p.parent for p in Path(args.project).glob("*/tracking/state.json")
    )
    left_total = 0
    for folder in folders:
        folder = folder / "tracking" if (folder / "tracking" / "state.json").exists() else folder
        if not Spool.exists(folder):
            raise FileNotFoundError(f"{folder}: not a tracking spool (no state.json)")
        run_id, sent, left = sync(folder, timeout_s=args.timeout)
        left_total += left
        print(f"{folder}: run {run_id or '(not created yet)'}: sent {sent} records, {left} left")
    if not folders:
        print(f"no tracking spools under {args.project}")
    return 1 if left_total else 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from pipeline.data.synth import synthesize

    try:
        summary = synthesize(args.out, images=args.images, seed=args.seed, size=args.size)
    except ValueError as exc:  # bad counts or sizes: the message names the option
        print(f"error: {exc}", file=sys.stderr)
        return 2
    boxes = ", ".join(f"{name} {n}" for name, n in summary.boxes.items())
    print(
        f"wrote {sum(summary.images.values())} images ({summary.images['train']} train, {summary.images['val']} val) to {summary.out}"
    )
    print(f"boxes: {boxes}")
    print(f"data.path for a config: {summary.data_yaml}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-pipeline", description="Fine-tune YOLO detectors, tracked in MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("train", help="train a detector from an experiment config")
    p.add_argument("config", help="experiment YAML, e.g. configs/demo.yaml")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=5")
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("resume", help="continue an interrupted training into the same MLflow run")
    p.add_argument("target", help="MLflow run id, training folder, or its weights/last.pt")
    p.add_argument("--project", default="runs/train", help="where to look for training folders (default: runs/train)")
    p.add_argument("--tracking-uri", default="", help="MLflow server to ask when the run id is not found locally")
    p.set_defaults(func=cmd_resume)

    p = commands.add_parser("sync", help="send tracking records spooled while the MLflow server was away")
    p.add_argument(
        "spools", nargs="*", help="training folders or their tracking/ spools (default: all under --project)"
    )
    p.add_argument("--project", default="runs/train")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to keep trying per spool")
    p.set_defaults(func=cmd_sync)

    data = commands.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="draw a synthetic surface-defect dataset in YOLO layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image size in pixels")
    p.set_defaults(func=cmd_data_synth)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("pipeline")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logger.propagate = False
    try:
        return args.func(args)
    except _USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteGradients as exc:  # the training stopped itself; its checkpoint is kept
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""``init``, ``train``, ``resume``, ``sync``: a training, from its starter config to its last tracking record."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline import training
from pipeline.config import Config, ConfigError, load_config
from pipeline.credentials import strip_credentials
from pipeline.destinations import FolderBusy, add_wait_option
from pipeline.redact import redact_uri
from pipeline.starter_config import write_starter_config


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
    """A training's summary: its epochs, notes, folders, gradient health, MLflow run and what is still spooled."""
    uri = redact_uri(result.tracking_uri) if result.tracking_uri else result.tracking_uri
    print()
    print(_metrics_table(result.epochs))
    print()
    for note in result.notes:
        print(f"note: {note}")
    print(f"training folder: {result.save_dir}")
    if result.best_weights:
        print(f"best weights:    {result.best_weights}")
        from pipeline.drift.baseline import FILENAME as BASELINE

        baseline = Path(result.best_weights).with_name(BASELINE)
        if baseline.is_file():  # what predict checks drift against until a calibration records its own
            print(f"drift baseline:  {baseline}")
    if result.gradient_health:
        print(f"gradients:       {result.gradient_health}  ({result.save_dir / 'gradients' / 'diagnosis.json'})")
        for finding in getattr(result, "gradient_findings", []):  # worst first: severity: cause (evidence; remedy)
            what = f"{finding['cause']} ({finding['message']}; {finding['remedy']})"
            print(f"gradients:       {finding['severity']}: {what}")
    if result.run_id:
        print(f"MLflow run:      {result.run_id}  ({uri})")
        print(f"model URI:       runs:/{result.run_id}/model")
    if result.pending_records:
        print(
            f"{result.pending_records} tracking records are still spooled in {result.spool_dir}; "
            f"send them with: yolo-pipeline sync {result.spool_dir}"
        )
    if hint := _ui_hint(uri):
        print(hint)


def _train_config(args: argparse.Namespace) -> Config:
    """The config file (or, with ``--data``, none: the defaults) with ``--data`` and the overrides applied."""
    config_file, overrides = args.config, list(args.overrides)
    if config_file is not None and "=" in config_file and not Path(config_file).exists():
        config_file, overrides = None, [config_file, *overrides]  # `train --data PATH train.epochs=5`: no file
    if config_file is None and args.data is None:
        raise ConfigError("train: give an experiment config (yolo-pipeline init writes one) or --data PATH")
    if args.data is not None:  # JSON is quoted YAML: the path is read as text, whatever it looks like
        overrides.insert(0, f"data.path={json.dumps(args.data)}")
    return load_config(config_file, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    _print_training(training.train(_train_config(args)))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    path = write_starter_config(args.file)
    print(f"wrote {path}: every key at its default; set data.path, then: yolo-pipeline train {path}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    # Credentials are never stored with a training: ones given here serve this process's requests only.
    tracking_uri = strip_credentials(args.tracking_uri)
    _print_training(training.resume(args.target, project=args.project, tracking_uri=tracking_uri))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from pipeline.tracking import is_spool, sync  # here, not at the top: the tracking package imports mlflow

    folders = [Path(p) for p in args.spools] or sorted(p for p in Path(args.project).glob("*/tracking") if is_spool(p))
    left_total = 0
    for folder in folders:
        folder = folder / "tracking" if is_spool(folder / "tracking") else folder
        if not is_spool(folder):
            raise FileNotFoundError(f"{folder}: not a tracking spool (no state.json)")
        try:
            run_id, sent, left = sync(folder, timeout_s=args.timeout)
        except FolderBusy as exc:
            if args.spools:  # named: stop, as every command does on a folder another process writes
                raise
            print(f"skipped {exc}")  # all under --project: a training sending its own records is no error
            left_total += 1
            continue
        left_total += left
        print(f"{folder}: run {run_id or '(not created yet)'}: sent {sent} records, {left} left")
    if not folders:
        print(f"no tracking spools under {args.project}")
    return 1 if left_total else 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("train", help="train a detector from an experiment config (or the defaults and --data)")
    p.add_argument("config", nargs="?", help="experiment YAML, e.g. configs/demo.yaml (optional with --data)")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.epochs=5")
    p.add_argument("--data", help="the dataset (sets data.path); without a config, every other key is its default")
    add_wait_option(p)
    p.set_defaults(func=cmd_train)

    p = commands.add_parser("init", help="write a commented starter config with every key at its default")
    p.add_argument("file", nargs="?", default="experiment.yaml", help="the new file (default: experiment.yaml)")
    p.set_defaults(func=cmd_init)

    p = commands.add_parser("resume", help="continue an interrupted training into the same MLflow run")
    p.add_argument("target", help="MLflow run id, training folder, or its weights/last.pt")
    p.add_argument("--project", default="runs/train", help="where to look for training folders (default: runs/train)")
    p.add_argument("--tracking-uri", default="", help="MLflow server to ask when the run id is not found locally")
    add_wait_option(p)
    p.set_defaults(func=cmd_resume)

    p = commands.add_parser("sync", help="send tracking records spooled while the MLflow server was away")
    p.add_argument(
        "spools", nargs="*", help="training folders or their tracking/ spools (default: all under --project)"
    )
    p.add_argument("--project", default="runs/train")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to keep trying per spool")
    add_wait_option(p)
    p.set_defaults(func=cmd_sync)

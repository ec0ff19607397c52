"""The ``yolo-pipeline`` command: parse, load the config, dispatch, print a short summary."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from pipeline.checkpoints import add_trust_option
from pipeline.config import Config, ConfigError, class_values, load_config
from pipeline.data.dataset import DatasetError
from pipeline.data.formats import CHOICES as FORMAT_CHOICES
from pipeline.destinations import FolderBusy, add_wait_option, command_context
from pipeline.inference.options import PredictOptions
from pipeline.messages import UserError, first_line
from pipeline.quiet import set_verbose
from pipeline.redact import redact_text
from pipeline.selection_commands import add_commands
from pipeline.training.errors import NonFiniteGradients


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
    from pipeline.redact import redact_uri

    uri = redact_uri(result.tracking_uri) if result.tracking_uri else result.tracking_uri
    print()
    print(_metrics_table(result.epochs))
    print()
    for note in result.notes:
        print(f"note: {note}")
    print(f"training folder: {result.save_dir}")
    if result.best_weights:
        print(f"best weights:    {result.best_weights}")
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
    from pipeline.training import train

    _print_training(train(_train_config(args)))
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from pipeline.starter_config import write_starter_config

    path = write_starter_config(args.file)
    print(f"wrote {path}: every key at its default; set data.path, then: yolo-pipeline train {path}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from pipeline.credentials import strip_credentials
    from pipeline.training import resume

    # Credentials are never stored with a training: ones given here serve this process's requests only.
    tracking_uri = strip_credentials(args.tracking_uri)
    _print_training(resume(args.target, project=args.project, tracking_uri=tracking_uri))
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from pipeline.tracking import is_spool, sync

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


def _defect_size(text: str) -> tuple[int, int]:
    """``--defect-size 8-40`` (or ``16``: one size) as (min, max) pixels."""
    parts = text.strip().split("-")
    try:
        lo, hi = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (0, -1)
    except ValueError:
        lo, hi = 0, -1
    if not 2 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX pixels with 2 <= MIN <= MAX, such as 8-40, got {text!r}")
    return lo, hi


def cmd_data_synth(args: argparse.Namespace) -> int:
    from pipeline.data.synth import synthesize

    try:
        summary = synthesize(
            args.out,
            images=args.images,
            seed=args.seed,
            size=args.size,
            backgrounds=args.backgrounds,
            defect_px=args.defect_size,
        )
    except ValueError as exc:  # bad counts or sizes: the message names the option
        print(f"error: {str(exc).replace('defect_px:', '--defect-size:', 1)}", file=sys.stderr)
        return 2
    boxes = ", ".join(f"{name} {n}" for name, n in summary.boxes.items())
    print(
        f"wrote {sum(summary.images.values())} images ({summary.images['train']} train, {summary.images['val']} val) to {summary.out}"
    )
    print(f"boxes: {boxes}")
    empty = summary.backgrounds
    drawn = f", {summary.surface_only} of them by --backgrounds {args.backgrounds:g}" if summary.surface_only else ""
    print(
        f"defect-free images (empty label files): {sum(empty.values())} ({empty['train']} train, {empty['val']} val{drawn})"
    )
    print(f"data.path for a config: {summary.data_yaml}")
    return 0


def cmd_data_tile(args: argparse.Namespace) -> int:
    from pipeline.data.tiles import tile_dataset, tile_settings

    tile = tile_settings(args.size, args.overlap, args.min_visible, args.backgrounds)
    result = tile_dataset(args.src, args.out, tile, seed=args.seed)
    tiles = result.card["tiles"]["splits"]
    print(f"wrote {sum(c['tiles'] for c in tiles.values()):,} tiles to {result.folder}")
    for split in tiles:
        print(f"{split}: {result.line(split)}")
    print(f"card: {result.folder / 'card.md'}")
    print(f"data.path for a config: {result.folder / 'data.yaml'}")
    return 0


def _print_problems(report: object, limit: int) -> None:
    for note in report.notes[:limit]:  # nothing lost, but the user must know (val is the train folder, a rename)
        print(f"  {note}")
    errors = report.errors
    for problem in errors[:limit]:
        print(f"  {problem}")
    if len(errors) > limit:
        print(f"  ... and {len(errors) - limit} more")


def _print_import(result: object, show: int) -> None:
    card = result.card
    splits = ", ".join(f"{split} {v['images']}" for split, v in card["splits"].items())
    print(f"imported {card['images']} images, {card['boxes']} boxes into {result.out} ({splits})")
    print("boxes: " + ", ".join(f"{name} {n}" for name, n in card["boxes_per_class"].items()))
    for note in result.notes:
        print(f"note: {note}")
    print(f"validation: {result.report.summary()}  ({result.report_file})")
    _print_problems(result.report, show)
    print(f"card: {result.card_files[1]}")
    print(f"data.path for a config: {result.data_yaml}")


def cmd_data_import(args: argparse.Namespace) -> int:
    from pipeline.data.importer import import_dataset, import_manifest, parse_classes
    from pipeline.data.manifest import load_manifest
    from pipeline.data.split import parse_ratios
    from pipeline.destinations import check_name

    if args.manifest:
        if args.classes:
            raise DatasetError("data import: --classes goes with SRC and --name; a manifest lists its `classes:`")
        if isinstance(args.images, str):
            raise DatasetError(f"data import: --images {args.images}: a folder goes with SRC --format labelstudio")
        manifest = load_manifest(args.manifest)
        result = import_manifest(manifest, args.src, policy=args.policy, images=args.images)
    else:
        if not (args.src and args.name is not None):
            raise DatasetError("data import: give SRC and --name, or --manifest datasets/<name>.yaml")
        result = import_dataset(
            args.src,
            args.name,
            Path(args.out) / check_name(args.name, "--name"),
            option="--name",
            fmt=args.format,
            classes=parse_classes(args.classes) if args.classes else None,
            splits=parse_ratios(args.split) if args.split else "source",
            seed=args.seed,
            policy=args.policy,
            images=args.images if isinstance(args.images, int) else 0,
            image_folder=args.images if isinstance(args.images, str) else None,
        )
    _print_import(result, args.show)
    return 0


def _images_option(text: str) -> int | str:
    """``--images``: digits are a number of images (a subset size), anything else a folder of images."""
    return int(text) if text.isdigit() else text


def _read_any(path: str, fmt: str, image_folder: str | None = None) -> object:
    from pipeline.data.importer import read_source
    from pipeline.data.manifest import is_manifest, load_manifest

    if is_manifest(path):
        manifest = load_manifest(path)
        imported = manifest.out_dir / "data.yaml"
        if not imported.is_file():
            raise DatasetError(f"{path}: not imported yet; run: yolo-pipeline data import --manifest {path}")
        return read_source(imported, "yolo")
    return read_source(Path(path).expanduser().resolve(), fmt, image_folder=image_folder)


def cmd_data_validate(args: argparse.Namespace) -> int:
    from pipeline.data.dataset import printable
    from pipeline.data.validate import validate

    report = validate(_read_any(args.path, args.format, args.images), "skip")
    print(printable(f"{args.path}: {report.summary()}"))
    _print_problems(report, args.show)
    if args.report:
        print(f"report: {report.write(args.report)}")
    return 1 if report.errors and args.policy == "fail" else 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from pipeline.data.card import build_card, card_markdown, write_card
    from pipeline.data.dataset import content_hash, read_data_yaml
    from pipeline.data.importer import KIND as IMPORTED
    from pipeline.data.synth import KIND as SYNTHETIC
    from pipeline.data.validate import validate
    from pipeline.destinations import claim, reserve

    datasets = (IMPORTED, SYNTHETIC)  # card.json and card.md go into a new folder or one of this tool's datasets
    with reserve(args.out, "data stats", "--out", also=datasets):  # held from the first read to the card
        report = validate(_read_any(args.path, args.format, args.images), "skip")
        path = Path(args.path).resolve()
        name = path.parent.name if path.suffix in {".yaml", ".yml", ".json"} else path.name
        try:  # the content hash is defined on the YOLO layout a training uses
            digest = content_hash(read_data_yaml(args.path, require=()).splits)
        except DatasetError:
            digest = ""
        card = build_card(report.collection, name, digest, source=str(args.path), validation=report.counts())
        if args.out:
            json_path, md_path = write_card(card, claim(args.out, "data stats", "--out", also=datasets))
            print(f"wrote {json_path} and {md_path}")
        else:
            print(card_markdown(card))
    return 0


def cmd_data_split(args: argparse.Namespace) -> int:
    from pipeline.data.importer import import_dataset
    from pipeline.data.split import parse_ratios

    out = Path(args.out).expanduser().resolve()
    result = import_dataset(
        args.src,
        out.name,
        args.out,
        fmt=args.format,
        splits=parse_ratios(args.split),
        seed=args.seed,
        policy=args.policy,
        command="data split",
    )
    _print_import(result, args.show)
    return 0


def cmd_augment_preview(args: argparse.Namespace) -> int:
    from pipeline.training.augment_preview import preview

    config = load_config(args.config, args.overrides)
    result = preview(config, args.out, samples=args.samples, seed=args.seed)
    print(
        f"wrote {result.out}: {result.samples} augmented training samples, {result.boxes} boxes, "
        f"{result.transforms} albumentations transforms, symmetry p={config.augment.symmetry:g} "
        f"(preset {config.augment.preset})"
    )
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pipeline.inference import predict

    values = {name: getattr(args, name) for name in PredictOptions.model_fields if name != "thresholds"}
    options = PredictOptions.checked(
        **values,
        thresholds=class_values(args.threshold, "--threshold", "CLASS=SCORE (or default=SCORE), e.g. scratch=0.4"),
    )
    result = predict(args.source, args.model, args.out, options)
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
    if result.total_errors:
        print(f"failed:     {result.total_errors} images, each with its reason in {Path(args.out) / 'errors.jsonl'}")
    if result.screen_warning:  # last, where it is seen
        print(f"warning:    {result.screen_warning}")
    return 1 if result.total_errors else 0


def _add_predict_options(parser: argparse.ArgumentParser) -> None:
    """One option per field of `PredictOptions`, with its type, default and description (a switch that is on
    by default is turned off by ``--no-NAME``); its thresholds are ``--threshold CLASS=SCORE``, repeated."""
    for name, field in PredictOptions.model_fields.items():
        flag, kind = f"--{name.replace('_', '-')}", field.annotation
        default = field.get_default(call_default_factory=True)
        if name == "thresholds":
            parser.add_argument(
                "--threshold",
                action="append",
                default=[],
                metavar="CLASS=SCORE",
                help="an image fails when a detection of CLASS reaches SCORE; default=SCORE for the other classes "
                "(default: --screen's, else those stored with a runs:/ or models:/ model, else --conf); a --conf above "
                "the lowest threshold is lowered to it",
            )
        elif kind == bool | None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=field.description)
        elif kind is bool:
            off = default is True
            flag, help_text = (f"--no-{flag[2:]}", f"no {field.description}") if off else (flag, field.description)
            parser.add_argument(flag, dest=name, action="store_false" if off else "store_true", help=help_text)
        elif choices := PredictOptions.choices(name):  # a Literal's values; the runtime's, from the backends' registry
            parser.add_argument(flag, choices=choices, default=default, help=field.description)
        else:
            metavar = _METAVARS.get(name)
            parser.add_argument(flag, type=_given(kind), default=default, metavar=metavar, help=field.description)


_METAVARS = {"screen": "FILE", "review": "DIR"}  # predict's options that name a file or a folder


def _given(kind: object) -> object:
    """What a value on the command line is read as: ``int`` for ``int | None`` (None: the option not given)."""
    members = [k for k in typing.get_args(kind) if k is not type(None)]
    return members[0] if type(None) in typing.get_args(kind) and len(members) == 1 else kind


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-pipeline", description="Fine-tune YOLO detectors, tracked in MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    commands = parser.add_subparsers(dest="command", required=True)

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

    data = commands.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("synth", help="draw a synthetic surface-defect dataset in YOLO layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=128, help="image size in pixels")
    p.add_argument(
        "--backgrounds",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="this share of the images (0 <= F < 1, seeded, train and val alike) has no defect: surface only, "
        "an empty label file (default 0)",
    )
    p.add_argument(
        "--defect-size",
        type=_defect_size,
        default=None,
        metavar="MIN-MAX",
        help="large boards: each defect drawn at an absolute size, its long side log-uniform in MIN-MAX px "
        "(e.g. --size 1536 --defect-size 8-40), on average one defect per 256 x 256 px; MAX <= --size / 4 "
        "(default: defects scaled to the image, as before)",
    )
    add_wait_option(p)
    p.set_defaults(func=cmd_data_synth)

    p = data.add_parser(
        "tile", help="cut a YOLO dataset's images into overlapping tiles at their native resolution (as data.tile)"
    )
    p.add_argument("src", help="the dataset: a data.yaml or a folder in YOLO layout")
    p.add_argument("--size", type=int, required=True, help="tile side in pixels; images not larger are used whole")
    p.add_argument("--overlap", type=float, default=0.2, help="overlap of neighbouring tiles, a fraction (default 0.2)")
    p.add_argument(
        "--min-visible",
        type=float,
        default=0.5,
        help="keep a box in a tile when this share of it is inside, else mask its part (default 0.5)",
    )
    p.add_argument(
        "--backgrounds",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="keep defect-free tiles up to this share of a split's cut tiles, drawn from --seed (default 0.1)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the background tiles' draw")
    p.add_argument("--out", required=True, help="the tiled dataset's folder (data.yaml, images, labels, card)")
    add_wait_option(p)
    p.set_defaults(func=cmd_data_tile)

    images_help = "where a Label Studio export's images are (--format labelstudio; uploads and URLs match by file name)"
    p = data.add_parser(
        "import", help="convert YOLO, COCO, VOC or Label Studio data into datasets/<name>/ with a dataset card"
    )
    p.add_argument(
        "src",
        nargs="?",
        help="the source: a data.yaml or YOLO folder, a COCO JSON (or folder), a VOC folder, a Label Studio JSON export",
    )
    p.add_argument("--name", help="dataset name (the folder under --out)")
    p.add_argument("--manifest", help="import what datasets/<name>.yaml describes (SRC, if given, replaces its path)")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto")
    p.add_argument(
        "--classes",
        default="",
        help="class names in training order, e.g. scratch,pit,patch (default: the source's; VOC and Label Studio "
        "have none, so sorted names); VOC and Label Studio boxes of other classes are dropped and reported, YOLO "
        "and COCO ids renumbered",
    )
    p.add_argument("--out", default="datasets", help="where imported datasets go (default: datasets)")
    p.add_argument("--split", default="", help="re-split, e.g. train=0.8,val=0.2 (default: keep the source's splits)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of an --images N subset")
    p.add_argument("--policy", choices=["skip", "fail"], default="skip", help="bad input: skip and report, or stop")
    p.add_argument(
        "--images",
        type=_images_option,
        default=0,
        metavar="N|DIR",
        help="a number N: import a class-stratified subset of N images; a folder DIR: " + images_help,
    )
    p.add_argument("--show", type=int, default=10, help="how many problems to list (all are in the report)")
    add_wait_option(p)
    p.set_defaults(func=cmd_data_import)

    p = data.add_parser("validate", help="check a dataset: every problem with its file, line and reason")
    p.add_argument(
        "path", help="a data.yaml or YOLO folder, COCO JSON, VOC folder, Label Studio export, or an imported manifest"
    )
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto")
    p.add_argument("--images", metavar="DIR", help=images_help)
    p.add_argument(
        "--policy", choices=["skip", "fail"], default="skip", help="fail: exit 1 when anything would be lost"
    )
    p.add_argument("--report", help="also write every problem to this JSON file")
    p.add_argument("--show", type=int, default=50, help="how many problems to list")
    p.set_defaults(func=cmd_data_validate)

    p = data.add_parser("stats", help="the dataset card: images and boxes per class and split, sizes")
    p.add_argument(
        "path", help="a data.yaml or YOLO folder, COCO JSON, VOC folder, Label Studio export, or an imported manifest"
    )
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto")
    p.add_argument("--images", metavar="DIR", help=images_help)
    p.add_argument("--out", help="write card.json and card.md into this folder instead of printing")
    add_wait_option(p)
    p.set_defaults(func=cmd_data_stats)

    p = data.add_parser("split", help="write a copy with seeded, class-stratified splits")
    p.add_argument("src", help="the dataset to split (any format)")
    p.add_argument("--split", required=True, help="fractions, e.g. train=0.7,val=0.2,test=0.1")
    p.add_argument("--out", required=True, help="the new dataset folder")
    p.add_argument("--format", choices=FORMAT_CHOICES, default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--policy", choices=["skip", "fail"], default="skip")
    p.add_argument("--show", type=int, default=10)
    add_wait_option(p)
    p.set_defaults(func=cmd_data_split)

    augment = commands.add_parser("augment", help="augmentation tools").add_subparsers(
        dest="augment_command", required=True
    )
    p = augment.add_parser("preview", help="draw augmented training samples with their boxes")
    p.add_argument("config", help="experiment YAML")
    p.add_argument("overrides", nargs="*", help="section.key=value, e.g. augment.preset=surface")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_augment_preview)

    p = commands.add_parser(
        "predict", help="run a detector over image folders; results to files; a rerun resumes where it stopped"
    )
    p.add_argument("source", help="a folder (recursive), a glob ('parts/**/*.png'), an image, or a text file of paths")
    p.add_argument(
        "--model", required=True, help="a .pt file, runs:/<id>/model, models:/<name>@<alias> or models:/<name>/<n>"
    )
    p.add_argument("--out", required=True, help="results folder; the same command again skips the images done")
    _add_predict_options(p)
    add_trust_option(p)
    add_wait_option(p)
    p.set_defaults(func=cmd_predict)

    add_commands(commands)
    return parser


def _command_name(args: argparse.Namespace) -> str:
    """The command as a user typed it (``predict``, ``data synth``): what another process refused is told."""
    sub = getattr(args, "data_command", None) or getattr(args, "augment_command", None)
    return f"{args.command} {sub}" if sub else args.command


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("pipeline")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if args.verbose else logging.INFO)
    logger.propagate = False
    set_verbose(args.verbose)
    try:
        with command_context(_command_name(args), getattr(args, "wait", False)):
            return args.func(args)
    except (UserError, FileNotFoundError) as exc:  # the message is already the one line a user needs
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except NonFiniteGradients as exc:  # the training stopped itself; its checkpoint is kept
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - nothing foreseen: still one line for the user, the traceback behind -v
        if args.verbose:
            raise
        reason = redact_text(first_line(exc, 300)) if str(exc).strip() else ""
        print(f"error: {type(exc).__name__}: {reason} (run with -v for the traceback)", file=sys.stderr)
        return 1
    finally:  # main() called again in one process (a script, the tests) writes each line once, to its own stderr
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())

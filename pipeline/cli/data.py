"""``data synth``, ``data tile``, ``data import``, ``data validate``, ``data stats``, ``data split``: dataset tools."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.data.card import build_card, card_markdown, write_card
from pipeline.data.dataset import DatasetError, content_hash, printable, read_data_yaml
from pipeline.data.formats import CHOICES as FORMAT_CHOICES
from pipeline.data.importer import KIND as IMPORTED
from pipeline.data.importer import import_dataset, import_manifest, parse_classes, read_source
from pipeline.data.manifest import is_manifest, load_manifest
from pipeline.data.split import parse_ratios
from pipeline.data.synth import KIND as SYNTHETIC
from pipeline.data.synth import synthesize
from pipeline.data.tiles import tile_dataset, tile_settings
from pipeline.data.validate import validate
from pipeline.destinations import add_wait_option, check_name, claim, reserve


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
    tile = tile_settings(args.size, args.overlap, args.min_visible, args.backgrounds, args.cut_boxes)
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
    if is_manifest(path):
        manifest = load_manifest(path)
        imported = manifest.out_dir / "data.yaml"
        if not imported.is_file():
            raise DatasetError(f"{path}: not imported yet; run: yolo-pipeline data import --manifest {path}")
        return read_source(imported, "yolo")
    return read_source(Path(path).expanduser().resolve(), fmt, image_folder=image_folder)


def cmd_data_validate(args: argparse.Namespace) -> int:
    report = validate(_read_any(args.path, args.format, args.images), "skip")
    print(printable(f"{args.path}: {report.summary()}"))
    _print_problems(report, args.show)
    if args.report:
        print(f"report: {report.write(args.report)}")
    return 1 if report.errors and args.policy == "fail" else 0


def cmd_data_stats(args: argparse.Namespace) -> int:
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


def register(commands: argparse._SubParsersAction) -> None:
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
        help="keep a box in a tile when this share of it is inside, else handle its part as --cut-boxes (default 0.5)",
    )
    p.add_argument(
        "--cut-boxes",
        default="mask",
        metavar="{mask,ignore}",  # checked with the other settings: a bad value is one line
        help="a part below --min-visible: mask (fill it) or ignore (keep the pixels, write it to ignore/<split>/ for "
        "a training's loss to leave out); default mask",
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

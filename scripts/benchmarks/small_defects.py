"""Benchmark: small defects on large images: whole image, native-scale tiles and P2 heads at equal training compute.

Data: synthetic boards (`data synth --size N --defect-size 8-40`: defects of absolute sizes, long side
log-uniform in 8-40 px, about one per 256 x 256 px) and, when present, NEU-DET (200-px images: the
counter-case, where tiles of the same size cut nothing and so should change nothing).

Arms (YOLO11n from its architecture unless named; ``--arms`` picks):

- ``whole``: whole boards resized to ``--imgsz`` (the baseline every ratio is against);
- ``native``: whole boards at their native size (``imgsz`` = the largest board side, rounded up to 32);
- ``tiles``: ``data.tile`` of ``--tile`` px (overlap ``--overlap``), trained at ``imgsz`` = the tile, so at
  the native scale;
- ``p2``: ``--p2-model`` (a stride-4 head) on whole boards at ``--imgsz``;
- ``tiles-p2``: ``--p2-model`` on the tiles.

Equal training compute means the same number of training pixels, pixels = epochs x images per epoch x
imgsz^2 (ultralytics letterboxes every image to an imgsz square). The tiles arms get ``--tile-epochs``;
the budget is theirs, and every other arm gets epochs = max(1, round(budget / (images x imgsz^2))): fewer
epochs for the arm with more pixels per epoch. The report gives each arm's pixels over the budget, since
epochs are whole numbers. (Equal pixels is not equal FLOPs: a P2 head costs more per pixel, which the
training time shows.)

Every arm is evaluated the same way, on the WHOLE val boards through ``predict`` (PyTorch runtime), tiled
where the model was trained on tiles (the checkpoint says so, as on the line), from ``last.pt`` (a tiled
training's per-epoch validation is not at its scale, so best.pt would be picked on the wrong numbers):
mAP50 (per class, 101-point interpolated, COCO's matching at IoU 0.5), and recall at score >=
``--recall-conf`` per defect size bucket (the true box's long side in native pixels: <16, 16-32, >32),
class-agnostic (a screen must find the defect; what it is called comes second) and with the class.
Training time is the whole ``train`` call; inference time the whole ``predict`` over the val boards.

    python scripts/benchmarks/small_defects.py                # the CPU scale: about 15 min on 2 cores
    python scripts/benchmarks/small_defects.py --quick        # a smoke run of every step (~3 min)
    python scripts/benchmarks/small_defects.py --sizes 1024,1536,2048 --boards 300 --imgsz 640 --tile 640 \\
        --tile-epochs 10 --batch 16 --device 0                # the GPU setting of issue 29
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the scripts package

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from pipeline.config import build_config  # noqa: E402
from scripts.benchmarks.common import link_or_copy, quiet_ultralytics, save_report, work_folder  # noqa: E402

BASELINE = "whole"
ARMS = ("whole", "native", "tiles", "p2", "tiles-p2")
BUCKETS = (("<16", 0, 16), ("16-32", 16, 33), (">32", 33, math.inf))  # long side in px: [lo, hi)
MONITOR_BOARDS = 2  # the trainings' own per-epoch validation: kept tiny, the study evaluates through predict


@dataclass(frozen=True)
class Arm:
    name: str
    model: str
    tiles: bool
    imgsz: int
    cut_boxes: str = "mask"  # data.tile.cut_boxes of a tiles arm (scripts/benchmarks/cut_boxes.py compares them)


@dataclass
class Outcome:
    dataset: str
    arm: str
    model: str
    imgsz: int
    tile: int  # 0: whole images
    epochs: int
    images_per_epoch: int
    train_pixels: float
    pixels_vs_budget: float
    train_s: float
    predict_s: float
    predict_ms_per_image: float
    map50: float
    recall: dict[str, float] = field(default_factory=dict)  # class-agnostic, per bucket and "all"
    recall_with_class: dict[str, float] = field(default_factory=dict)
    truths: dict[str, int] = field(default_factory=dict)  # true boxes per bucket
    precision: float = math.nan  # class-agnostic, at --recall-conf
    predict_line: str = ""


# ---- data ---------------------------------------------------------------------------------------------------------


def make_boards(work: Path, sizes: Sequence[int], boards: int, seed: int, defect_px: tuple[int, int]) -> Path:
    """``boards`` synthetic boards, shared evenly among ``sizes``, one YOLO folder (train, val, and ``monitor``: a
    couple of val boards for the trainings' own per-epoch validation); its data.yaml."""
    from pipeline.data.synth import synthesize

    out = work / "boards"
    share = [boards // len(sizes) + (k < boards % len(sizes)) for k in range(len(sizes))]
    for k, (size, count) in enumerate(zip(sizes, share, strict=True)):
        made = synthesize(
            work / f"synth-{size}", images=count, seed=seed + k, size=size, val_fraction=0.25, defect_px=defect_px
        )
        for image in sorted(made.out.glob("images/*/*.png")):
            split = image.parent.name
            link_or_copy(image, out / "images" / split / image.name)
            link_or_copy(
                made.out / "labels" / split / f"{image.stem}.txt", out / "labels" / split / f"{image.stem}.txt"
            )
    return _with_monitor(out, read_names(work / f"synth-{sizes[0]}" / "data.yaml"))


def neu_det_subset(source: Path, work: Path, train: int, val: int, seed: int = 0) -> Path:
    """``train`` NEU-DET train images and ``val`` of its val images (seeded draws), in one YOLO folder."""
    out = work / "neu-det"
    for split, count in (("train", train), ("val", val)):
        pictures = sorted((source / "images" / split).glob("*.jpg"))
        random.Random(seed).shuffle(pictures)
        for picture in pictures[:count]:
            link_or_copy(picture, out / "images" / split / picture.name)
            label = source / "labels" / split / f"{picture.stem}.txt"
            if label.exists():
                link_or_copy(label, out / "labels" / split / label.name)
            else:
                (out / "labels" / split).mkdir(parents=True, exist_ok=True)
                (out / "labels" / split / label.name).write_text("")
    return _with_monitor(out, read_names(source / "data.yaml"))


def read_names(data_yaml: Path) -> list[str]:
    names = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))["names"]
    return [names[k] for k in sorted(names)] if isinstance(names, dict) else list(names)


def _with_monitor(out: Path, names: list[str]) -> Path:
    for image in sorted((out / "images" / "val").iterdir())[:MONITOR_BOARDS]:
        link_or_copy(image, out / "images" / "monitor" / image.name)
        link_or_copy(out / "labels" / "val" / f"{image.stem}.txt", out / "labels" / "monitor" / f"{image.stem}.txt")
    spec = {"train": "images/train", "val": "images/monitor", "names": dict(enumerate(names))}
    (out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return out / "data.yaml"


def long_side(folder: Path) -> int:
    sides = [max(cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[:2]) for p in sorted(folder.iterdir())]
    return max(sides)


def train_images(data_yaml: Path) -> int:
    return len(list((data_yaml.parent / "images" / "train").iterdir()))


def tile_count(data_yaml: Path, work: Path, size: int, overlap: float) -> int:
    """The training images a ``data.tile`` training sees per epoch: its tiles (same settings and background draw
    as the training's own cached set) plus the images used whole."""
    from pipeline.data.tiles import TRAINING_SEED, tile_dataset, tile_settings  # the training's background draw

    train_only = work / f"{data_yaml.parent.name}-train-only"
    for kind in ("images", "labels"):
        for source in sorted((data_yaml.parent / kind / "train").iterdir()):
            if not (train_only / kind / "train" / source.name).exists():
                link_or_copy(source, train_only / kind / "train" / source.name)
    names = dict(enumerate(read_names(data_yaml)))
    (train_only / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "names": names}))
    out = work / f"{data_yaml.parent.name}-tiles-{size}"
    tiled = tile_dataset(
        train_only / "data.yaml", out, tile_settings(size, overlap, 0.5, 0.1, "mask"), seed=TRAINING_SEED
    )
    counts = tiled.counts("train")
    return counts.tiles + counts.whole


# ---- scoring ------------------------------------------------------------------------------------------------------


def read_truth(val: Path) -> dict[str, list[tuple[int, list[float]]]]:
    """Each val image's true (class, xyxy in pixels), keyed by the image's resolved path."""
    truth: dict[str, list[tuple[int, list[float]]]] = {}
    for image in sorted(val.iterdir()):
        height, width = cv2.imread(str(image), cv2.IMREAD_UNCHANGED).shape[:2]
        label = val.parent.parent / "labels" / "val" / f"{image.stem}.txt"
        boxes = []
        for line in label.read_text().splitlines() if label.exists() else []:
            if line.strip():
                c, cx, cy, w, h = (float(v) for v in line.split()[:5])
                x0, y0 = (cx - w / 2) * width, (cy - h / 2) * height
                boxes.append((int(c), [x0, y0, x0 + w * width, y0 + h * height]))
        truth[str(image.resolve())] = boxes
    return truth


def _xywh(boxes: Sequence[Sequence[float]]) -> np.ndarray:
    a = np.asarray(boxes, dtype=float).reshape(-1, 4)
    return np.stack([a[:, 0], a[:, 1], a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]], axis=1)


def bucket_of(box: Sequence[float]) -> str:
    side = max(box[2] - box[0], box[3] - box[1])
    return next(name for name, lo, hi in BUCKETS if lo <= side < hi)


def _matched(dets: list[tuple[int, float, list[float]]], truths: list[tuple[int, list[float]]], agnostic: bool):
    """COCO's greedy matching at IoU 0.5 (`pipeline.evaluation.matching.assign`), per class unless ``agnostic``:
    (per detection, highest score first: hit?), (per true box: found?)."""
    from pipeline.evaluation.matching import assign

    order = sorted(range(len(dets)), key=lambda k: -dets[k][1])
    hit = np.zeros(len(dets), bool)
    found = np.zeros(len(truths), bool)
    classes = {0} if agnostic else {c for c, _, _ in dets} | {c for c, _ in truths}
    for cls in classes:
        mine = [k for k in order if agnostic or dets[k][0] == cls]
        rows = [j for j, (c, _) in enumerate(truths) if agnostic or c == cls]
        if not mine or not rows:
            continue
        taken = assign(_xywh([dets[k][2] for k in mine]), _xywh([truths[j][1] for j in rows]), np.zeros(len(rows)))
        for k, t in zip(mine, taken, strict=True):
            if t >= 0:
                hit[k] = True
                found[rows[t]] = True
    return hit, found


def average_precision(scores: np.ndarray, hits: np.ndarray, objects: int) -> float:
    """COCO's 101-point interpolated AP of one class from its detections' scores and hit flags."""
    if objects == 0:
        return math.nan
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(hits[order])
    recall = tp / objects
    precision = tp / np.arange(1, len(tp) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    points = np.linspace(0, 1, 101)
    at = np.searchsorted(recall, points, side="left")
    return float(np.mean([precision[i] if i < len(precision) else 0.0 for i in at]))


def score(found: dict[str, list[tuple[int, float, list[float]]]], truth: dict, classes: int, conf: float) -> dict:
    per_class: dict[int, list[tuple[float, bool]]] = {c: [] for c in range(classes)}
    objects = dict.fromkeys(range(classes), 0)
    totals = {name: 0 for name, _, _ in BUCKETS} | {"all": 0}
    agnostic_hits = dict(totals)
    class_hits = dict(totals)
    kept = kept_hits = 0
    for path, truths in truth.items():
        dets = found.get(path, [])
        hit, _ = _matched(dets, truths, agnostic=False)
        for (cls, s, _), h in zip(dets, hit, strict=True):
            per_class.setdefault(cls, []).append((s, bool(h)))
        for cls, _ in truths:
            objects[cls] = objects.get(cls, 0) + 1
        confident = [d for d in dets if d[1] >= conf]
        hit_a, found_a = _matched(confident, truths, agnostic=True)
        _, found_c = _matched(confident, truths, agnostic=False)
        kept, kept_hits = kept + len(confident), kept_hits + int(hit_a.sum())
        for (_, box), a, c in zip(truths, found_a, found_c, strict=True):
            for key in (bucket_of(box), "all"):
                totals[key] += 1
                agnostic_hits[key] += bool(a)
                class_hits[key] += bool(c)
    aps = [
        average_precision(np.array([s for s, _ in v]), np.array([h for _, h in v], bool), objects.get(c, 0))
        for c, v in per_class.items()
    ]
    aps = [a for a in aps if not math.isnan(a)]
    return {
        "map50": float(np.mean(aps)) if aps else math.nan,
        "recall": {k: agnostic_hits[k] / totals[k] if totals[k] else math.nan for k in totals},
        "recall_with_class": {k: class_hits[k] / totals[k] if totals[k] else math.nan for k in totals},
        "truths": totals,
        "precision": kept_hits / kept if kept else math.nan,
    }


# ---- one arm ------------------------------------------------------------------------------------------------------


def train_arm(
    arm: Arm, data_yaml: Path, work: Path, epochs: int, args: argparse.Namespace, seed: int = 0
) -> tuple[Path, float]:
    from pipeline.training.run import train

    data: dict[str, Any] = {"path": str(data_yaml)}
    if arm.tiles:
        data["tile"] = {"size": args.tile, "overlap": args.overlap, "cut_boxes": arm.cut_boxes}
    raw = {
        "data": data,
        "model": {"weights": arm.model},
        "train": {
            "epochs": epochs,
            "imgsz": arm.imgsz,
            "batch": args.batch,
            "device": args.device,
            "workers": 0,
            "seed": seed,
            "optimizer": "AdamW",
            "lr0": args.lr0,
            "warmup_epochs": 0,
            "patience": 0,
            "plots": False,
            "project": str(work / "runs"),
            "name": f"{data_yaml.parent.name}-{arm.name}" + (f"-seed{seed}" if seed else ""),
        },
        "augment": {"mosaic": 0.0, "close_mosaic": 0},
        "tracking": {"enabled": False},
        "gradients": {"enabled": False},
    }
    start = time.perf_counter()
    result = train(build_config(raw, "<benchmark>"))
    return result.save_dir / "weights" / "last.pt", time.perf_counter() - start


def predict_arm(weights: Path, val: Path, out: Path, args: argparse.Namespace) -> tuple[dict, float, str]:
    """The model over the whole val images as predict runs it by default (tiles where it trained on tiles)."""
    import logging

    from pipeline.inference import predict

    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler = Keep(logging.INFO)
    logger = logging.getLogger("pipeline.inference")
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        start = time.perf_counter()
        predict(val, str(weights), out, conf=args.predict_conf, runtime="torch", device=args.device, progress=False)
        seconds = time.perf_counter() - start
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    found: dict[str, list[tuple[int, float, list[float]]]] = {}
    for line in (out / "predictions.jsonl").read_text().splitlines():
        record = json.loads(line)
        found[str(Path(record["path"]).resolve())] = [
            (d["class_id"], d["score"], d["box"]) for d in record["detections"]
        ]
    scale = "; ".join(line.removeprefix("predict: ") for line in lines if "tile" in line or " px" in line)
    return found, seconds, scale


def arms_for(args: argparse.Namespace, native: int) -> list[Arm]:
    every = {
        "whole": Arm("whole", args.model, False, args.imgsz),
        "native": Arm("native", args.model, False, native),
        "tiles": Arm("tiles", args.model, True, args.tile),
        "p2": Arm("p2", args.p2_model, False, args.imgsz),
        "tiles-p2": Arm("tiles-p2", args.p2_model, True, args.tile),
    }
    return [every[name] for name in args.arms]


def run_dataset(
    name: str,
    data_yaml: Path,
    arms: list[Arm],
    tile_epochs: int,
    work: Path,
    args: argparse.Namespace,
    failed: list[str],
    done: Callable[[Outcome], None],
) -> list[Outcome]:
    n_images = train_images(data_yaml)
    n_tiles = tile_count(data_yaml, work, args.tile, args.overlap)
    budget = tile_epochs * n_tiles * args.tile**2
    val = data_yaml.parent / "images" / "val"
    truth = read_truth(val)
    classes = len(read_names(data_yaml))
    print(
        f"{name}: {n_images} train images ({n_tiles} as {args.tile}-px tiles), {len(truth)} val images, "
        f"{sum(map(len, truth.values()))} val boxes; budget {budget / 1e6:.1f} Mpx = {tile_epochs} tile epochs",
        flush=True,
    )
    outcomes = []
    for arm in arms:
        per_epoch = (n_tiles if arm.tiles else n_images) * arm.imgsz**2
        epochs = tile_epochs if arm.tiles else max(1, round(budget / per_epoch))
        try:
            weights, train_s = train_arm(arm, data_yaml, work, epochs, args)
            found, predict_s, line = predict_arm(weights, val, work / f"predict-{name}-{arm.name}", args)
        except Exception as exc:  # noqa: BLE001 - one arm failing (memory, a model) leaves the others to run
            print(f"{name} {arm.name}: failed: {type(exc).__name__}: {str(exc).strip()[:300]}", flush=True)
            failed.append(f"{name} {arm.name}: {type(exc).__name__}: {str(exc).strip()[:300]}")
            continue
        scored = score(found, truth, classes, args.recall_conf)
        outcome = Outcome(
            dataset=name,
            arm=arm.name,
            model=arm.model,
            imgsz=arm.imgsz,
            tile=args.tile if arm.tiles else 0,
            epochs=epochs,
            images_per_epoch=n_tiles if arm.tiles else n_images,
            train_pixels=epochs * per_epoch,
            pixels_vs_budget=round(epochs * per_epoch / budget, 3),
            train_s=round(train_s, 1),
            predict_s=round(predict_s, 2),
            predict_ms_per_image=round(1000 * predict_s / max(1, len(truth)), 1),
            predict_line=line,
            **scored,
        )
        outcomes.append(outcome)
        done(outcome)
        print(row(outcome), flush=True)
    return outcomes


# ---- report -------------------------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


HEADER = (
    "| data | arm | model | imgsz | tile | epochs | px / budget | mAP50 | recall <16 | 16-32 | >32 | all "
    "| train s | predict ms/image |"
)


def row(o: Outcome) -> str:
    r = o.recall
    cells = [o.dataset, o.arm, o.model, str(o.imgsz), str(o.tile or "-"), str(o.epochs), f"{o.pixels_vs_budget:.2f}"]
    cells += [_fmt(o.map50), *(_fmt(r.get(k, math.nan)) for k in ("<16", "16-32", ">32", "all"))]
    cells += [f"{o.train_s:.0f}", f"{o.predict_ms_per_image:.0f}"]
    return "| " + " | ".join(cells) + " |"


def ratios(outcomes: list[Outcome]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Per dataset and arm: recall per bucket and mAP50 over the baseline's (None where the baseline's is 0)."""
    out: dict[str, dict[str, dict[str, float | None]]] = {}
    for dataset in dict.fromkeys(o.dataset for o in outcomes):
        mine = {o.arm: o for o in outcomes if o.dataset == dataset}
        base = mine.get(BASELINE)
        if base is None:
            continue
        for arm, o in mine.items():
            pairs = {k: (o.recall.get(k), base.recall.get(k)) for k in ("<16", "16-32", ">32", "all")}
            pairs["map50"] = (o.map50, base.map50)
            out.setdefault(dataset, {})[arm] = {
                k: round(a / b, 2) if a is not None and b and not math.isnan(b) and not math.isnan(a) else None
                for k, (a, b) in pairs.items()
            }
    return out


def verdict(outcomes: list[Outcome], ratio: dict) -> list[str]:
    """The issue's target, checked on what ran: tiles reach 1.5x whole's recall under 16 px (any recall over a
    baseline of 0 counts), and no less over 32 px."""
    lines = []
    boards = {o.arm: o for o in outcomes if o.dataset == "boards"}
    if {"whole", "tiles"} <= set(boards):
        tiles, whole = boards["tiles"].recall, boards["whole"].recall
        small = tiles["<16"] >= 1.5 * whole["<16"] and tiles["<16"] > 0
        large = tiles[">32"] >= whole[">32"]
        lines.append(
            f"boards: recall <16 px {_fmt(tiles['<16'])} tiles vs {_fmt(whole['<16'])} whole, >32 px "
            f"{_fmt(tiles['>32'])} vs {_fmt(whole['>32'])}: target {'met' if small and large else 'NOT met'}"
        )
    neu = {o.arm: o for o in outcomes if o.dataset == "neu-det"}
    if {"whole", "tiles"} <= set(neu):
        a, b = neu["whole"], neu["tiles"]
        lines.append(
            f"neu-det: mAP50 {_fmt(a.map50)} whole, {_fmt(b.map50)} tiles; recall {_fmt(a.recall['all'])} vs "
            f"{_fmt(b.recall['all'])} (of {a.truths['all']} boxes)"
        )
    return lines


# ---- main ---------------------------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected board sides in px such as 1024,2048, got {text!r}") from None
    if not sizes or any(s < 256 for s in sizes):
        raise argparse.ArgumentTypeError(f"board sides must be >= 256 px, got {text!r}")
    return sizes


def _arms(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [n for n in names if n not in ARMS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"arms are {', '.join(ARMS)}; got {text!r}")
    return names


def _defect_px(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        pair = int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN-MAX px such as 8-40, got {text!r}") from None
    if not 2 <= pair[0] <= pair[1]:
        raise argparse.ArgumentTypeError(f"expected 2 <= MIN <= MAX, got {text!r}")
    return pair


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_sizes, default=[1024], help="board sides in px, comma list (default 1024)")
    parser.add_argument("--boards", type=int, default=64, help="boards in all, a quarter of them val (default 64)")
    parser.add_argument("--defect-size", type=_defect_px, default=(8, 40), help="defects' long side, MIN-MAX px")
    parser.add_argument("--seed", type=int, default=0, help="the boards' seed")
    parser.add_argument("--imgsz", type=int, default=320, help="whole-image arms' training size (GPU: 640)")
    parser.add_argument("--tile", type=int, default=320, help="tile side in px, trained at this size (GPU: 640)")
    parser.add_argument("--overlap", type=float, default=0.2, help="tiles' overlap")
    parser.add_argument("--tile-epochs", type=int, default=3, help="the tiles arms' epochs: the compute budget")
    parser.add_argument("--arms", type=_arms, default=list(ARMS), help=f"comma list of {', '.join(ARMS)}")
    parser.add_argument("--model", default="yolo11n.yaml", help="the arms' model (default yolo11n.yaml)")
    parser.add_argument("--p2-model", default="yolov8n-p2.yaml", help="the P2 arms' model (a stride-4 head)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr0", type=float, default=0.002, help="AdamW's learning rate, every arm")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--predict-conf", type=float, default=0.01, help="lowest score kept (mAP50 uses them all)")
    parser.add_argument("--recall-conf", type=float, default=0.1, help="score threshold of the recall columns")
    parser.add_argument("--neu-det", type=Path, default=ROOT.parent / "shared" / "datasets" / "neu-det")
    parser.add_argument("--neu-train", type=int, default=320, help="NEU-DET train images used (0: skip NEU-DET)")
    parser.add_argument("--neu-val", type=int, default=120, help="NEU-DET val images used")
    parser.add_argument("--neu-imgsz", type=int, default=224, help="NEU-DET training size (its images are 200 px)")
    parser.add_argument("--neu-epochs", type=int, default=5, help="NEU-DET tiles arm's epochs (the budget there)")
    parser.add_argument("--neu-arms", type=_arms, default=["whole", "tiles"], help="arms run on NEU-DET")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 12 boards, 1 tile epoch, tiny NEU-DET")
    parser.add_argument("--keep", type=Path, help="keep the work folder (data, runs, predictions) here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "small_defects.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.boards, args.tile_epochs, args.neu_train, args.neu_val, args.neu_epochs = 12, 1, 40, 20, 1
    if args.imgsz % 32 or args.tile % 32 or args.neu_imgsz % 32:
        parser.error("--imgsz, --tile and --neu-imgsz must be multiples of 32")
    if args.boards < 8:
        parser.error("--boards: need at least 8")
    if args.defect_size[1] > min(args.sizes) // 4:
        parser.error(f"--defect-size: at most a quarter of the smallest board ({min(args.sizes)} px)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_ultralytics()
    work = work_folder(args.keep, "small-defects-")
    started = time.perf_counter()
    outcomes: list[Outcome] = []
    failed: list[str] = []

    def save(outcome: Outcome | None = None) -> dict[str, Any]:
        """The report so far, written after every arm: a run stopped early keeps what it measured."""
        if outcome is not None:
            outcomes.append(outcome)
        done = list(outcomes)
        ratio = ratios(done)
        report = {
            "benchmark": "small_defects",
            "baseline": f"{BASELINE}: whole images resized to --imgsz, same training pixels",
            "budget": "pixels = epochs x images per epoch x imgsz^2; the tiles arms' epochs set it",
            "outcomes": [asdict(o) for o in done],
            "ratio_vs_whole": ratio,
            "target": verdict(done, ratio),
            "failed": failed,
            "seconds": round(time.perf_counter() - started, 1),
        }
        save_report(args, report)
        return report

    try:
        boards = make_boards(work, args.sizes, args.boards, args.seed, args.defect_size)
        native = math.ceil(long_side(boards.parent / "images" / "train") / 32) * 32
        run_dataset("boards", boards, arms_for(args, native), args.tile_epochs, work, args, failed, save)
        if args.neu_train and (args.neu_det / "data.yaml").exists():
            neu = neu_det_subset(args.neu_det, work, args.neu_train, args.neu_val)
            # Tiles of the training size: images not larger are used whole, so tiling should change nothing.
            neu_args = argparse.Namespace(
                **{**vars(args), "imgsz": args.neu_imgsz, "tile": args.neu_imgsz, "arms": args.neu_arms}
            )
            arms = [a if a.tiles else Arm(a.name, a.model, False, args.neu_imgsz) for a in arms_for(neu_args, 0)]
            run_dataset("neu-det", neu, arms, args.neu_epochs, work, neu_args, failed, save)
        elif args.neu_train:
            print(f"{args.neu_det}: no NEU-DET here; its arms are skipped")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report = save()
    print()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for o in outcomes:
        print(row(o))
    print(f"\nrecall and mAP50 over {BASELINE}'s: {json.dumps(report['ratio_vs_whole'])}")
    for line in report["target"] + [f"failed: {f}" for f in failed]:
        print(line)
    print(f"wrote {args.out} ({report['seconds']:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

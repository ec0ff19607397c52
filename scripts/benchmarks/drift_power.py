"""Benchmark: the drift check's power: how often a folder of parts like the calibration split alarms (false alarms),
how often a shifted one does (detection), and what the check adds to a predict run.

Per data set (synthetic parts; NEU-DET too when ``--neu`` holds it): a YOLO11n from its architecture trained on
it (or ``--model`` / ``--neu-model``), calibrated on its val split (``calibrate --out``: screen.json and the
drift baseline beside it). Then one pool of ``--pool`` images per condition, each predicted once with the screen
(``predict --screen``, in runs of at most 500 images so that every image's embedding is kept: the run's
drift_sample.npz holds 500), the runs' samples joined with ``Sample.concat``:

- ``clean``: new parts from the baseline's distribution (synthetic: new seeds, the generator's settings;
  NEU-DET: its train images the model did not train on; the baseline is its val split). Must not alarm.
- ``brightness``: the clean images x1.3, clipped (a brighter lamp);
- ``blur``: the clean images under a Gaussian blur of sigma 2 (focus, a dirty lens);
- ``new-shape``: the clean images each with one defect of a shape the data never has (a ring or a cross, drawn
  here with OpenCV, at the contrast of the generator's scratches);
- ``size``: the clean images resized to 1.5x their side (another camera);
- ``mixed``: 20% of the clean images replaced by images of another data set at this one's size (synthetic
  parts: NEU-DET, else a woven-texture variant of the generator; NEU-DET: synthetic parts).

From each pool ``--draws`` folders of ``--folder`` images (a seeded draw without replacement each) are compared
with the baseline (``pipeline.drift.compare``: KS per statistic and class score, Fisher per fail rate, MMD of the
embeddings, the atypical share, the nearest-neighbours test, Holm at 5%): the alarm rate is the share of folders
with ``report.drifted``. Targets: at most 5% on clean folders, at least 90% per shift at 200 images. Draws from
one pool share images (two 200-image draws from 1,000 share 40 on average), so the 20 draws are not independent:
the rates are estimates over the pool, and 20 of them only to within about 10 points; ``clean`` and ``mixed``,
the two near a target, get a second row of ``--long-draws`` folders (400: within about 2 points). Two more
figures explain a false alarm: ``clean, baseline redrawn`` (``--null-draws`` folders compared with a
stand-in baseline of the real one's size, both drawn apart from the clean pool each time: the tests' own rate,
free of the one fixed baseline) and, per row, the rate with the class-score checks left out (Holm over the rest).

INT8 (unless ``--no-int8``): each model exported as an ``onnx-int8`` bundle with its screen (`export`, gated
on the val split; its baseline recorded again with the INT8 network), and the clean, brightness and blur pools
predicted through the bundle against that baseline: a line PC's INT8 screen must stay quiet on clean parts and
still see a shift.

Overhead: ``predict`` on one clean ``--folder``-image folder with the drift check and without (``drift=False``),
alternating, ``--pairs`` pairs after one warm-up run of each, both on the runtime auto chose, at each of
``--overhead-sizes``; the whole call is timed (the comparison runs after the images), and the check's parts
apart (its cost per run and per image). Target: the check adds at most 5% to the run.

    python scripts/benchmarks/drift_power.py                  # about 10 min on 2 cores
    python scripts/benchmarks/drift_power.py --quick          # a smoke run of every step (~2 min)
    python scripts/benchmarks/drift_power.py --model best.pt --neu ''   # a trained synthetic model, no NEU-DET
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the scripts package

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import yaml  # noqa: E402

from pipeline.drift import Baseline, DriftReport, Sample, compare, holm  # noqa: E402
from pipeline.drift.statistics import EMBEDDING_SAMPLE  # noqa: E402
from pipeline.inference.drift_check import ATYPICAL_REVIEW  # noqa: E402
from scripts.benchmarks.common import link_or_copy, quiet_ultralytics, save_report, work_folder  # noqa: E402

CONDITIONS = ("clean", "brightness", "blur", "new-shape", "size", "mixed")
INT8_CONDITIONS = ("clean", "brightness", "blur")  # an INT8 bundle: quiet on clean parts, still seeing a shift
LONG_CONDITIONS = ("clean", "mixed")  # where 20 folders leave the rate within 10 points of a target: more draws
NULL = "clean, baseline redrawn"  # both sides drawn from the clean pool: the test's own false-alarm rate
TARGET_FALSE_ALARM = 0.05
TARGET_DETECTION = 0.90
TARGET_OVERHEAD = 0.05
GAIN = 1.3
BLUR_SIGMA = 2.0
SIZE_FACTOR = 1.5
FOREIGN_SHARE = 0.2
OTHER = "other-"  # the file names of a mixed pool's images from the other data set begin so
REVIEWED = ATYPICAL_REVIEW  # the images a drifted run puts at the head of the review queue
SYNTH_SIZE = 128  # the generator's default image side
SYNTH_SEED = 0  # training and val; the clean pool draws seed POOL_SEED
POOL_SEED = 1
BACKGROUNDS = 0.2  # defect-free share, training and pool alike: a fail rate below 100% to test
CHUNK = EMBEDDING_SAMPLE  # images per predict run: each run keeps at most this many embeddings
SAMPLE_FILE = "drift_sample.npz"  # what predict writes of the images it saw (pipeline.inference.drift_check)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass
class Domain:
    """One data set's model, screen, baseline and clean pool."""

    name: str
    data_yaml: Path
    model: str
    screen: Path
    baseline: Baseline
    clean: list[Path]  # the clean pool's image files
    foreign: Callable[[int, int], np.ndarray]  # (index, side) -> an image of another data set at that side
    notes: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


# ---- shifts -------------------------------------------------------------------------------------------------------


def brighter(image: np.ndarray, gain: float = GAIN) -> np.ndarray:
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def blurred(image: np.ndarray, sigma: float = BLUR_SIGMA) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def resized(image: np.ndarray, factor: float = SIZE_FACTOR) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.resize(image, (round(width * factor), round(height * factor)), interpolation=cv2.INTER_LINEAR)


def with_new_shape(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One defect the data never has: a ring or a cross, bright or dark by 55-80 grey levels (the generator's
    scratch contrast), 2-3% of the side thick, placed anywhere on the part."""
    height, width = image.shape[:2]
    side = min(height, width)
    mask = np.zeros((height, width), np.uint8)
    thickness = max(2, round(side / 48))
    cx, cy = (int(v) for v in rng.uniform(0.25, 0.75, 2) * (width, height))
    if rng.random() < 0.5:
        radius = int(rng.uniform(0.08, 0.16) * side)
        cv2.circle(mask, (cx, cy), max(3, radius), 255, thickness=thickness)
    else:
        arm = rng.uniform(0.08, 0.16) * side
        angle = rng.uniform(0, np.pi / 2)
        for turn in (0.0, np.pi / 2):
            dx, dy = np.cos(angle + turn) * arm, np.sin(angle + turn) * arm
            cv2.line(mask, (round(cx - dx), round(cy - dy)), (round(cx + dx), round(cy + dy)), 255, thickness)
    painted = image.astype(np.float32)
    painted[mask > 0] += rng.choice([-1.0, 1.0]) * rng.uniform(55, 80)
    return np.clip(painted, 0, 255).astype(np.uint8)


def woven(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another data set when NEU-DET is absent: the part under a woven texture (two crossed sine gratings)."""
    height, width = image.shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(6, 10)
    weave = 18 * np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period)
    weave = weave if image.ndim == 2 else weave[..., None]
    return np.clip(image.astype(np.float32) + weave, 0, 255).astype(np.uint8)


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # grey stays grey: as the baseline's files were read
    if image is None:
        raise OSError(f"{path}: not an image")
    return image


def write_pool(domain: Domain, condition: str, folder: Path, seed: int) -> list[Path]:
    """The condition's pool as image files under ``folder``, in sub-folders of at most ``CHUNK`` images (one
    predict run each); the clean images are linked as they are (the same bytes the clean pool has), the shifted
    ones written as PNG (lossless: the shift is all that changes)."""
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    clean = domain.clean
    foreign = set()
    if condition == "mixed":
        foreign = {int(i) for i in rng.choice(len(clean), round(FOREIGN_SHARE * len(clean)), replace=False)}
    chunks = []
    for k, source in enumerate(clean):
        chunk = folder / f"part{k // CHUNK}"
        if k % CHUNK == 0:
            chunks.append(chunk)
        if condition == "clean" or (condition == "mixed" and k not in foreign):
            link_or_copy(source, chunk / source.name)
            continue
        image = read(source)
        if condition == "brightness":
            image = brighter(image)
        elif condition == "blur":
            image = blurred(image)
        elif condition == "new-shape":
            image = with_new_shape(image, rng)
        elif condition == "size":
            image = resized(image)
        elif condition == "mixed":
            image = domain.foreign(k, max(image.shape[:2]))
        chunk.mkdir(parents=True, exist_ok=True)
        named = f"{OTHER}{source.stem}" if condition == "mixed" else source.stem  # the review's count knows them
        cv2.imwrite(str(chunk / f"{named}.png"), image)
    return chunks


# ---- the pipeline's steps -----------------------------------------------------------------------------------------


def train_model(data_yaml: Path, work: Path, name: str, epochs: int, imgsz: int, batch: int) -> str:
    from pipeline.config import build_config
    from pipeline.training.run import train

    raw = {
        "data": {"path": str(data_yaml)},
        "model": {"weights": "yolo11n.yaml"},
        "train": {"epochs": epochs, "imgsz": imgsz, "batch": batch, "device": "cpu", "workers": 0, "seed": 0,
                  "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0, "plots": False,
                  "project": str(work / "runs"), "name": name},
        "augment": {"mosaic": 0.0, "close_mosaic": 0},
        "tracking": {"enabled": False},
        "gradients": {"enabled": False},
    }  # fmt: skip
    result = train(build_config(raw, "<benchmark>"))
    weights = result.best_weights or result.save_dir / "weights" / "last.pt"
    return str(weights)


def calibrated(model: str, data_yaml: Path, out: Path, notes: list[str]) -> tuple[Path, Baseline]:
    """The screen (val split, recall target 0.8) and its drift baseline: the file calibrate writes beside
    screen.json; where calibrate writes none (before the drift check was wired into it), what predict collects of
    the val images with that screen, which is what calibrate records."""
    from pipeline.screen.calibrate import calibrate

    calibrate(model, data_yaml, split="val", target_recall=0.8, out=out)
    screen = out / "screen.json"
    named = json.loads(screen.read_text(encoding="utf-8")).get("drift_baseline") or {}
    if named.get("file") and (out / Path(named["file"]).name).exists():
        return screen, Baseline.load(out / Path(named["file"]).name)
    notes.append("calibrate wrote no drift baseline: the baseline is predict's sample of the val split")
    val = data_yaml.parent / yaml.safe_load(data_yaml.read_text(encoding="utf-8"))["val"]
    return screen, Baseline(sample=predicted([val], model, screen, out / "val-predicted"), split="val")


def predicted(chunks: Sequence[Path], model: str, screen: Path, out: Path, **options: Any) -> Sample:
    """Every chunk through ``predict --screen``; their drift samples joined (every image's embedding: a chunk
    holds at most the 500 a run keeps)."""
    from pipeline.inference import predict

    samples = []
    for k, chunk in enumerate(chunks):
        target = out / f"run{k}"
        shutil.rmtree(target, ignore_errors=True)
        predict(chunk, model, target, screen=str(screen), progress=False, **options)
        samples.append(Baseline.load(target / SAMPLE_FILE).sample)
    return Sample.concat(samples)


# ---- the data sets ------------------------------------------------------------------------------------------------


def images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def synthetic_domain(work: Path, args: argparse.Namespace, neu: Path | None) -> Domain:
    from pipeline.data.synth import render, synthesize

    started = time.perf_counter()
    made = synthesize(work / "synth", images=args.images, seed=SYNTH_SEED, size=SYNTH_SIZE, val_fraction=0.4,
                      backgrounds=BACKGROUNDS)  # fmt: skip
    # New seeds, the same settings: the images the line would bring next.
    pool = synthesize(work / "synth-pool", images=args.pool, seed=POOL_SEED, size=SYNTH_SIZE, val_fraction=0.5,
                      backgrounds=BACKGROUNDS)  # fmt: skip
    clean = sorted(pool.out.glob("images/*/*.png"))
    if neu is not None:
        others = sorted((neu / "images").glob("*/*.jpg"))
        random.Random(0).shuffle(others)

        def foreign(index: int, side: int) -> np.ndarray:
            image = cv2.imread(str(others[index % len(others)]), cv2.IMREAD_COLOR)  # the synthetic parts are BGR
            return cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA)

        other = "NEU-DET images resized to 128 px"
    else:

        def foreign(index: int, side: int) -> np.ndarray:
            image, _ = render(SYNTH_SEED + 7, index, side)
            return woven(image, np.random.default_rng(index))

        other = "woven-texture synthetic parts (no NEU-DET here)"
    seconds = {"data_s": time.perf_counter() - started}
    started = time.perf_counter()
    model = args.model or train_model(made.data_yaml, work, "synthetic", args.epochs, args.imgsz, args.batch)
    seconds["train_s"] = 0.0 if args.model else time.perf_counter() - started
    notes = [f"mixed: {other}"]
    started = time.perf_counter()
    screen, baseline = calibrated(model, made.data_yaml, work / "synthetic-screen", notes)
    seconds["calibrate_s"] = time.perf_counter() - started
    return Domain("synthetic", made.data_yaml, model, screen, baseline, clean, foreign, notes, seconds)


def neu_domain(work: Path, args: argparse.Namespace, neu: Path) -> Domain:
    """NEU-DET: ``--neu-train`` of its train images train the model, its val split is the baseline, and the train
    images the model never saw are the clean pool (a random 80/20 split: the same distribution)."""
    from pipeline.data.synth import render

    started = time.perf_counter()
    pictures = images_in(neu / "images" / "train")
    random.Random(0).shuffle(pictures)
    train, rest = pictures[: args.neu_train], pictures[args.neu_train :]
    out = work / "neu-det"
    for split, chosen in (("train", train), ("val", images_in(neu / "images" / "val"))):
        for picture in chosen:
            link_or_copy(picture, out / "images" / split / picture.name)
            label = neu / "labels" / split / f"{picture.stem}.txt"
            if label.exists():
                link_or_copy(label, out / "labels" / split / label.name)
            else:  # a part without a defect: an empty label
                (out / "labels" / split).mkdir(parents=True, exist_ok=True)
                (out / "labels" / split / label.name).write_text("")
    names = yaml.safe_load((neu / "data.yaml").read_text(encoding="utf-8"))["names"]
    spec = {"train": "images/train", "val": "images/val", "names": names}
    (out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")

    def foreign(index: int, side: int) -> np.ndarray:
        image, _ = render(SYNTH_SEED + 11, index, side)  # synthetic parts drawn at NEU-DET's side
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)  # NEU-DET's files are grey: the same channels

    seconds = {"data_s": time.perf_counter() - started}
    started = time.perf_counter()
    model = args.neu_model or train_model(out / "data.yaml", work, "neu-det", args.neu_epochs, args.neu_imgsz,
                                          args.batch)  # fmt: skip
    seconds["train_s"] = 0.0 if args.neu_model else time.perf_counter() - started
    notes = ["mixed: synthetic parts drawn at 200 px, grey"]
    started = time.perf_counter()
    screen, baseline = calibrated(model, out / "data.yaml", work / "neu-det-screen", notes)
    seconds["calibrate_s"] = time.perf_counter() - started
    clean = rest[: args.pool]
    if len(clean) < args.pool:
        notes.append(f"the clean pool is the {len(clean)} train images left over (asked for {args.pool})")
    return Domain("neu-det", out / "data.yaml", model, screen, baseline, clean, foreign, notes, seconds)


# ---- measuring ----------------------------------------------------------------------------------------------------


def draws(baseline: Baseline, pool: Sample, count: int, folder: int, seed: int) -> list[DriftReport]:
    """``count`` folders of ``folder`` images drawn from ``pool`` (each without replacement), each compared."""
    rng = np.random.default_rng(seed)
    size = min(folder, pool.images)
    return [compare(baseline, pool.subset(rng.choice(pool.images, size, replace=False)), seed=k) for k in range(count)]


def null_draws(pool: Sample, baseline_images: int, count: int, folder: int, seed: int) -> list[DriftReport]:
    """The test's own false-alarm rate: a stand-in baseline of ``baseline_images`` and a folder of ``folder``,
    drawn apart from the clean pool each time (both sides random, as the test assumes; the real baseline is one
    fixed draw, which every folder above is compared with)."""
    rng = np.random.default_rng(seed)
    reports = []
    for k in range(count):
        order = rng.permutation(pool.images)
        base, current = (
            pool.subset(order[:baseline_images]),
            pool.subset(order[baseline_images : baseline_images + folder]),
        )
        reports.append(compare(base, current, seed=k))
    return reports


def review_counts(baseline: Baseline, pool: Sample, count: int, folder: int, seed: int) -> dict[str, float]:
    """Over ``count`` folders of the mixed pool: how many of the ``REVIEWED`` images a drifted run sends to review
    come from the other data set, in the order predict uses when the neighbours check drifted (`rank_grouped`) and
    by atypicality alone (`rank_atypical`); ``by_chance``: what any ``REVIEWED`` images of a folder hold."""
    from pipeline.drift.checks import rank_atypical, rank_grouped

    rng = np.random.default_rng(seed)
    found: dict[str, list[int]] = {"grouped": [], "atypical": []}
    for _ in range(count):
        folder_sample = pool.subset(rng.choice(pool.images, min(folder, pool.images), replace=False))
        for name, rank in (("grouped", rank_grouped), ("atypical", rank_atypical)):
            top = rank(baseline, folder_sample)[:REVIEWED]
            found[name].append(sum(Path(item.name).name.startswith(OTHER) for item in top))
    return {name: float(np.mean(counts)) for name, counts in found.items()} | {"by_chance": REVIEWED * FOREIGN_SHARE}


def review_line(domain: str, review: dict[str, float]) -> str:
    return (
        f"review ({domain}, mixed): of the {REVIEWED} images sent to review, {review['grouped']:.1f} from the other "
        f"data set (grouped first, as predict orders them), {review['atypical']:.1f} by atypicality alone, "
        f"{review['by_chance']:.0f} by chance"
    )


def alarms_without_scores(report: DriftReport) -> bool:
    """The decision with the class-score KS checks left out (Holm over the rest): what the other checks find alone.
    A score check pools every detection of a class, several per image, as if each were its own sample."""
    rest = [check.p for check in report.ran if not check.name.startswith("score.") and check.p is not None]
    return bool(holm(rest, report.alpha)[0].any())


def summarize(domain: str, condition: str, reports: list[DriftReport], pool: Sample) -> dict[str, Any]:
    fired: Counter[str] = Counter(check.name for report in reports for check in report.checks if check.drifted)
    skipped: Counter[str] = Counter(check.name for report in reports for check in report.skipped)
    alarms = sum(report.drifted for report in reports)
    rate = alarms / len(reports) if reports else float("nan")
    clean = condition.startswith("clean")
    met = rate <= TARGET_FALSE_ALARM if clean else rate >= TARGET_DETECTION
    return {
        "data": domain,
        "condition": condition,
        "draws": len(reports),
        "folder_images": reports[0].images if reports else 0,
        "pool_images": pool.images,
        "pool_embeddings": len(pool.embeddings),
        "alarms": alarms,
        "alarm_rate": rate,
        "alarm_rate_without_scores": sum(map(alarms_without_scores, reports)) / len(reports) if reports else None,
        "target": f"<= {TARGET_FALSE_ALARM:.0%}" if clean else f">= {TARGET_DETECTION:.0%}",
        "met": bool(met),
        "drifted_checks": dict(fired.most_common()),
        "skipped_checks": dict(skipped.most_common()),
        "min_p_holm_median": statistics.median(
            min((c.p_holm for c in r.ran if c.p_holm is not None), default=1.0) for r in reports
        )
        if reports
        else None,
    }


def measure_domain(
    domain: Domain,
    work: Path,
    args: argparse.Namespace,
    done: Callable[[dict], None],
    conditions: Sequence[str] = CONDITIONS,
) -> None:
    for condition in conditions:
        started = time.perf_counter()
        chunks = write_pool(domain, condition, work / f"{domain.name}-{condition}", args.seed)
        written = time.perf_counter()
        pool = predicted(chunks, domain.model, domain.screen, work / f"{domain.name}-{condition}-predicted")
        predicted_at = time.perf_counter()
        seed = args.seed * 1000 + CONDITIONS.index(condition)
        reports = draws(domain.baseline, pool, args.draws, args.folder, seed)
        row = summarize(domain.name, condition, reports, pool)
        row["seconds"] = {
            "write": round(written - started, 1),
            "predict": round(predicted_at - written, 1),
            "compare": round(time.perf_counter() - predicted_at, 1),
        }
        if condition == "mixed":
            row["review"] = review_counts(domain.baseline, pool, args.draws, args.folder, seed + 300)
        done(row)
        print(table_row(row), flush=True)
        if "review" in row:
            print(review_line(domain.name, row["review"]), flush=True)
        if condition in LONG_CONDITIONS and args.long_draws:  # the same pool: the rate to within about 2 points
            started = time.perf_counter()
            reports = draws(domain.baseline, pool, args.long_draws, args.folder, seed + 200)
            row = summarize(domain.name, f"{condition}, {args.long_draws} folders", reports, pool)
            row["seconds"] = {"compare": round(time.perf_counter() - started, 1)}
            done(row)
            print(table_row(row), flush=True)
        if condition == "clean" and args.null_draws and pool.images >= domain.baseline.images + args.folder:
            started = time.perf_counter()
            nulls = null_draws(pool, domain.baseline.images, args.null_draws, args.folder, seed + 100)
            row = summarize(domain.name, NULL, nulls, pool)
            row["seconds"] = {"compare": round(time.perf_counter() - started, 1)}
            done(row)
            print(table_row(row), flush=True)


def int8_domain(domain: Domain, work: Path) -> Domain | None:
    """The domain's model as an INT8 bundle (``export --format onnx-int8`` with its screen, gated on the val split),
    with the baseline export records again with the INT8 network; None, said in a line, when the gate refuses."""
    from pipeline.export.bundles import GateRefused, export_bundle

    started = time.perf_counter()
    out = work / f"{domain.name}-int8-bundle"
    try:
        export_bundle(domain.model, out, "onnx-int8", screen=domain.screen, data=domain.data_yaml, split="val")
    except GateRefused as exc:
        print(f"{domain.name}: the INT8 gate refused the bundle ({exc}); no INT8 rows", flush=True)
        return None
    screen = out / "screen.json"
    named = json.loads(screen.read_text(encoding="utf-8"))["drift_baseline"]
    return Domain(
        name=f"{domain.name} INT8",
        data_yaml=domain.data_yaml,
        model=str(out),
        screen=screen,
        baseline=Baseline.load(out / Path(named["file"]).name),
        clean=domain.clean,
        foreign=domain.foreign,
        notes=["an onnx-int8 bundle of the same model; its baseline recorded again with the INT8 network"],
        seconds={"export": round(time.perf_counter() - started, 1)},
    )


def overhead(domain: Domain, work: Path, args: argparse.Namespace, imgsz: int) -> dict[str, Any]:
    """The whole ``predict`` call on one clean folder, with the drift check and with ``drift=False``, alternating,
    after one warm-up of each (the export and the runtime race are cached by then); both sides on the runtime
    auto chose in the warm-up, so the pairs differ in the check alone. ``imgsz``: the network's size (0: the
    model's own), for a run whose images cost more than a 64-px network's. Beside the pairs, the check's parts
    timed in this process: its cost at the end of a run (the baseline read, the comparison, the two files) and
    per image (the input statistics; the embedding is a pooled layer output the network computes anyway)."""
    from pipeline.inference import predict

    folder = work / "overhead-folder"
    for source in domain.clean[: args.folder]:
        if not (folder / source.name).exists():
            link_or_copy(source, folder / source.name)
    sized = {"imgsz": imgsz} if imgsz else {}
    out = work / "overhead-predicted"

    def timed(drift: bool, runtime: str = "auto") -> dict[str, Any]:
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        result = predict(folder, domain.model, out, screen=str(domain.screen), progress=False, drift=drift,
                         runtime=runtime, **sized)  # fmt: skip
        return {"s": time.perf_counter() - started, "images_s": result.seconds, "imgsz": result.imgsz,
                "runtime": result.runtime}  # fmt: skip

    warm = timed(True)
    runtime = warm["runtime"] if warm["runtime"] in ("torch", "onnx") else "auto"  # "torch+onnx": a race unfinished
    timed(False, runtime)
    pairs = []
    for k in range(args.pairs):
        order = (True, False) if k % 2 == 0 else (False, True)
        runs = {drift: timed(drift, runtime) for drift in order}
        pairs.append({"with": runs[True], "without": runs[False]})
    ratios = [p["with"]["s"] / p["without"]["s"] for p in pairs]
    loop = [p["with"]["images_s"] / p["without"]["images_s"] for p in pairs]
    median = statistics.median(ratios)
    timed(True, runtime)  # the last run's files: what the parts below are timed on
    parts = check_parts(domain.baseline.save(work / "baseline-copy.npz"), out / SAMPLE_FILE, images_in(folder), work)
    return {
        "data": domain.name,
        "images": len(images_in(folder)),
        "imgsz": warm["imgsz"],
        "runtime": runtime,
        "pairs": pairs,
        "with_s_median": statistics.median(p["with"]["s"] for p in pairs),
        "without_s_median": statistics.median(p["without"]["s"] for p in pairs),
        "ratio_median": median,
        "ratio_range": [min(ratios), max(ratios)],
        "image_loop_ratio_median": statistics.median(loop),
        "parts": parts,
        "target": f"<= {1 + TARGET_OVERHEAD:.2f}",
        "met": median <= 1 + TARGET_OVERHEAD,
    }


def check_parts(baseline_file: Path, sample_file: Path, images: list[Path], work: Path) -> dict[str, float]:
    """The drift check's own work, each the median of 5 repetitions, in ms: what a predict run adds whatever its
    network costs."""
    from pipeline.drift import image_statistics

    def median_ms(step: Callable[[], Any]) -> float:
        times = []
        for _ in range(5):
            started = time.perf_counter()
            step()
            times.append(1000 * (time.perf_counter() - started))
        return round(statistics.median(times), 2)

    baseline = Baseline.load(baseline_file)
    sample = Baseline.load(sample_file).sample
    decoded = [read(path) for path in images]
    report = compare(baseline, sample)
    return {
        "baseline_load_ms": median_ms(lambda: Baseline.load(baseline_file)),
        "compare_ms": median_ms(lambda: compare(baseline, sample)),
        "write_files_ms": median_ms(
            lambda: (Baseline(sample=sample).save(work / "timed.npz"), report.write(work / "timed.json"))
        ),
        "statistics_ms_per_image": round(
            median_ms(lambda: [image_statistics(image) for image in decoded]) / len(decoded), 3
        ),
    }


# ---- report -------------------------------------------------------------------------------------------------------

HEADER = "| data | condition | draws | alarm rate | target | score checks left out | most frequent drifted checks |"


def table_row(row: dict[str, Any]) -> str:
    checks = ", ".join(f"{name} {count}" for name, count in list(row["drifted_checks"].items())[:3]) or "-"
    target = f"{row['target']} {'met' if row['met'] else 'NOT met'}"
    rate = f"{row['alarm_rate']:.0%} ({row['alarms']}/{row['draws']})"
    rest = f"{row['alarm_rate_without_scores']:.0%}"
    return (
        f"| {row['data']} | {row['condition']} | {row['draws']} x {row['folder_images']} | {rate} | {target} | {rest} "
        f"| {checks} |"
    )


def overhead_line(found: dict[str, Any]) -> str:
    low, high = found["ratio_range"]
    parts = found["parts"]
    fixed = parts["baseline_load_ms"] + parts["compare_ms"] + parts["write_files_ms"]
    return (
        f"overhead ({found['data']}, {found['images']} images at {found['imgsz']} px, {found['runtime']}, "
        f"{len(found['pairs'])} pairs): predict with the drift check / without = {found['ratio_median']:.3f} "
        f"(range {low:.3f}-{high:.3f}; {found['with_s_median']:.2f} s vs {found['without_s_median']:.2f} s; the "
        f"image loop alone {found['image_loop_ratio_median']:.3f}): target {found['target']} "
        f"{'met' if found['met'] else 'NOT met'}; the check's parts: {fixed:.0f} ms per run (compare "
        f"{parts['compare_ms']:.0f}), {parts['statistics_ms_per_image']:.2f} ms per image"
    )


# ---- main ---------------------------------------------------------------------------------------------------------


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sizes in px such as 0,320, got {text!r}") from None
    if not sizes or any(s < 0 or s % 32 for s in sizes):
        raise argparse.ArgumentTypeError(f"sizes are 0 (the model's own) or multiples of 32, got {text!r}")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a trained synthetic-parts .pt (default: train one)")
    parser.add_argument("--images", type=int, default=700, help="synthetic images drawn, 40%% of them val (baseline)")
    parser.add_argument("--epochs", type=int, default=10, help="synthetic model's epochs")
    parser.add_argument("--imgsz", type=int, default=64, help="synthetic model's training size")
    parser.add_argument("--neu", type=Path, default=ROOT.parent / "shared" / "datasets" / "neu-det",
                        help="NEU-DET in YOLO layout (with data.yaml); '' or absent: skipped")  # fmt: skip
    parser.add_argument("--neu-model", help="a trained NEU-DET .pt (default: train one)")
    parser.add_argument("--neu-train", type=int, default=480, help="NEU-DET train images the model trains on")
    parser.add_argument("--neu-epochs", type=int, default=5)
    parser.add_argument("--neu-imgsz", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--pool", type=int, default=1000, help="images per condition's pool")
    parser.add_argument("--folder", type=int, default=200, help="images per drawn folder")
    parser.add_argument("--draws", type=int, default=20, help="folders drawn per condition")
    parser.add_argument("--long-draws", type=int, default=400,
                        help="clean and mixed: a second row of this many folders, same pool (0: none)")  # fmt: skip
    parser.add_argument("--null-draws", type=int, default=400,
                        help="clean folders compared with a baseline redrawn from the clean pool (0: none)")  # fmt: skip
    parser.add_argument("--pairs", type=int, default=3, help="overhead: with/without pairs")
    parser.add_argument("--overhead-sizes", type=_sizes, default=[0, 320],
                        help="overhead: network sizes, comma list (0: the model's own)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="the draws' and the shifts' seed")
    parser.add_argument(
        "--no-int8",
        dest="int8",
        action="store_false",
        help="leave out the INT8 bundle rows (clean, brightness, blur through an onnx-int8 bundle)",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer images, epochs, draws and pairs")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (<out>/work)")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "drift_power",
                        help="folder for drift_power.json (and the work folder while it runs)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.epochs, args.neu_train, args.neu_epochs = 300, 2, 200, 1
        args.pool, args.draws, args.null_draws, args.pairs, args.overhead_sizes = 350, 5, 10, 1, [0]
        args.long_draws = 10
    if args.folder < 20 or args.pool < args.folder:
        parser.error("--folder: at least 20 images, and --pool at least --folder")
    if args.draws < 1 or args.pairs < 0:
        parser.error("--draws: at least 1; --pairs: at least 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_ultralytics()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "work", ignore_errors=True)  # what an earlier run of this benchmark left
    work = work_folder(args.out / "work", "drift-power-")
    neu = args.neu if str(args.neu) not in ("", ".") and (args.neu / "data.yaml").exists() else None
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    domains: list[Domain] = []
    found: list[dict[str, Any]] = []

    def save(row: dict[str, Any] | None = None) -> None:
        """The report so far, written after every condition: a run stopped early keeps what it measured."""
        if row is not None:
            rows.append(row)
        report = {
            "benchmark": "drift_power",
            "baseline": "the calibration split's drift baseline (calibrate --out)",
            "targets": {"false_alarm": TARGET_FALSE_ALARM, "detection": TARGET_DETECTION, "overhead": TARGET_OVERHEAD},
            "shifts": {"gain": GAIN, "blur_sigma": BLUR_SIGMA, "size_factor": SIZE_FACTOR, "foreign": FOREIGN_SHARE},
            "domains": [
                {
                    "name": d.name,
                    "model": d.model,
                    "baseline_images": d.baseline.images,
                    "baseline_embeddings": len(d.baseline.sample.embeddings),
                    "thresholds": d.baseline.thresholds,
                    "clean_pool": len(d.clean),
                    "notes": d.notes,
                    "seconds": d.seconds,
                }
                for d in domains
            ],  # fmt: skip
            "conditions": rows,
            "overhead": found,
            "seconds": round(time.perf_counter() - started, 1),
        }
        save_report(argparse.Namespace(**{**vars(args), "out": args.out / "drift_power.json"}), report)

    try:
        domains.append(synthetic_domain(work, args, neu))
        measure_domain(domains[-1], work, args, save)
        if args.int8 and (int8 := int8_domain(domains[-1], work)) is not None:
            domains.append(int8)  # a line PC's bundle: must not alarm on clean parts, must still see a shift
            measure_domain(int8, work, args, save, INT8_CONDITIONS)
        for imgsz in args.overhead_sizes if args.pairs else []:
            found.append(overhead(domains[0], work, args, imgsz))
            print(overhead_line(found[-1]), flush=True)
        if neu is not None:
            domains.append(neu_domain(work, args, neu))
            measure_domain(domains[-1], work, args, save)
            if args.int8 and (int8 := int8_domain(domains[-1], work)) is not None:
                domains.append(int8)
                measure_domain(int8, work, args, save, INT8_CONDITIONS)
        else:
            print(f"{args.neu}: no NEU-DET here; skipped", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    save()
    print()
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    for row in rows:
        print(table_row(row))
    print()
    for row in rows:
        if "review" in row:
            print(review_line(row["data"], row["review"]))
    for measured in found:
        print(overhead_line(measured))
    for domain in domains:
        for note in domain.notes:
            print(f"{domain.name}: {note}")
    print(f"wrote {args.out / 'drift_power.json'} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A defect screen calibrated on val and checked on a test split it never saw: per-class recall against its
target, and at image level the false-reject rate (good parts rejected) and the escape rate (defective parts let
through), each with its 95% interval, on both splits, at a false-reject budget.

    python scripts/screen_holdout.py --work screen-holdout            # draws, trains, calibrates, checks
    python scripts/screen_holdout.py --data ../shared/datasets/neu-det --images 1500 --imgsz 128 --batch 16
    python scripts/screen_holdout.py --model best.pt --data data.yaml # an existing model and a split with test

Without ``--data`` it draws synthetic parts, 20% of them defect-free, and trains YOLO11n on them. A ``--data``
without a test split (NEU-DET's own data.yaml has train and val only) is imported first, split 60/20/20.

The false-reject rate is **measured** on good images: the split's own background images, and ``--good DIR``
(defect-free images, split in two halves: one calibrates with val, the other is checked with test). Where there
is none (NEU-DET: every image holds a defect) it is **estimated** from the false detections outside every
labelled box on the defective images, and the table says so. Where it is measured, the estimate at the same
thresholds is reported beside it (one more prediction of each split), to see how far the estimate can be trusted.

Everything lands under ``--work``; nothing is tracked. The figures go to ``<work>/screen_holdout.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pipeline.data.dataset import DatasetError
from pipeline.data.importer import import_dataset
from pipeline.data.synth import synthesize
from pipeline.evaluation.evaluation import data_spec
from pipeline.evaluation.matching import match_split
from pipeline.inference.options import RunOptions
from pipeline.inference.screen import ClassPoint
from pipeline.screen.calibrate import LOW_CONF, MAX_FALSE_REJECT, calibrate
from pipeline.screen.check import check_screen
from pipeline.screen.false_rejects import false_rejects, reject_evidence
from pipeline.screen.screened_split import screened_split

SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}
SYNTHETIC_IMAGES = 600


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="screen-holdout", help="where data, the training and results go")
    parser.add_argument("--model", help="a trained .pt (default: train one on the data)")
    parser.add_argument(
        "--data", help="a data.yaml with val and test splits, or a dataset to import with one (e.g. NEU-DET's folder)"
    )
    parser.add_argument(
        "--images", type=int, help=f"synthetic images (default {SYNTHETIC_IMAGES}); of an imported --data: a subset"
    )
    parser.add_argument("--backgrounds", type=float, default=0.2, help="synthetic: share of defect-free images")
    parser.add_argument("--good", metavar="DIR", help="defect-free images: half calibrate with val, half check test")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--imgsz", type=int, default=64, help="training size (default: 64)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--target-recall", type=float, default=0.8)
    parser.add_argument(
        "--max-false-reject", type=float, default=MAX_FALSE_REJECT, metavar="R", help="the budget (default: 0.05)"
    )
    parser.add_argument("--prefer", choices=("budget", "recall"), default="budget")
    return parser.parse_args(argv)


def synthetic_data(work: Path, images: int, backgrounds: float) -> Path:
    drawn = synthesize(work / "drawn", images=images, seed=3, size=128, backgrounds=backgrounds)
    return import_dataset(drawn.data_yaml, "synthetic-screen", work / "data", splits=SPLITS, seed=0).data_yaml


def held_out_data(data: str, work: Path, images: int) -> Path:
    """``data`` itself when it has val and test splits; else imported (a subset of ``images``), split 60/20/20."""
    try:
        data_spec(data, "val")
        data_spec(data, "test")
        return Path(data)
    except DatasetError:
        pass
    print(f"{data}: no val and test splits; importing {images or 'all'} images, split {SPLITS}")
    return import_dataset(data, "screen-holdout", work / "data", splits=SPLITS, seed=0, images=images).data_yaml


def halved_good(good: str, work: Path) -> dict[str, Path]:
    """``good``'s images in two folders, alternating in sorted order: ``val`` calibrates, ``test`` checks."""
    from pipeline.inference.discover import iter_images

    halves = {"val": work / "good" / "val", "test": work / "good" / "test"}
    for folder in halves.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    paths = sorted(Path(p) for p in iter_images(Path(good)))
    if len(paths) < 2:
        raise ValueError(f"--good: {good}: at least 2 images (one for val, one for test), found {len(paths)}")
    for k, path in enumerate(paths):
        target = halves["val" if k % 2 == 0 else "test"] / f"{k:06d}_{path.name}"
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
    return halves


def trained_model(data: Path, work: Path, epochs: int, imgsz: int, batch: int) -> Path:
    from pipeline.config import build_config
    from pipeline.training import train

    config = build_config(
        {
            "data": {"path": str(data)},
            "model": {"weights": "yolo11n.yaml"},
            "train": {"epochs": epochs, "imgsz": imgsz, "batch": batch, "device": "cpu", "workers": 0,
                      "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0, "project": str(work / "runs")},
            "augment": {"mosaic": 0.0, "close_mosaic": 0},
            "tracking": {"enabled": False},
            "gradients": {"enabled": False},
        },
        "<screen_holdout>",
    )  # fmt: skip
    return train(config).best_weights


def estimated(model: str, data: Path, split: str, thresholds: dict[str, float]) -> dict[str, Any] | None:
    """The false-reject rate estimated at ``thresholds`` from the defective images of ``split`` alone (as calibrate
    estimates it without any good image), to set beside the measured one."""
    found, _, _ = screened_split(model, data, RunOptions(conf=LOW_CONF), split=split)
    evidence = reject_evidence(match_split(found.truth, found.detections), None)
    return asdict(false_rejects(evidence, thresholds)) if evidence is not None else None


def interval(found: dict[str, Any] | None, share: bool = True) -> str:
    if not found:
        return "-"
    if share:
        return f"{found['rate']:.1%} [{found['low'] + 0.0:.1%}, {found['high']:.1%}]"
    return f"{found['recall']:.3f} [{found['low']:.3f}, {found['high']:.3f}]"


def recall_of(point: ClassPoint | None) -> dict[str, Any] | None:
    if point is None or point.objects == 0:
        return None
    return {"recall": point.recall, "low": point.recall_low, "high": point.recall_high, "objects": point.objects}


def status(point: ClassPoint) -> str:
    """Why a class is below its target: no threshold reaches it, and/or the budget held it short."""
    if point.reached or point.objects == 0:
        return ""
    why = ["not reachable"] if "cannot be reached" in point.note else []
    return ", ".join(why + ["short"] * ("short:" in point.note)) or "not reached"


def rate_cell(found: dict[str, Any] | None, count: str) -> str:
    """``2.5% [0.1%, 13.2%] of 40``: a rate, its interval and the images it is over."""
    return "-" if not found else f"{interval(found)} of {found[count]}"


def table(figures: dict[str, Any]) -> list[str]:
    """The compact table: per class, then the two image-level rates, val beside test."""
    lines = [f"{'class':<16} {'threshold':>9}  {'val recall [95%]':<43} {'test recall [95%]'}"]
    for row in figures["classes"]:
        val = interval(row["val"], share=False) + (f" ({row['status']})" if row["status"] else "")
        lines.append(f"{row['class']:<16} {row['threshold']:>9.4g}  {val:<43} {interval(row['test'], share=False)}")
    rejects, escape = figures["false_reject"], figures["escape"]
    how = sorted({found["how"] for found in rejects.values() if found})
    over = "good" if how == ["measured"] else "defective"
    lines.append(f"{'image level':<27} {'val [95%]':<43} {'test [95%]'}")
    label = f"false reject ({'/'.join(how) or '-'})"
    lines.append(f"{label:<27} {rate_cell(rejects['val'], 'images'):<43} {rate_cell(rejects['test'], 'images')}"
                 f" ({over} images)")  # fmt: skip
    guess = figures.get("false_reject_estimated")
    if guess:
        val, test = rate_cell(guess["val"], "images"), rate_cell(guess["test"], "images")
        lines.append(f"{'  estimated instead':<27} {val:<43} {test} (defective images)")
    val, test = rate_cell(escape["val"], "defective"), rate_cell(escape["test"], "defective")
    lines.append(f"{'escape':<27} {val:<43} {test} (defective images)")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if args.data:
        data = held_out_data(args.data, work, args.images or 0)
    else:
        data = synthetic_data(work, args.images or SYNTHETIC_IMAGES, args.backgrounds)
    good = halved_good(args.good, work) if args.good else {"val": None, "test": None}
    model = args.model or str(trained_model(data, work, args.epochs, args.imgsz, args.batch))
    done = calibrate(
        model, data, split="val", target_recall=args.target_recall, good=good["val"],
        max_false_reject=args.max_false_reject, prefer=args.prefer, out=work / "calibration",
    )  # fmt: skip
    screen = done.screen
    checked = check_screen(model, data, screen, split="test", good=good["test"])
    rejects = {
        "val": screen.false_reject or None,
        "test": asdict(checked.false_reject) if checked.false_reject else None,
    }
    figures: dict[str, Any] = {
        "model": model,
        "data": str(data),
        "good": args.good or "",
        "target_recall": args.target_recall,
        "max_false_reject": args.max_false_reject,
        "prefer": args.prefer,
        "thresholds": screen.thresholds,
        "classes": [
            {
                "class": name,
                "threshold": point.threshold,
                "target": point.target,
                "status": status(point),
                "val": recall_of(point),
                "test": recall_of(checked.classes.get(name)),
            }
            for name, point in screen.classes.items()
        ],
        "false_reject": rejects,
        "escape": {"val": screen.escape or None, "test": checked.escape or None},
        "images": {"val": screen.images, "test": checked.images},
        "lines": {"val": done.lines, "test": checked.lines},
        "calibration_s": done.calibration_s,
        "inference_s": done.inference_s,
    }
    if any(found and found["how"] == "measured" for found in rejects.values()):
        figures["false_reject_estimated"] = {s: estimated(model, data, s, screen.thresholds) for s in ("val", "test")}

    print(f"{screen.describe()}; checked on test")
    print("\n".join(table(figures)))
    if not any(rejects.values()) or all(found["how"] == "estimated" for found in rejects.values() if found):
        print("no defect-free image in val or test and no --good: the false-reject rate is estimated from the false")
        print("detections outside every labelled box (a Poisson rate per defective image), not measured")
    notes = [f"val:  {line}" for line in done.lines if line.startswith("class ")]
    notes += [f"test: {line}" for line in checked.lines if line.startswith("class ") or "above what" in line]
    print("\n".join(notes))
    print(f"calibration: {done.calibration_s:.1f} s beyond the model's inference ({done.inference_s:.1f} s)")
    (work / "screen_holdout.json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    print(f"wrote {work / 'screen_holdout.json'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:  # the library's one-line errors
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

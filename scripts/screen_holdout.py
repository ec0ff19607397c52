"""A defect screen calibrated on val and checked on a test split it never saw, on synthetic parts with
defect-free ones among them: per-class recall against its target, and the image-level catch and
false-reject rates on both splits.

    python scripts/screen_holdout.py --work screen-holdout            # draws, trains, calibrates, checks
    python scripts/screen_holdout.py --model best.pt --data data.yaml # an existing model and a split with test

Everything lands under ``--work``; nothing is tracked. The figures go to ``<work>/screen_holdout.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline.data.importer import import_dataset
from pipeline.data.synth import synthesize
from pipeline.selection.calibration import calibrate
from pipeline.selection.screen_check import check_screen

SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="screen-holdout", help="where data, the training and results go")
    parser.add_argument("--model", help="a trained .pt (default: train one on the synthetic set)")
    parser.add_argument("--data", help="a data.yaml with val and test splits (default: the synthetic set)")
    parser.add_argument("--images", type=int, default=600, help="synthetic images (default: 600)")
    parser.add_argument("--backgrounds", type=float, default=0.2, help="share of defect-free images (0.2)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--target-recall", type=float, default=0.8)
    return parser.parse_args(argv)


def synthetic_data(work: Path, images: int, backgrounds: float) -> Path:
    drawn = synthesize(work / "drawn", images=images, seed=3, size=128, backgrounds=backgrounds)
    return import_dataset(drawn.data_yaml, "synthetic-screen", work / "data", splits=SPLITS, seed=0).data_yaml


def trained_model(data: Path, work: Path, epochs: int) -> Path:
    from pipeline.config import build_config
    from pipeline.train import train

    config = build_config(
        {
            "data": {"path": str(data)},
            "model": {"weights": "yolo11n.yaml"},
            "train": {"epochs": epochs, "imgsz": 64, "batch": 8, "device": "cpu", "workers": 0,
                      "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0, "project": str(work / "runs")},
            "augment": {"mosaic": 0.0, "close_mosaic": 0},
            "tracking": {"enabled": False},
            "gradients": {"enabled": False},
        },
        "<screen_holdout>",
    )  # fmt: skip
    return train(config).best_weights


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = Path(args.data) if args.data else synthetic_data(work, args.images, args.backgrounds)
    model = args.model or str(trained_model(data, work, args.epochs))
    done = calibrate(model, data, split="val", target_recall=args.target_recall, out=work / "calibration")
    checked = check_screen(model, data, done.screen, split="test")
    print(f"calibrated on val (recall >= {args.target_recall}); checked on test")
    print("\n".join(checked.table()))
    print("val:  " + "; ".join(done.lines))
    print("test: " + "; ".join(checked.lines))
    print(f"calibration: {done.calibration_s:.1f} s beyond the model's inference ({done.inference_s:.1f} s)")
    figures = {
        "model": model,
        "data": str(data),
        "target_recall": args.target_recall,
        "classes": checked.rows(),
        "images": {"val": done.screen.images, "test": checked.images},
        "calibration_s": done.calibration_s,
        "inference_s": done.inference_s,
    }
    (work / "screen_holdout.json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:  # the library's one-line errors
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

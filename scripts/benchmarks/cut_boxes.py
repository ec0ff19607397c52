"""Benchmark: a box a tile's border cuts below ``min_visible``: masked out of the tile, or ignored by the loss.

``data.tile.cut_boxes`` decides what becomes of such a part: ``mask`` fills it with the tile's mean colour
(the pixels are gone), ``ignore`` keeps the pixels and the classification loss leaves the anchors on it out
of its background (`pipeline.training.callbacks.ignore_regions`). This trains the same tiled YOLO11n both
ways on the same synthetic boards (`small_defects.py`'s data, training and scoring), paired per seed (the
boards' and the training's), the two trainings of a seed in alternating order. Each is scored from
``last.pt`` on the whole val boards through ``predict``, tiled as trained: mAP50 and class-agnostic recall
at score >= ``--recall-conf`` per defect size bucket. The report gives each way's mean and range over the
seeds and the paired difference (ignore - mask), with the cut parts' count from the tile card: the
question only matters in proportion to how many boxes the tiles cut.

    python scripts/benchmarks/cut_boxes.py                  # 3 seeds, overlap 0.2 and 0: about 40 min on 2 cores
    python scripts/benchmarks/cut_boxes.py --quick          # a smoke run (~3 min)
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the scripts package

import numpy as np  # noqa: E402

from scripts.benchmarks.common import quiet_ultralytics, save_report, work_folder  # noqa: E402
from scripts.benchmarks.small_defects import (  # noqa: E402
    BUCKETS,
    Arm,
    make_boards,
    predict_arm,
    read_names,
    read_truth,
    score,
    train_arm,
)

WAYS = ("mask", "ignore")
COLUMNS = ("map50", *(name for name, _, _ in BUCKETS), "all")


def one_training(way: str, boards: Path, work: Path, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    arm = Arm(f"tiles-{way}-o{args.overlap:g}", args.model, True, args.tile, cut_boxes=way)
    weights, train_s = train_arm(arm, boards, work, args.tile_epochs, args, seed=seed)
    card = json.loads((weights.parent.parent / "data" / "card.json").read_text())
    counts = card["tiles"]["splits"]["train"]
    val = boards.parent / "images" / "val"
    found, predict_s, _ = predict_arm(weights, val, work / f"predict-{arm.name}-{seed}", args)
    scored = score(found, read_truth(val), len(read_names(boards)), args.recall_conf)
    return {
        "way": way,
        "seed": seed,
        "overlap": args.overlap,
        "map50": scored["map50"],
        **{k: scored["recall"][k] for k in COLUMNS[1:]},
        "boxes_kept": counts["boxes_kept"],
        "cut_parts": counts["masked"] + counts.get("ignored", 0),
        "tiles": counts["tiles"],
        "train_s": round(train_s, 1),
        "predict_s": round(predict_s, 1),
    }


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per overlap: each way's mean, min and max per column, and the paired difference ignore - mask per seed."""
    out: dict[str, Any] = {}
    for overlap in dict.fromkeys(r["overlap"] for r in results):
        mine = [r for r in results if r["overlap"] == overlap]
        ways = {
            way: {
                k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
                for k in COLUMNS
                if (v := [r[k] for r in mine if r["way"] == way and not math.isnan(r[k])])
            }
            for way in WAYS
        }
        pairs = {}
        for seed in sorted({r["seed"] for r in mine}):
            by_way = {r["way"]: r for r in mine if r["seed"] == seed}
            if set(WAYS) <= set(by_way):
                pairs[seed] = {k: by_way["ignore"][k] - by_way["mask"][k] for k in COLUMNS}
        difference = {
            k: {"mean": float(np.mean(v)), "min": float(np.min(v)), "max": float(np.max(v))}
            for k in COLUMNS
            if (v := [p[k] for p in pairs.values() if not math.isnan(p[k])])
        }
        cut = [r["cut_parts"] / max(1, r["boxes_kept"]) for r in mine]
        out[f"overlap {overlap:g}"] = {
            "ways": ways,
            "ignore_minus_mask": difference,
            "seeds": len(pairs),
            "cut_parts_per_kept_box": round(float(np.mean(cut)), 3) if cut else None,
        }
    return out


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = ["| overlap | seed | way | mAP50 | recall <16 | 16-32 | >32 | all | cut parts / kept boxes | train s |"]
    lines.append("|" + "---|" * 10)
    for r in results:
        cells = [f"{r['overlap']:g}", str(r["seed"]), r["way"], *(f"{r[k]:.3f}" for k in COLUMNS)]
        cells += [f"{r['cut_parts']} / {r['boxes_kept']}", f"{r['train_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda t: [int(v) for v in t.split(",")], default=[1024])
    parser.add_argument("--boards", type=int, default=64, help="boards per seed, a quarter of them val")
    parser.add_argument("--defect-size", type=lambda t: tuple(int(v) for v in t.split("-")), default=(8, 40))
    parser.add_argument("--seeds", type=int, default=3, help="paired trainings per overlap (boards and training)")
    parser.add_argument("--tile", type=int, default=320, help="tile side in px, trained at this size")
    parser.add_argument(
        "--overlaps",
        default="0.2,0",
        help="tile overlaps, comma list (0: a cut box is never whole in a neighbouring tile)",
    )
    parser.add_argument("--tile-epochs", type=int, default=3)
    parser.add_argument("--model", default="yolo11n.yaml")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr0", type=float, default=0.002)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--predict-conf", type=float, default=0.01)
    parser.add_argument("--recall-conf", type=float, default=0.1)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 12 boards, 1 seed, 1 epoch, overlap 0")
    parser.add_argument("--keep", type=Path, help="keep the work folder here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "cut_boxes.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.boards, args.seeds, args.tile_epochs, args.overlaps = 12, 1, 1, "0"
    args.overlap_list = [float(v) for v in args.overlaps.split(",") if v.strip()]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_ultralytics()
    work = work_folder(args.keep, "cut-boxes-")
    started = time.perf_counter()
    results: list[dict[str, Any]] = []
    try:
        for seed in range(args.seeds):
            boards = make_boards(work / f"seed{seed}", args.sizes, args.boards, seed, args.defect_size)
            for overlap in args.overlap_list:
                args.overlap = overlap
                for way in WAYS if seed % 2 == 0 else reversed(WAYS):  # alternate which trains first
                    results.append(one_training(way, boards, work / f"seed{seed}", seed, args))
                    print(table(results)[-1], flush=True)
                    report = {
                        "benchmark": "cut_boxes",
                        "baseline": "mask: data.tile.cut_boxes' default",
                        "results": results,
                        "summary": summary(results),
                        "seconds": round(time.perf_counter() - started, 1),
                    }
                    save_report(args, report)  # after every training: a run stopped early keeps what it measured
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print("\n".join(table(results)))
    print(json.dumps(summary(results), indent=1))
    print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

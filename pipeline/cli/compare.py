"""``compare``: training runs side by side."""

from __future__ import annotations

import argparse
import os

from pipeline.cli.common import TRACKING_HELP
from pipeline.comparison import compare
from pipeline.destinations import add_wait_option


def cmd_compare(args: argparse.Namespace) -> int:
    done = compare(
        args.experiment,
        filter=args.filter,
        runs=args.runs,
        parent=args.parent,
        sort=args.sort,
        ascending=args.ascending,
        out=args.out,
        tracking_uri=args.tracking_uri,
    )
    print(done.text)
    print()
    params = ", ".join(done.table.params) or "none (every param is the same)"
    print(f"{len(done.runs)} run{'s' if len(done.runs) != 1 else ''}; params that differ: {params}")
    if done.best is not None:
        print(f"first by {done.sort}: {done.best['run']} ({done.best['run_id']})")
    if done.caution:
        print(done.caution)
    if done.files:
        folder = done.files[0].parent
        print(f"wrote: {os.path.join(folder, '')} ({', '.join(p.name for p in done.files)})")  # never two separators
        print(f"report: {folder / 'report.html'}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("compare", help="training runs side by side: differing params, mAP, per-class AP, charts")
    p.add_argument("--experiment", default="", help="compare the training runs of this experiment")
    p.add_argument(
        "--filter",
        default="",
        help="MLflow search filter, e.g. \"metrics.mAP50 > 0.5 and params.`model.freeze` = '10'\"",
    )
    p.add_argument("--runs", nargs="+", default=[], metavar="RUN_ID", help="compare these runs")
    p.add_argument("--parent", default="", help="compare the children of this sweep parent run")
    p.add_argument("--sort", default="mAP50_95.best", help="a column or metric to sort by (default: mAP50_95.best)")
    p.add_argument("--ascending", action="store_true", help="lowest first (for losses and times)")
    p.add_argument("--out", help="write runs.csv, runs.md, four charts and report.html into this folder")
    p.add_argument("--tracking-uri", default="", help=TRACKING_HELP)
    add_wait_option(p)
    p.set_defaults(func=cmd_compare)

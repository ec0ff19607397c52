"""``promote``: a run's model into the MLflow registry, an alias pointed at it, gated on an evaluation if asked."""

from __future__ import annotations

import argparse
import sys

from pipeline.cli.common import TRACKING_HELP
from pipeline.data.dataset import SPLITS
from pipeline.promotion.gates import format_table
from pipeline.promotion.promotion import PromoteError, Promotion, promote


def cmd_promote(args: argparse.Namespace) -> int:
    if args.target == "best" and not (args.experiment or args.parent):
        raise PromoteError("promote best: --experiment (or --parent) names the runs to choose from")
    done = promote(
        args.target,
        experiment=args.experiment,
        parent=args.parent,
        name=args.name,
        alias=args.alias,
        metric=args.metric,
        lowest=args.lowest,
        tracking_uri=args.tracking_uri,
        data=args.data or "",
        split=args.split,
        gates=args.gate,
        no_regress=args.no_regress,
        dry_run=args.dry_run,
        device=args.device,
        good=args.good,
        screen=args.screen,
    )
    value = "no value" if done.value is None else f"{done.value:.4f}"
    chosen = f"best of {len(done.compared)} runs" if args.target == "best" else "as named"
    if done.decision is not None:
        _print_decision(done, args)
    if done.dry_run:
        verdict = "would be accepted" if done.accepted else "would be refused"
        print(f"dry run:    run {done.run_id} ({done.metric} {value}, {chosen}) {verdict}; nothing registered")
        for line in done.decision.failures if done.decision else []:
            print(line, file=sys.stderr)
        return 0 if done.accepted else 1
    print(f"registered {done.name} version {done.version} from run {done.run_id} ({done.metric} {value}, {chosen})")
    if not done.accepted:
        stays = f"stays on version {done.previous}" if done.previous else "not set"
        print(f"refused:    {done.uri} {stays}; version {done.version} is tagged with why")
        for line in done.decision.failures:
            print(line, file=sys.stderr)
        return 1
    print(f"alias:      {done.uri} -> version {done.version}")
    print(f"predict:    yolo-pipeline predict FOLDER --model {done.uri} --out DIR")
    return 0


def _print_decision(done: Promotion, args: argparse.Namespace) -> None:
    """The side-by-side table of a gated promotion and its verdict."""
    decision = done.decision
    current = done.compared_with if decision.compared else "none"
    print(f"candidate:  runs:/{done.run_id}/model   current: {current} ({done.uri})   on {args.data} [{args.split}]")
    print(format_table(decision.rows, current=f"v{done.previous}" if done.previous else "current"))
    if not decision.compared:
        print(
            f"no model behind {done.uri} yet: nothing to compare with"
            + (", nothing to regress against" * bool(args.no_regress is not None))
        )
    failed = len(decision.failures)
    said = decision.reason if decision.accepted else f"{failed} check{'s' * (failed != 1)} failed, one line each below"
    print(f"decision:   {'accepted' if decision.accepted else 'refused'} ({said})")


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("promote", help="register a run's model in the MLflow registry and point an alias at it")
    p.add_argument("target", help="a run id, or best: the finished run of --experiment with the best --metric")
    p.add_argument("--experiment", default="", help="the experiment whose runs `best` chooses from")
    p.add_argument("--parent", default="", help="`best` chooses among the children of this sweep parent run")
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--alias", default="champion")
    p.add_argument("--metric", default="best.mAP50_95", help="what `best` ranks by (default: best.mAP50_95)")
    p.add_argument("--lowest", action="store_true", help="`best` is the lowest value (for losses)")
    p.add_argument("--data", help="gate the promotion: evaluate the candidate and the alias's model on this dataset")
    p.add_argument("--split", default="val", choices=SPLITS, help="the split --data is evaluated on (default: val)")
    p.add_argument(
        "--gate",
        action="append",
        default=[],
        metavar="METRIC>=VALUE",
        help="refuse unless the candidate meets it, e.g. 'recall.scratch>=0.95', 'AP50>=0.6' (>=, >, <=, <; repeat)",
    )
    p.add_argument(
        "--no-regress",
        type=float,
        metavar="MARGIN",
        help="refuse when the overall mAP50 or any class's AP50 is more than MARGIN below the alias's model",
    )
    p.add_argument(
        "--good",
        metavar="DIR",
        help="--gate false_reject: defect-free images it is measured on (with --split's background images)",
    )
    p.add_argument(
        "--screen",
        metavar="FILE",
        help="--gate false_reject: the screen.json whose thresholds it is measured at (default: stored with the run)",
    )
    p.add_argument("--dry-run", action="store_true", help="evaluate and decide, register nothing (exit 1: refused)")
    p.add_argument("--device", default="auto", help="where --data is evaluated (default: auto)")
    p.add_argument("--tracking-uri", default="", help=TRACKING_HELP)
    p.set_defaults(func=cmd_promote)

"""``sweep``: a grid, random or Optuna search as child runs of one parent run, here or with Ray Tune."""

from __future__ import annotations

import argparse

from pipeline.cli.common import TRACKING_HELP, score
from pipeline.config import ConfigError
from pipeline.destinations import add_wait_option
from pipeline.sweeps.ray_sweep import RayOptions, ray_sweep, resume_sweep  # Ray itself loads only when a sweep runs
from pipeline.sweeps.sweep import sweep


def _report(child: object) -> None:
    """One line per finished child, as it finishes."""
    if child.status == "FINISHED":
        outcome = f"best.mAP50_95 {score(child.score)}"
    else:
        outcome = "stopped early (asha)" if child.status == "KILLED" else child.status
    print(f"[{child.index + 1}] {' '.join(child.overrides)}: {outcome}  (run {child.run_id or '-'})", flush=True)
    if child.error:
        print(f"    {child.error}", flush=True)


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.resume:
        result = resume_sweep(args.resume, args.tracking_uri, on_child=_report)
    elif not args.config:
        raise ConfigError("sweep: name the experiment YAML (or --resume PARENT_RUN)")
    else:
        search = dict(search=args.search, space=args.space, samples=args.samples, seed=args.seed)
        ray_only = [
            flag for flag, given in (("--early-stop", args.early_stop), ("--parallel", args.parallel != 1)) if given
        ]
        if args.engine == "local" and (ray_only or args.search == "optuna"):
            what = ", ".join(ray_only or ["--search optuna"])
            raise ConfigError(f"sweep: {what} needs --engine ray (the local engine trains one child after another)")
        if args.engine == "ray":
            options = RayOptions(
                parallel=args.parallel,
                cpus_per_trial=args.cpus_per_trial,
                gpus_per_trial=args.gpus_per_trial,
                early_stop=args.early_stop,
                metric=args.metric,
                grace=args.grace,
            )
            result = ray_sweep(args.config, args.grid, args.overrides, args.name, _report, options=options, **search)
        else:
            result = sweep(args.config, args.grid, args.overrides, name=args.name, on_child=_report, **search)
    print()
    stopped = f", {len(result.stopped)} stopped early" if result.stopped else ""
    print(
        f"sweep: {len(result.finished)} of {len(result.children)} children finished, {len(result.failed)} failed{stopped}"
    )
    if (best := result.best) is not None:
        print(f"best:  {' '.join(best.overrides)} (run {best.run_id}, best.mAP50_95 {score(best.score)})")
    print(f"MLflow parent run: {result.parent_run_id} (experiment {result.experiment}, {result.tracking_uri})")
    print(f"compare: yolo-pipeline compare --parent {result.parent_run_id} --out compare/")
    return 1 if result.failed else 0


def register(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "sweep",
        help="train a grid, random or Optuna search as child runs of one parent run (in this process, or with Ray Tune)",
    )
    p.add_argument("config", nargs="?", default="", help="the experiment YAML every child starts from")
    p.add_argument("overrides", nargs="*", help="section.key=value for every child, e.g. train.epochs=3")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="a key and its values, e.g. model.freeze=null,10 (repeat for more keys; a choice in random/optuna)",
    )
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=FUNC(...)",
        help="a range for random/optuna: uniform(a,b), loguniform(a,b), quniform(a,b,q), randint(a,b), choice(x,y)",
    )
    p.add_argument("--search", choices=["grid", "random", "optuna"], default="grid", help="how trials are chosen")
    p.add_argument("--samples", type=int, default=4, help="trials of a random or Optuna search (default 4)")
    p.add_argument(
        "--seed", type=int, default=0, help="the random or Optuna search's seed (the same seed, the same draws)"
    )
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="local: one child after another here")
    p.add_argument("--parallel", type=int, default=1, help="ray: trials at a time (default 1)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="ray: CPUs each trial reserves (default 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="ray: GPUs each trial reserves, e.g. 0.25")
    p.add_argument("--early-stop", choices=["asha"], default="", help="ray: stop weak trials between epochs")
    p.add_argument(
        "--metric", default="mAP50_95", help="what ASHA and Optuna follow (default mAP50_95; losses: lowest)"
    )
    p.add_argument("--grace", type=int, default=1, help="epochs every trial trains before ASHA may stop it")
    p.add_argument("--resume", default="", metavar="PARENT_RUN", help="continue this Ray sweep after a kill")
    p.add_argument("--tracking-uri", default="", help=f"with --resume: {TRACKING_HELP}")
    p.add_argument("--name", default="", help="the parent run's name (default: sweep-<config name>)")
    add_wait_option(p)
    p.set_defaults(func=cmd_sweep)

"""The gradient doctor's failure zoo: small deliberately broken trainings beside healthy ones, and what it named.

Each case is a real training (the pipeline's trainer, gradients recorded every step, no tracking) with one
fault put in, or none. A fault is injected the way it happens: a setting (a learning rate far off, a
frozen backbone, data whose objects are all small) or a hook in backpropagation (a block whose gradient is
cut to zero, a NaN in one layer's gradient, one step whose gradient is a million times too big, gradients
shrinking block by block towards the stem). The doctor then reads only what it always reads.

A learning rate far too high is tried with SGD, Adam and AdamW, with and without warmup: some of these
trainings blow up inside their first epoch and then recover (the loss falls in every later epoch), one never
shows it in the loss at all; each must be named all the same. Beside them the healthy runs with the largest
steps a sane setting takes (AdamW at ultralytics' auto rate with no warmup, an explicit AdamW whose bias
warmup starts at lr 0.1, SGD at ten times its default rate), which must not be.

A case passes when every cause it expects is named (as warning or error; ``idle-level`` and ``frozen`` are
info by definition) by epoch 3, and nothing it forbids is: a healthy run must raise no warning or error
at all, a frozen backbone must not be called vanishing or dead. The table: case, the cause injected, the
causes named (with severity and first epoch), pass or fail; then the zoo's accuracy.

    python scripts/benchmarks/diagnosis_zoo.py [--cases healthy-yolo11n,dead-layer] [--epochs 3] [--imgsz 128]
        [--images 160] [--neu-det ../shared/datasets/neu-det] [--out benchmark-results/diagnosis_zoo.json]

Without a GPU the AMP cases (amp-overflow) cannot run: ultralytics trains in fp32 on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing the tests package

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.synth import synthesize  # noqa: E402
from pipeline.messages import first_line  # noqa: E402
from pipeline.training.diagnosis import (  # noqa: E402
    DEAD_LAYER,
    DETACHED,
    DIVERGING,
    EXPLODING,
    FROZEN,
    IDLE_LEVEL,
    NONFINITE,
    SEVERITIES,
    STALLED,
    VANISHING,
)
from pipeline.training.run import prepare_training, session_env  # noqa: E402
from scripts.benchmarks.common import benchmark_config, quiet_ultralytics, save_report  # noqa: E402

DETECT_BY = 3  # a fault must be named within this many epochs
INFO_CAUSES = {IDLE_LEVEL, FROZEN, DETACHED}  # facts, said as info: naming them is enough
Fault = Callable[[Any], None]  # given the trainer at on_train_start (model and optimizer built)


# ---- faults, put into backpropagation ------------------------------------------------------------------------


def _blocks(trainer: Any) -> Any:
    from ultralytics.utils.torch_utils import unwrap_model

    return unwrap_model(trainer.model).model  # the nn.Sequential of blocks model.0 ... model.N


def zero_gradient(block: int) -> Fault:
    """Every gradient of block ``block``'s parameters is replaced by zeros: a layer cut off from the loss."""

    def inject(trainer: Any) -> None:
        for p in _blocks(trainer)[block].parameters():
            p.register_hook(torch.zeros_like)

    return inject


def nan_once(block: int, epoch: int, step: int = 3) -> Fault:
    """One NaN in the gradient of block ``block``'s first weight, at backward pass ``step`` of ``epoch`` (1-based)."""

    def inject(trainer: Any) -> None:
        weight = next(_blocks(trainer)[block].parameters())
        seen = {"passes": 0}

        def hook(grad: torch.Tensor) -> torch.Tensor:
            if trainer.epoch + 1 != epoch:
                return grad
            seen["passes"] += 1
            if seen["passes"] != step:
                return grad
            grad = grad.clone()
            grad.view(-1)[0] = math.nan
            return grad

        weight.register_hook(hook)

    return inject


def spike_once(block: int, epoch: int, factor: float = 1e6, step: int = 3) -> Fault:
    """One backward pass of ``epoch`` whose gradient in block ``block`` is ``factor`` times too big (an outlier)."""

    def inject(trainer: Any) -> None:
        seen = {"passes": 0}
        first = next(_blocks(trainer)[block].parameters())

        def count(grad: torch.Tensor) -> torch.Tensor:  # the first parameter's hook counts the passes of the epoch
            if trainer.epoch + 1 == epoch:
                seen["passes"] += 1
            return grad

        def scale(grad: torch.Tensor) -> torch.Tensor:
            return grad * factor if trainer.epoch + 1 == epoch and seen["passes"] == step else grad

        first.register_hook(count)
        for p in _blocks(trainer)[block].parameters():
            p.register_hook(scale)

    return inject


def shrink_towards_stem(factor: float = 0.01, blocks: int = 10) -> Fault:
    """The gradient leaving each of the first ``blocks`` blocks towards the stem is scaled by ``factor``: after
    ten blocks the stem sees 1e-20 of it. Gradients that decay with depth, the true vanishing."""

    def inject(trainer: Any) -> None:
        def hook(module: torch.nn.Module, grad_input: tuple, grad_output: tuple) -> tuple:
            return tuple(g * factor if g is not None else None for g in grad_input)

        for block in list(_blocks(trainer))[:blocks]:
            block.register_full_backward_hook(hook)

    return inject


# ---- data -------------------------------------------------------------------------------------------------------


def small_defects(out: Path, images: int, size: int, seed: int = 0) -> Path:
    """A YOLO dataset of tiny dark pits (3-7 px) on a grainy surface: every object belongs to stride 8."""
    rng = np.random.default_rng(seed)
    n_val = max(1, images // 5)
    for index in range(images):
        split = "val" if index >= images - n_val else "train"
        surface = rng.normal(120, 6, (size, size)).astype(np.float32)
        lines = []
        for _ in range(int(rng.integers(1, 5))):
            radius = float(rng.uniform(1.5, 3.5))
            cx, cy = rng.uniform(0.1, 0.9, 2) * size
            cv2.circle(surface, (round(cx), round(cy)), round(radius), 40.0, thickness=-1)
            side = 2 * round(radius) + 1
            lines.append(f"0 {cx / size:.6f} {cy / size:.6f} {side / size:.6f} {side / size:.6f}")
        for kind in ("images", "labels"):
            (out / kind / split).mkdir(parents=True, exist_ok=True)
        image = cv2.cvtColor(np.clip(surface, 0, 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
        cv2.imwrite(str(out / "images" / split / f"pits_{index:05d}.png"), image)
        (out / "labels" / split / f"pits_{index:05d}.txt").write_text("".join(f"{line}\n" for line in lines))
    (out / "data.yaml").write_text("train: images/train\nval: images/val\nnames:\n  0: pit\n")
    return out / "data.yaml"


def neu_det_subset(source: Path, out: Path, images: int, seed: int = 0) -> Path:
    """``images`` NEU-DET training images, a fifth of them held out for validation, copied into YOLO layout."""
    import yaml

    pictures = sorted((source / "images" / "train").glob("*.jpg"))
    random.Random(seed).shuffle(pictures)
    n_val = max(1, images // 5)
    for index, picture in enumerate(pictures[:images]):
        split = "val" if index < n_val else "train"
        label = source / "labels" / "train" / f"{picture.stem}.txt"
        for kind, src in (("images", picture), ("labels", label)):
            (out / kind / split).mkdir(parents=True, exist_ok=True)
            if src.exists():
                shutil.copy2(src, out / kind / split / src.name)
    names = yaml.safe_load((source / "data.yaml").read_text(encoding="utf-8"))["names"]
    (out / "data.yaml").write_text(yaml.safe_dump({"train": "images/train", "val": "images/val", "names": names}))
    return out / "data.yaml"


# ---- cases ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    injected: str  # the cause put in, "none" for a healthy run
    expect: frozenset[str] = frozenset()  # every one must be named by epoch DETECT_BY ...
    expect_any: frozenset[str] = frozenset()  # ... and at least one of these (a fault with more than one face)
    forbid: frozenset[str] | None = None  # never named; None: no warning or error other than the expected ones
    data: str = "synth"  # synth | small | neu-det
    model: str = "yolo11n.yaml"
    train: dict[str, Any] = field(default_factory=dict)
    model_section: dict[str, Any] = field(default_factory=dict)
    fault: Fault | None = None

    @property
    def healthy(self) -> bool:
        return self.injected == "none"


SGD = {"optimizer": "SGD", "lr0": 0.01}
NO_WARMUP = {"warmup_epochs": 0}
CASES: tuple[Case, ...] = (
    Case("healthy-yolo11n", "none"),
    Case("healthy-yolo11n-sgd", "none", train=SGD),
    Case("healthy-yolo26n", "none", expect=frozenset({DETACHED}), model="yolo26n.yaml"),
    Case("healthy-neu-det", "none", data="neu-det"),
    # Healthy, with the largest steps a sane setting takes (median ||dw||/||w|| up to 2e-3, 1.1e-2 and 8e-4 at 128 px):
    # AdamW at the rate ultralytics' auto picks, from the first step; an explicit AdamW, whose bias warmup starts at
    # lr 0.1 (ultralytics' warmup_bias_lr; auto starts it at 0); SGD at ten times its default rate, with warmup.
    Case("healthy-adamw-auto", "none", train={"optimizer": "auto", **NO_WARMUP}),
    Case("healthy-adamw-warmup", "none", train={"optimizer": "AdamW", "lr0": 0.002}),  # auto's rate for one class
    Case("healthy-sgd-warmup", "none", train={"optimizer": "SGD", "lr0": 0.1}),
    Case("small-objects", IDLE_LEVEL, expect=frozenset({IDLE_LEVEL}), data="small"),
    Case(
        "frozen-backbone",
        FROZEN,
        expect=frozenset({FROZEN}),
        forbid=frozenset({VANISHING, DEAD_LAYER}),
        model_section={"freeze": 10},
    ),
    Case(
        "lr-far-too-high",
        DIVERGING,
        expect_any=frozenset({DIVERGING, NONFINITE, EXPLODING}),
        train={"optimizer": "SGD", "lr0": 1.0, "warmup_epochs": 0},  # ultralytics allows at most 1
    ),
    # Adam's steps are about lr in size whatever the gradient: at lr0 0.1-0.3 without warmup the loss blows up inside
    # epoch 1 (15 -> 69, 15 -> 295 in one step) and comes back down in every epoch after it (measured at 128 px).
    Case(
        "lr-far-too-high-adam",
        DIVERGING,
        expect=frozenset({DIVERGING}),
        train={"optimizer": "Adam", "lr0": 0.1, **NO_WARMUP},
    ),
    Case(
        "lr-far-too-high-adamw",
        DIVERGING,
        expect=frozenset({DIVERGING}),
        train={"optimizer": "AdamW", "lr0": 0.3, **NO_WARMUP},
    ),
    # ... with warmup the loss falls in every epoch (13.7, 11.6, 10.8) while the steps rewrite the weights (0.14-0.2).
    Case(
        "lr-far-too-high-adam-warmup", DIVERGING, expect=frozenset({DIVERGING}), train={"optimizer": "Adam", "lr0": 0.5}
    ),
    # SGD at the highest rate the config allows, with warmup: steps beyond healthy once the warmup has ramped up.
    Case(
        "lr-far-too-high-sgd-warmup", DIVERGING, expect=frozenset({DIVERGING}), train={"optimizer": "SGD", "lr0": 1.0}
    ),
    Case(
        "lr-far-too-low",
        STALLED,
        expect=frozenset({STALLED}),
        train={"optimizer": "SGD", "lr0": 1e-9, "warmup_epochs": 0},
    ),
    Case("dead-layer", DEAD_LAYER, expect=frozenset({DEAD_LAYER}), fault=zero_gradient(block=6)),
    Case("nan-in-one-layer", NONFINITE, expect=frozenset({NONFINITE}), fault=nan_once(block=8, epoch=2)),
    Case("gradient-spike", EXPLODING, expect=frozenset({EXPLODING}), train=SGD, fault=spike_once(block=9, epoch=2)),
    Case("vanishing-with-depth", VANISHING, expect=frozenset({VANISHING}), fault=shrink_towards_stem()),
)


# ---- running one -----------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: str
    injected: str
    named: dict[str, dict[str, Any]]  # cause -> severity, first epoch
    passed: bool
    verdict: str  # why it passed or failed, in words
    seconds: float
    health: str
    failure: str | None = None  # how the training ended, when it did not finish


def dataset_for(case: Case, work: Path, args: argparse.Namespace) -> Path:
    folder = work / "data" / case.data
    if (folder / "data.yaml").exists():
        return folder / "data.yaml"
    if case.data == "small":
        return small_defects(folder, args.images, args.imgsz)
    if case.data == "neu-det":
        return neu_det_subset(args.neu_det, folder, args.images)
    return synthesize(folder, images=args.images, seed=0, size=args.imgsz).data_yaml


def train_case(case: Case, data_yaml: Path, work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], str | None]:
    """Train ``case`` and return its diagnosis.json and, if the training stopped early, why."""
    from pipeline.training.trainer import PipelineTrainer

    config = benchmark_config(
        data_yaml,
        work / case.name,
        train={"epochs": args.epochs, "imgsz": args.imgsz, "device": args.device, "plots": False, **case.train},
        model={"weights": case.model, **case.model_section},
        gradients={"heatmaps": False},
        tracking={"enabled": False},
    )
    prepared = prepare_training(config)
    failure = None
    with session_env(prepared.session_file):
        try:
            trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
            if case.fault is not None:
                trainer.add_callback("on_train_start", case.fault)
            trainer.train()
        except Exception as exc:  # noqa: BLE001 - a broken training may end in an error; the diagnosis is what counts
            failure = f"{type(exc).__name__}: {first_line(exc)}"
    diagnosis_file = prepared.session.save_dir / "gradients" / "diagnosis.json"
    diagnosis = json.loads(diagnosis_file.read_text(encoding="utf-8")) if diagnosis_file.exists() else {}
    return diagnosis, failure


def judge(case: Case, diagnosis: dict[str, Any]) -> tuple[bool, str, dict[str, dict[str, Any]]]:
    """Whether the doctor named what ``case`` put in (by epoch DETECT_BY) and nothing it should not have."""
    named: dict[str, dict[str, Any]] = {}
    for epoch in sorted(diagnosis.get("epochs", {}), key=int):
        for finding in diagnosis["epochs"][epoch]:
            entry = named.setdefault(finding["cause"], {"severity": finding["severity"], "first_epoch": int(epoch)})
            if SEVERITIES.index(finding["severity"]) > SEVERITIES.index(entry["severity"]):
                entry["severity"] = finding["severity"]

    def seen(cause: str) -> bool:
        entry = named.get(cause)
        return (
            bool(entry) and entry["first_epoch"] <= DETECT_BY and (cause in INFO_CAUSES or entry["severity"] != "info")
        )

    missing = sorted(cause for cause in case.expect if not seen(cause))
    if case.expect_any and not any(seen(cause) for cause in case.expect_any):
        missing.append(" or ".join(sorted(case.expect_any)))
    allowed = case.expect | case.expect_any
    alarms = sorted(
        cause
        for cause, entry in named.items()
        if (cause in case.forbid if case.forbid is not None else entry["severity"] != "info" and cause not in allowed)
    )
    if missing:
        return False, f"not named: {', '.join(missing)}", named
    if alarms:
        return False, f"false alarm: {', '.join(alarms)}", named
    return True, "no warning or error" if case.healthy else "named", named


def run_case(case: Case, work: Path, args: argparse.Namespace) -> Outcome:
    start = time.perf_counter()
    diagnosis, failure = train_case(case, dataset_for(case, work, args), work, args)
    passed, verdict, named = judge(case, diagnosis)
    return Outcome(
        case.name,
        case.injected,
        named,
        passed,
        verdict,
        round(time.perf_counter() - start, 1),
        diagnosis.get("health", "none"),
        failure,
    )


# ---- the table ----------------------------------------------------------------------------------------------


def table(outcomes: list[Outcome]) -> str:
    rows = [("case", "injected", "named (severity, first epoch)", "health", "result")]
    for o in outcomes:
        named = ", ".join(f"{c} ({e['severity']}, {e['first_epoch']})" for c, e in sorted(o.named.items())) or "-"
        rows.append((o.case, o.injected, named, o.health, ("pass" if o.passed else "FAIL") + f": {o.verdict}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="", help="comma list of case names (default: all)")
    parser.add_argument("--epochs", type=int, default=DETECT_BY)
    parser.add_argument("--imgsz", type=int, default=128)
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--neu-det", type=Path, default=ROOT.parent / "shared" / "datasets" / "neu-det")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmark-results" / "diagnosis_zoo.json")
    args = parser.parse_args()
    chosen = {name for name in args.cases.split(",") if name}
    unknown = chosen - {case.name for case in CASES}
    if unknown:
        parser.error(f"unknown cases: {', '.join(sorted(unknown))}")
    cases = [case for case in CASES if not chosen or case.name in chosen]
    if not (args.neu_det / "data.yaml").exists():
        print(f"{args.neu_det}: no NEU-DET here; healthy-neu-det is skipped")
        cases = [case for case in cases if case.data != "neu-det"]
    quiet_ultralytics()
    work = Path(tempfile.mkdtemp(prefix="diagnosis-zoo-"))
    outcomes = []
    try:
        for case in cases:
            outcome = run_case(case, work, args)
            outcomes.append(outcome)
            print(f"{case.name}: {'pass' if outcome.passed else 'FAIL'} ({outcome.verdict}) in {outcome.seconds:.0f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    passed = sum(o.passed for o in outcomes)
    print()
    print(table(outcomes))
    print(f"\naccuracy: {passed}/{len(outcomes)} ({passed / max(1, len(outcomes)):.0%})")
    save_report(args, {"accuracy": passed / max(1, len(outcomes)), "cases": [vars(o) for o in outcomes]})
    print(f"wrote {args.out}")
    return 0 if passed == len(outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())

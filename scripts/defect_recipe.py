"""The whole defect workflow, end to end, small enough for a CPU: edit the settings below and run it.

    python scripts/defect_recipe.py --neu-det ../shared/datasets/neu-det

1. import a class-stratified subset of NEU-DET (YOLO layout or the original VOC archive), split train/val/test;
2. sweep: two augmentation presets x two freeze settings, each a short training, children of one parent run;
3. compare the four children: table, charts and an HTML report;
4. calibrate the best child's screen on val: per-class thresholds for a recall target, held within a budget of
   good parts rejected, stored with its run; it reports the false-reject rate (good images rejected) and the
   escape rate (defective images let through);
5. promote it through gates (an AP50 floor, no class regressing against the model behind the alias; with
   ``--good``, the false-reject rate within the budget);
6. screen the test images by the alias (predict applies the stored thresholds) and check what the thresholds
   reach on test, a split calibration never saw: per-class recall, both image-level rates;
7. export the review queue: the test images with missed defects and false alarms, as Label Studio tasks.

NEU-DET has no defect-free image: every one holds a defect. Without ``--good`` the false-reject rate is
therefore *estimated* from the false detections outside every labelled box (the recipe says so where it prints
it). ``--good DIR`` (defect-free images of the same surfaces) measures it instead: half of its images calibrate
with val and gate the promotion, the other half are checked with test.

Everything lands under ``--work`` (MLflow in ``<work>/mlflow.db`` unless ``--tracking-uri`` is given).
Each step is the library call the matching ``yolo-pipeline`` command makes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

import yaml

from pipeline.comparison import compare
from pipeline.data.importer import import_dataset
from pipeline.evaluation.evaluation import evaluate
from pipeline.inference import predict
from pipeline.promotion.promotion import promote
from pipeline.screen.calibrate import calibrate
from pipeline.screen.check import check_screen
from pipeline.sweeps.sweep import sweep

# ---- what to try: edit here --------------------------------------------------------------------------
SPLITS = {"train": 0.6, "val": 0.2, "test": 0.2}  # test: only the final check sees it
GRID = {
    "augment.preset": ["surface", "surface-light"],
    "model.freeze": ["null", "10"],  # null: train every layer; 10: freeze the backbone (the first 10 modules)
}
BASE_CONFIG = {
    "model": {"weights": "yolo11n.pt"},  # offline, it falls back to the architecture (yolo11n.yaml), with a note
    "train": {"optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0, "batch": 16, "device": "auto"},
    "augment": {"mosaic": 0.0, "close_mosaic": 0},
    "tracking": {"experiment": "neu-det-recipe", "system_metrics": False},
}
MODEL_NAME = "neu-det-defects"
ALIAS = "champion"
TARGET_RECALL = 0.8  # per class: miss at most 20% of the defects on val
MAX_FALSE_REJECT = 0.05  # reject at most 5% of good parts: thresholds are raised where the targets would reject more
GATES = ["AP50>=0.02"]  # a floor a few minutes of CPU training from scratch clears; raise it with pretrained weights
NO_REGRESS = 0.02  # refuse a candidate whose AP50 (overall or of a class) drops more than this below the alias's


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neu-det", required=True, help="the NEU-DET folder (YOLO layout or the original archive)")
    parser.add_argument("--work", default="recipe", help="where data, runs, MLflow and results go (default: recipe)")
    parser.add_argument("--images", type=int, default=300, help="images in the subset (default: 300 of 1,800)")
    parser.add_argument("--imgsz", type=int, default=128, help="training size (default: 128)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per sweep child (default: 10)")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers")
    parser.add_argument("--tracking-uri", default="", help="MLflow server (default: <work>/mlflow.db)")
    parser.add_argument("--gate", action="append", help=f"a promotion gate, repeatable (default: {' '.join(GATES)})")
    parser.add_argument(
        "--good",
        metavar="DIR",
        help="defect-free images of the same surfaces: the false-reject rate is measured on them",
    )
    return parser.parse_args(argv)


def halved(good: str, work: Path) -> dict[str, Path]:
    """``good``'s images in two folders, alternating in sorted order: ``val`` calibrates and gates, ``test`` checks."""
    from pipeline.inference.discover import iter_images

    halves = {"val": work / "good" / "val", "test": work / "good" / "test"}
    for folder in halves.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    paths = sorted(iter_images(Path(good)))
    if len(paths) < 2:
        raise ValueError(f"--good: {good}: at least 2 images (one to calibrate with, one to check), found {len(paths)}")
    for k, path in enumerate(paths):
        copy = halves["test" if k % 2 else "val"] / f"{k:06d}_{path.name}"
        try:
            os.link(path, copy)
        except OSError:
            shutil.copy2(path, copy)
    return halves


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"

    print(f"1/7 import {args.images} images of {args.neu_det}, split {SPLITS}")
    imported = import_dataset(args.neu_det, "neu-det-subset", work / "data", images=args.images, splits=SPLITS)
    data = imported.data_yaml
    print(f"    {imported.card['images']} images, {imported.card['boxes']} boxes -> {data}")

    print(f"2/7 sweep {' x '.join(f'{k} {v}' for k, v in GRID.items())}, {args.epochs} epochs at {args.imgsz} px")
    config = {
        **BASE_CONFIG,
        "data": {"path": str(data)},
        "train": {
            **BASE_CONFIG["train"],
            "epochs": args.epochs,
            "imgsz": args.imgsz,
            "workers": args.workers,
            "project": str(work / "runs"),
        },
        "tracking": {**BASE_CONFIG["tracking"], "uri": uri},
    }
    config_file = work / "recipe.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    swept = sweep(config_file, GRID, name="neu-det-sweep")
    for child in swept.children:
        score = "-" if child.score is None else f"{child.score:.4f}"
        print(f"    {' '.join(child.overrides)}: {child.status} best.mAP50_95 {score}")
    if swept.best is None:
        print("every sweep child failed; see the errors above", file=sys.stderr)
        return 1

    print("3/7 compare the children")
    compared = compare(parent=swept.parent_run_id, out=work / "compare", tracking_uri=uri)
    print(compared.text)
    print(f"    report: {work / 'compare' / 'report.html'}")

    candidate = f"runs:/{swept.best.run_id}/model"
    budget = f"{100 * MAX_FALSE_REJECT:g}%"
    print(f"4/7 calibrate {candidate} on val: recall >= {TARGET_RECALL} per class, good parts rejected <= {budget}")
    good = halved(args.good, work) if args.good else {"val": None, "test": None}
    if args.good:
        print(f"    good images: {args.good}, half with val ({good['val']}), half with test ({good['test']})")
    else:
        print("    NEU-DET has no defect-free image: the false-reject rate is estimated from false detections outside")
        print("    every labelled box; --good DIR (defect-free images of the same surfaces) measures it")
    calibrated = calibrate(
        candidate, data, split="val", target_recall=TARGET_RECALL, good=good["val"], max_false_reject=MAX_FALSE_REJECT,
        out=work / "calibration", track=True, tracking_uri=uri,
    )  # fmt: skip
    print("\n".join(f"    {line}" for line in calibrated.table() + calibrated.lines))
    curve = [f for f in calibrated.files if f.endswith("operating_curve.png")]
    print(f"    operating curve (escapes against false rejects as thresholds move together): {', '.join(curve) or '-'}")

    gates = list(args.gate or GATES)
    if args.good:  # measured on the good images at the thresholds just stored with the candidate's run
        gates.append(f"false_reject<={MAX_FALSE_REJECT:g}")
    print(f"5/7 promote it as models:/{MODEL_NAME}@{ALIAS} through the gates {gates}, no regress > {NO_REGRESS}")
    promoted = promote(
        swept.best.run_id, name=MODEL_NAME, alias=ALIAS, data=data, split="val", gates=gates,
        no_regress=NO_REGRESS, tracking_uri=uri, good=good["val"],
    )  # fmt: skip
    decision = promoted.decision
    print(f"    version {promoted.version}: {'accepted' if decision.accepted else 'refused'} ({decision.reason})")
    screened_by = promoted.uri if decision.accepted else candidate  # a refused candidate still gets screened

    test_images = imported.out / "images" / "test"
    print(f"6/7 screen {test_images} with {screened_by}, and check the screen on test: recall, both rates")
    results = work / "screened" / f"v{promoted.version}"  # a results folder pins its model: one per version
    screened = predict(test_images, screened_by, results, tracking_uri=uri, progress=False)
    print(f"    {screened.images} images, {screened.failed_verdicts} failed; thresholds: {screened.thresholds_source}")
    if screened.screen_warning:  # every test image holds a defect: failing most of them is the screen's job
        print(f"    predict warned: {screened.screen_warning}")
        print("    (the warning is for folders of mostly good parts; these test images all hold defects)")
    checked = check_screen(candidate, data, calibrated.screen, split="test", good=good["test"], tracking_uri=uri)
    print("\n".join(f"    {line}" for line in checked.table() + checked.lines))

    print("7/7 the review queue: test images with missed defects or false alarms, as Label Studio tasks")
    reviewed = evaluate(
        screened_by, data, split="test", review=work / "review" / f"v{promoted.version}",
        screen=calibrated.files[0], tracking_uri=uri,
    )  # fmt: skip
    queue = reviewed.review or {}
    print(f"    {queue.get('images', 0)} images ({queue.get('missed', 0)} missed, {queue.get('false_alarms', 0)} false")
    print(f"    alarms) -> {queue.get('folder')}; import its tasks.json into Label Studio, then")
    print("    yolo-pipeline data import EXPORT.json --format labelstudio --images DIR for the next fine-tuning")
    print(f"MLflow: mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"MLflow: {uri}")
    return 1 if screened.total_errors or swept.failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:  # the library's one-line errors (a folder it did not make, a bad dataset, ...)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

"""The whole defect workflow, end to end, small enough for a CPU: edit the settings below and run it.

    python scripts/defect_recipe.py --neu-det ../shared/datasets/neu-det

1. import a class-stratified subset of NEU-DET (YOLO layout or the original VOC archive) with its card;
2. sweep: two augmentation presets x two freeze settings, each a short training, children of one parent run;
3. compare the four children: table, charts and an HTML report;
4. promote the best child to the model registry under an alias;
5. batch inference with that alias over the imported validation images.

Everything lands under ``--work`` (MLflow in ``<work>/mlflow.db`` unless ``--tracking-uri`` is given).
Each step is the library call the matching ``yolo-pipeline`` command makes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from pipeline.data.importer import import_dataset
from pipeline.inference import predict
from pipeline.selection.comparison import compare
from pipeline.selection.promotion import promote
from pipeline.selection.sweep import sweep

# ---- what to try: edit here --------------------------------------------------------------------------
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
PREDICT_CONF = 0.05  # a few minutes of training from scratch scores low; raise it with pretrained weights


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neu-det", required=True, help="the NEU-DET folder (YOLO layout or the original archive)")
    parser.add_argument("--work", default="recipe", help="where data, runs, MLflow and results go (default: recipe)")
    parser.add_argument("--images", type=int, default=300, help="images in the subset (default: 300 of 1,800)")
    parser.add_argument("--imgsz", type=int, default=128, help="training size (default: 128)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per sweep child (default: 10)")
    parser.add_argument("--workers", type=int, default=2, help="data loader workers")
    parser.add_argument("--tracking-uri", default="", help="MLflow server (default: <work>/mlflow.db)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    uri = args.tracking_uri or f"sqlite:///{work / 'mlflow.db'}"

    print(f"1/5 import {args.images} images of {args.neu_det}")
    imported = import_dataset(args.neu_det, "neu-det-subset", work / "data", images=args.images, seed=0)
    print(f"    {imported.card['images']} images, {imported.card['boxes']} boxes -> {imported.data_yaml}")

    print(f"2/5 sweep {' x '.join(f'{k} {v}' for k, v in GRID.items())}, {args.epochs} epochs at {args.imgsz} px")
    config = {
        **BASE_CONFIG,
        "data": {"path": str(imported.data_yaml)},
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
    if len(swept.failed) == len(swept.children):
        print("every sweep child failed; see the errors above", file=sys.stderr)
        return 1

    print("3/5 compare the children")
    compared = compare(parent=swept.parent_run_id, out=work / "compare", tracking_uri=uri)
    print(compared.text)
    print(f"    report: {work / 'compare' / 'report.html'}")

    print(f"4/5 promote the best child as models:/{MODEL_NAME}@{ALIAS}")
    promoted = promote("best", parent=swept.parent_run_id, name=MODEL_NAME, alias=ALIAS, tracking_uri=uri)
    print(f"    version {promoted.version} from run {promoted.run_id} ({promoted.metric} {promoted.value:.4f})")

    val_images = imported.out / "images" / "val"
    results = work / "predictions" / f"v{promoted.version}"  # a results folder pins its model: one per version
    print(f"5/5 predict {val_images} with {promoted.uri}")
    predicted = predict(val_images, promoted.uri, results, conf=PREDICT_CONF, tracking_uri=uri, progress=False)
    print(f"    {predicted.images} images, {sum(predicted.detections.values())} detections -> {results}")
    print(f"MLflow: mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else f"MLflow: {uri}")
    return 1 if predicted.total_errors or swept.failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:  # the library's one-line errors (a folder it did not make, a bad dataset, ...)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)

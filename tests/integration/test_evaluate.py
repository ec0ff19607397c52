"""`evaluate` on a model that has learned something: ultralytics and pycocotools agree on the same predictions."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.evaluation.evaluation import evaluate

pytestmark = pytest.mark.slow
CLI = [sys.executable, "-m", "pipeline.cli"]
CLASSES = ("scratch", "pit", "patch")


def test_evaluate_agrees_with_ultralytics_and_is_logged(
    downscaled_training, downscaled_data: Path, mlflow_server, tmp_path: Path
) -> None:
    data, trained = downscaled_data, downscaled_training  # 10 epochs at 64 px: a model that finds the defects
    model = f"runs:/{trained.run_id}/model"

    result = evaluate(
        model,
        data,
        device="cpu",
        out=tmp_path / "eval",
        track=True,
        experiment="evaluate",
        tracking_uri=mlflow_server.uri,
    )

    assert result.images == 80 and result.instances > 80 and result.model_run_id == trained.run_id
    ultralytics_map50, coco_ap50 = result.ultralytics["mAP50"], result.coco["AP50"]
    assert ultralytics_map50 > 0.05, "the model must have learned something for the comparison to mean anything"
    assert abs(coco_ap50 - ultralytics_map50) <= 0.02, (coco_ap50, ultralytics_map50)
    assert abs(result.coco["AP"] - result.ultralytics["mAP50_95"]) <= 0.02
    assert result.coco["AP_small"] is not None  # defects are mostly small
    assert set(result.per_class) == set(CLASSES)
    for name, values in result.per_class.items():
        assert values["instances"] > 0 and values["images"] > 0, name
        for key in ("precision", "recall", "AP50", "AP50_95", "coco.AP50", "coco.AP"):
            assert values[key] is not None and 0.0 <= values[key] <= 1.0 and not math.isnan(values[key]), (name, key)
        assert abs(values["coco.AP50"] - values["AP50"]) <= 0.05, name

    saved = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    assert saved["coco"]["AP50"] == coco_ap50 and set(saved["per_class"]) == set(CLASSES)
    detections = json.loads((tmp_path / "eval" / "predictions.json").read_text(encoding="utf-8"))
    truth = json.loads((tmp_path / "eval" / "ground_truth.json").read_text(encoding="utf-8"))
    assert len(truth["images"]) == 80 and len(truth["annotations"]) == result.instances
    large = any(a["area"] >= 96**2 for a in truth["annotations"])
    assert (result.coco["AP_large"] is None) == (not large)  # None exactly when the split has no large object
    assert detections and {d["image_id"] for d in detections} <= {i["id"] for i in truth["images"]}

    run = MlflowClient(mlflow_server.uri).get_run(result.run_id)
    assert run.data.tags["pipeline.kind"] == "evaluation" and run.data.tags["pipeline.model_run_id"] == trained.run_id
    assert run.data.metrics["coco.AP50"] == pytest.approx(coco_ap50)
    assert run.data.metrics["ultralytics.mAP50"] == pytest.approx(ultralytics_map50)
    assert {f"coco.AP50.{c}" for c in CLASSES} | {f"AP50.{c}" for c in CLASSES} <= set(run.data.metrics)

    cli = subprocess.run(
        [*CLI, "evaluate", "--model", str(trained.best_weights), "--data", str(data), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert f"mAP50 side by side: ultralytics {ultralytics_map50:.4f}, COCO {coco_ap50:.4f}" in cli.stdout
    wrong = subprocess.run(
        [*CLI, "evaluate", "--model", str(trained.best_weights), "--data", str(tmp_path / "nowhere.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1 and "nowhere.yaml" in wrong.stderr

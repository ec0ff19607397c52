"""What a finished training leaves in its MLflow run besides the per-epoch metrics.

The resolved config, the results table, plots (confusion matrix, PR and F1 curves, results), the
confusion matrix as numbers, a few validation images with predictions, the best model's final
metrics as ``best.*``. (The model itself is journaled by the trainer when training stops.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.training.epoch_metrics import epoch_metrics, per_class_ap

_FILES = ("config.yaml", "args.yaml", "data.yaml", "results.csv")
_PLOTS = (
    "results.png",
    "confusion_matrix.png",
    "confusion_matrix_normalized.png",
    "BoxPR_curve.png",
    "BoxF1_curve.png",
    "BoxP_curve.png",
    "BoxR_curve.png",
    "labels.jpg",
)
_MAX_VAL_IMAGES = 3


def confusion_matrix_json(trainer: Any, path: Path) -> Path | None:
    """The validator's confusion matrix as numbers: rows are predictions, columns are ground truth. None without
    plots (``train.plots: false``): ultralytics' validator counts the matrix only when it draws, and a matrix of
    zeros would say the model predicted nothing."""
    matrix = getattr(getattr(trainer, "validator", None), "confusion_matrix", None)
    if matrix is None or not getattr(trainer.args, "plots", True):
        return None
    names = [trainer.data["names"][i] for i in sorted(trainer.data["names"])]
    payload = {
        "labels": [*names, "background"],
        "matrix": matrix.matrix.astype(float).tolist(),
        "layout": "rows: predicted class, columns: true class (ultralytics convention)",
    }
    path.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return path


def final_metrics(trainer: Any) -> dict[str, float]:
    """The best checkpoint's validation (ultralytics' final_eval), as ``best.*`` metrics."""
    metrics = dict(trainer.metrics or {})
    record = epoch_metrics({k: v for k, v in metrics.items() if not k.startswith("val/")}, None)
    box = trainer.validator.metrics.box if trainer.validator is not None else None
    if box is not None:
        record.update(per_class_ap(trainer.data["names"], box.ap_class_index, box.ap50, box.ap))
    return {f"best.{k}": v for k, v in record.items()}


def log_final_artifacts(trainer: Any, tracker: Any) -> None:
    save_dir = Path(trainer.save_dir)
    epochs_done = trainer.epoch + 1
    if trainer.best.exists():
        tracker.log_metrics(final_metrics(trainer), step=epochs_done)
    for name in _FILES:
        if (save_dir / name).exists():
            tracker.log_artifact(save_dir / name)
    for name in _PLOTS:
        if (save_dir / name).exists():
            tracker.log_artifact(save_dir / name, "plots")
    if (matrix := confusion_matrix_json(trainer, save_dir / "confusion_matrix.json")) is not None:
        tracker.log_artifact(matrix, "plots")
    for image in sorted(save_dir.glob("val_batch*_pred.jpg"))[:_MAX_VAL_IMAGES]:
        tracker.log_artifact(image, "val_predictions")

"""A tiled training (``data.tile``) validates on whole val images cut, run and merged exactly as predict does.

The final validation scores best.pt; predict of best.pt over the val folder at the validation's conf (0.001) and IoU
(0.7), cut into the training's 128-px tiles, writes its boxes to predictions.jsonl. Per image the validation scored
the same boxes (predict rounds boxes to 1e-3 px and scores to 1e-6 in its file), and the same ultralytics metric code
over predict's file and the dataset's labels gives the validation's mAP50, mAP50-95 and per-class AP within 1e-6:
the validation sees what predict sees. Both keep one class per box (predict's NMS), where ultralytics' own validation
keeps every class above conf per box (``multi_label``): the mAP is that of predict's boxes.

The box-by-box identity carries the proof: a few epochs of a 64-px model match few labels, so its mAP is small (it
may be 0 on another machine, and the metric comparison then holds trivially). The metrics are compared on predict's
rounded file, so a match whose IoU lies within ~1e-4 of a threshold could in principle differ; none does here.
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.data.synth import synthesize
from pipeline.inference import predict
from tests.helpers.configs import tiny_config

pytestmark = pytest.mark.slow


def _trained(config: Any) -> Any:
    """The trainer after a training (as `pipeline.training.train` runs it), for its final validation's metrics."""
    from pipeline.training.run import prepare_training, session_env
    from pipeline.training.trainer import PipelineTrainer

    with ExitStack() as held:
        prepared = prepare_training(config, held)
        with session_env(prepared.session_file):
            trainer = PipelineTrainer(overrides=prepared.ultralytics_args)
            trainer.train()
    return trainer


def _labels(folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """An image's YOLO labels as (classes, x1 y1 x2 y2 in pixels) of a 256-px image."""
    rows = np.loadtxt(folder / f"{Path(name).stem}.txt", ndmin=2).reshape(-1, 5)
    xy, wh = rows[:, 1:3] * 256, rows[:, 3:5] * 256
    return rows[:, 0], np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)


def _scored_by_ultralytics(records: list[dict[str, Any]], labels: Path, names: dict[int, str]) -> Any:
    """predict's detections against the labels, with ultralytics' matching and metrics (as its validator does)."""
    from ultralytics.models.yolo.detect import DetectionValidator
    from ultralytics.utils.metrics import DetMetrics, box_iou

    metrics = DetMetrics(names=names)
    matcher = SimpleNamespace(iouv=torch.linspace(0.5, 0.95, 10))
    for record in records:
        true_cls, true_boxes = _labels(labels, record["path"])
        found = record["detections"]
        pred_cls = torch.tensor([d["class_id"] for d in found], dtype=torch.float32)
        boxes = torch.tensor([d["box"] for d in found], dtype=torch.float32).reshape(-1, 4)
        tp = np.zeros((len(found), 10), dtype=bool)
        if len(found) and len(true_cls):
            iou = box_iou(torch.tensor(true_boxes, dtype=torch.float32), boxes)
            tp = DetectionValidator.match_predictions(matcher, pred_cls, torch.tensor(true_cls), iou).numpy()
        metrics.update_stats(
            {
                "tp": tp,
                "conf": np.array([d["score"] for d in found]),
                "pred_cls": pred_cls.numpy(),
                "target_cls": true_cls,
                "target_img": np.unique(true_cls),
                "im_name": Path(record["path"]).name,
            }
        )
    metrics.process()
    return metrics


def test_a_tiled_training_validates_on_what_predict_finds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics.nn.autobackend import AutoBackend

    from pipeline.training.tiled_validation import TiledDetectionValidator

    monkeypatch.setenv("YOLO_PIPELINE_CACHE", str(tmp_path / "cache"))
    data_yaml = synthesize(tmp_path / "data", images=40, seed=0, size=256).data_yaml
    seen: dict[str, torch.Tensor] = {}  # image name -> the boxes the validation scored (the last validation's)
    models: list[str] = []  # what each validation ran: the EMA model in training, best.pt at the end
    scored, detector = TiledDetectionValidator._scored, TiledDetectionValidator._detector

    def spy_scored(self: TiledDetectionValidator, item: Any) -> dict[str, torch.Tensor]:
        pred = scored(self, item)
        seen[Path(item.path).name] = torch.cat([pred["bboxes"], pred["conf"][:, None], pred["cls"][:, None]], 1).cpu()
        return pred

    def spy_detector(self: TiledDetectionValidator, model: Any) -> Any:
        models.append("best.pt" if isinstance(model, AutoBackend) else "ema")
        return detector(self, model)

    monkeypatch.setattr(TiledDetectionValidator, "_scored", spy_scored)
    monkeypatch.setattr(TiledDetectionValidator, "_detector", spy_detector)
    config = tiny_config(
        data_yaml,
        tmp_path / "runs",
        data={"tile": {"size": 128, "overlap": 0.2, "min_visible": 0.5, "backgrounds": 0.1}},
        # the shared screen trainings' recipe (tests/conftest.py), long enough for boxes that match some labels
        train={"epochs": 6, "imgsz": 64, "optimizer": "AdamW", "lr0": 0.002, "warmup_epochs": 0, "plots": True},
        tracking={"enabled": False},
        gradients={"enabled": False},
    )
    trainer = _trained(config)
    assert isinstance(trainer.validator, TiledDetectionValidator)
    assert models == ["ema"] * 6 + ["best.pt"]  # each epoch's validation and the final one, all tiled
    for plot in ("val_batch0_pred.jpg", "val_batch0_labels.jpg", "confusion_matrix.png", "BoxPR_curve.png"):
        assert (trainer.save_dir / plot).is_file(), plot

    val_images = data_yaml.parent / "images" / "val"
    out = tmp_path / "predicted"
    predict(val_images, str(trainer.best), out, conf=0.001, iou=0.7, tile=128, runtime="torch", progress=False)
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(Path(r["path"]).name for r in records) == sorted(seen) and len(seen) >= 3

    for record in records:  # the same boxes, image by image
        found = seen[Path(record["path"]).name].numpy()
        assert len(found) == len(record["detections"])
        expected = np.array([[*d["box"], d["score"], d["class_id"]] for d in record["detections"]]).reshape(-1, 6)
        np.testing.assert_allclose(found[:, :4], expected[:, :4], atol=1e-3)
        np.testing.assert_allclose(found[:, 4], expected[:, 4], atol=1e-6)
        np.testing.assert_array_equal(found[:, 5], expected[:, 5])
    assert sum(len(r["detections"]) for r in records) > 0

    # Scored again from the labels' text files, with ultralytics' matching and metrics, on the boxes the validation
    # saw at full precision: predict's file rounds boxes to 1e-3 px, and at this tiny model's mAP one match sitting
    # on an IoU threshold is a factor of two (the box identity above ties those boxes to predict's).
    names = {int(k): v for k, v in trainer.data["names"].items()}
    exact = [
        {"path": name, "detections": [{"box": row[:4].tolist(), "score": float(row[4]), "class_id": int(row[5])}
                                      for row in boxes.numpy()]}
        for name, boxes in seen.items()
    ]  # fmt: skip
    independent = _scored_by_ultralytics(exact, data_yaml.parent / "labels" / "val", names)
    final = trainer.metrics  # the final validation of best.pt
    assert final["metrics/mAP50(B)"] == pytest.approx(independent.box.map50, abs=1e-6)
    assert final["metrics/mAP50-95(B)"] == pytest.approx(independent.box.map, abs=1e-6)
    box = trainer.validator.metrics.box
    assert list(box.ap_class_index) == list(independent.box.ap_class_index)
    np.testing.assert_allclose(box.ap, independent.box.ap, atol=1e-6)

    # `evaluate` of best.pt scores it as the training's final validation did: through its tiles, by default
    from pipeline.evaluation import evaluation

    evaluated = evaluation.evaluate(str(trainer.best), data_yaml, split="val", device="cpu", conf=0.001, iou=0.7)
    assert evaluated.ultralytics["mAP50"] == pytest.approx(final["metrics/mAP50(B)"], abs=1e-6)
    assert evaluated.ultralytics["mAP50_95"] == pytest.approx(final["metrics/mAP50-95(B)"], abs=1e-6)
    assert evaluated.images == len(seen)

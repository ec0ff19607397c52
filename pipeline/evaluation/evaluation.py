"""Evaluate a detector on a dataset split: ultralytics' metrics and COCO's, from the same predictions.

Ultralytics' validator predicts every image of the split once (at its low evaluation threshold) and
measures precision, recall, mAP50 and mAP50-95, overall and per class. The same predictions, with
the same ground truth (the validator's labels, in image pixels), are then scored by pycocotools:
AP, AP50, AP75 and AP by object size (small < 32² px, medium < 96² px, large above; defects are mostly
small), overall and per class. ``coco.AP50`` beside ``ultralytics.mAP50`` is a cross-check: the
two differ only in how detections are matched to objects and the precision curve is sampled.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipeline.data.dataset import DatasetError, DataYaml, read_data_yaml
from pipeline.destinations import build_then_swap, reserve, writer_lock
from pipeline.inference.options import RunOptions
from pipeline.messages import UserError

LOG = logging.getLogger("pipeline.evaluation")

COCO_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
KIND = "evaluate"  # the marker's kind of an --out folder: a rerun replaces it once the new files are whole
# pycocotools' stats[0..5] are the six above; -1 means "no object of that size in the split".


class EvaluateError(UserError, ValueError):
    """An evaluation that cannot run; the message is one line."""


@dataclass
class Evaluation:
    model: str
    data: str
    split: str
    images: int
    instances: int
    ultralytics: dict[str, float]  # precision, recall, mAP50, mAP50_95
    coco: dict[str, float | None]  # COCO_KEYS; None where the split has no object of that size
    per_class: dict[str, dict[str, float | int | None]]
    model_run_id: str | None = None
    files: list[str] = field(default_factory=list)
    run_id: str | None = None  # the MLflow run this evaluation was logged to
    review: dict[str, Any] | None = None  # what --review wrote (`pipeline.evaluation.review.ReviewResult.summary`)

    def metrics(self) -> dict[str, float]:
        """Flat, MLflow-ready: ``ultralytics.mAP50``, ``coco.AP_small``, ``AP50.<class>``, ``coco.AP50.<class>``..."""
        from pipeline.training.epoch_metrics import class_key

        flat = {f"ultralytics.{k}": v for k, v in self.ultralytics.items()}
        flat.update({f"coco.{k}": v for k, v in self.coco.items() if v is not None})
        for name, values in self.per_class.items():
            for key in ("AP50", "AP50_95", "precision", "recall"):
                flat[f"{key}.{class_key(name)}"] = values[key]
            for key in ("AP50", "AP"):
                if values[f"coco.{key}"] is not None:
                    flat[f"coco.{key}.{class_key(name)}"] = values[f"coco.{key}"]
        return {k: float(v) for k, v in flat.items() if v is not None and not math.isnan(v)}


# ---- COCO scoring (pure: plain dicts in, numbers out) ---------------------------------------------------


def coco_ground_truth(labels: list[dict[str, Any]], names: dict[int, str]) -> dict[str, Any]:
    """COCO ground truth from ultralytics label records (``im_file``, ``shape`` (h, w), ``cls``, normalised
    ``bboxes`` xywh). Image ids count from 1 in the records' order; category ids are class index + 1."""
    images, annotations = [], []
    for image_id, label in enumerate(labels, start=1):
        height, width = (int(v) for v in label["shape"])
        images.append({"id": image_id, "file_name": str(label["im_file"]), "height": height, "width": width})
        boxes = np.asarray(label["bboxes"], dtype=float).reshape(-1, 4)
        classes = np.asarray(label["cls"]).reshape(-1)
        for (cx, cy, w, h), cls in zip(boxes, classes, strict=True):
            box = [(cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height]
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls) + 1,
                    "bbox": [round(v, 3) for v in box],
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    categories = [{"id": index + 1, "name": name} for index, name in sorted(names.items())]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_scores(
    ground_truth: dict[str, Any], detections: list[dict[str, Any]]
) -> tuple[dict[str, float | None], dict[int, dict[str, float | None]]]:
    """pycocotools' bbox evaluation: (overall COCO_KEYS, per category id {AP, AP50}); None where undefined."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = COCO()
    truth.dataset = ground_truth
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and table
        truth.createIndex()
        category_ids = [c["id"] for c in ground_truth["categories"]]
        if not detections:
            return dict.fromkeys(COCO_KEYS, 0.0), {c: {"AP": 0.0, "AP50": 0.0} for c in category_ids}
        found = truth.loadRes(detections)
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    overall = {key: (None if value < 0 else float(value)) for key, value in zip(COCO_KEYS, evaluation.stats)}
    # precision: [IoU thresholds, recall points, categories, area ranges, max detections]; -1 = no object
    precision = evaluation.eval["precision"]
    per_class: dict[int, dict[str, float | None]] = {}
    for k, category in enumerate(evaluation.params.catIds):
        all_iou = precision[:, :, k, 0, -1]
        at_50 = precision[0, :, k, 0, -1]
        per_class[category] = {
            "AP": float(all_iou[all_iou > -1].mean()) if (all_iou > -1).any() else None,
            "AP50": float(at_50[at_50 > -1].mean()) if (at_50 > -1).any() else None,
        }
    return overall, per_class


# ---- the evaluation ---------------------------------------------------------------------------------------


def data_spec(data: str | Path, split: str) -> DataYaml:
    """The data.yaml behind ``data`` (a data.yaml, a YOLO folder or an imported manifest), with ``split``."""
    from pipeline.data.manifest import is_manifest, load_manifest

    path = Path(data)
    if is_manifest(path):
        imported = load_manifest(path).out_dir / "data.yaml"
        if not imported.is_file():
            raise DatasetError(f"{path}: not imported yet; run: yolo-pipeline data import --manifest {path}")
        path = imported
    return read_data_yaml(path, require=(split,))


def _data_yaml(data: str | Path, split: str, folder: Path) -> tuple[Path, dict[int, str]]:
    """A data.yaml ultralytics can read (absolute paths) for a data.yaml, a YOLO folder or an imported manifest."""
    spec = data_spec(data, split)
    resolved = folder / "data.yaml"
    body = {"path": str(spec.root), **{s: str(p) for s, p in spec.splits.items()}, "names": spec.names}
    resolved.write_text(yaml.safe_dump(body, sort_keys=False), encoding="utf-8")
    return resolved, spec.names


@dataclass
class SplitPredictions:
    """Every image of a split predicted once, at a low threshold, with its ground truth, both in COCO form."""

    truth: dict[str, Any]  # COCO ground truth: images (ids from 1, file_name = the image path), annotations
    detections: list[dict[str, Any]]  # COCO results: image_id, category_id (class index + 1), bbox xywh, score
    names: dict[int, str]
    model_run_id: str | None
    metrics: Any  # ultralytics' DetMetrics of the same predictions
    model_sha256: str = ""
    seen: Any = None  # `pipeline.drift.Sample` of the split's images (statistics, embeddings), when predict kept one


def split_validator(yolo: Any) -> Any:
    """The validator class `predict_split` runs: a model trained on tiles (``data.tile``, recorded in its checkpoint)
    is scored on whole images cut into its tiles and merged as predict and its training's validation do; any
    other on whole images, letterboxed as ultralytics validates."""
    from pipeline.checkpoints import training_image_side, training_tile
    from pipeline.evaluation.validators import PathKeyedValidator, TiledPathKeyedValidator

    tile = training_tile(yolo)
    if tile is None:
        return PathKeyedValidator
    size, overlap = tile
    LOG.info("evaluate: %d-px tiles (overlap %g) as the model was trained, merged per image", size, overlap)
    return partial(TiledPathKeyedValidator, tile_size=size, overlap=overlap, image_side=training_image_side(yolo))


def predict_split(model: str, data: str | Path, options: RunOptions, *, split: str = "val") -> SplitPredictions:
    """Run ultralytics' validator over ``split`` of ``data`` with ``model``, as ``options`` say, and keep its
    predictions."""
    from pipeline.checkpoints import trained_imgsz
    from pipeline.data.dataset import SPLITS
    from pipeline.devices import resolve_device
    from pipeline.inference.model import open_checkpoint

    if split not in SPLITS:
        raise EvaluateError(f"--split: must be train, val or test, got {split!r}")
    opened = open_checkpoint(model, options.tracking_uri)
    yolo = opened.yolo
    captured: dict[str, Any] = {}
    yolo.add_callback("on_val_end", lambda validator: captured.update(validator=validator))
    with tempfile.TemporaryDirectory(prefix="yolo-pipeline-evaluate-") as tmp:
        data_yaml, names = _data_yaml(data, split, Path(tmp))
        model_names = {int(k): str(v) for k, v in yolo.names.items()}
        if len(model_names) != len(names):
            raise EvaluateError(
                f"{data}: {len(names)} classes {list(names.values())}, but the model has {len(model_names)} "
                f"{list(model_names.values())}"
            )
        with _lines_naming_hidden(tmp):  # "Results saved to <tmp>": a folder gone when this returns
            yolo.val(
                validator=split_validator(yolo),
                data=str(data_yaml),
                split=split,
                imgsz=options.imgsz or trained_imgsz(yolo),
                batch=options.batch,
                conf=options.conf,
                iou=options.iou,
                device=resolve_device(options.device),
                save_json=True,
                plots=False,
                verbose=False,
                project=tmp,
                name="val",
                exist_ok=True,
            )
    validator = captured["validator"]
    labels = [{**label, "shape": _image_shape(label["im_file"])} for label in validator.dataloader.dataset.labels]
    truth = coco_ground_truth(labels, names)
    detections = _detections(validator.jdict, truth)
    return SplitPredictions(truth, detections, names, opened.run_id, validator.metrics, opened.weights_sha256)


def evaluate(
    model: str,
    data: str | Path,
    *,
    split: str = "val",
    out: str | Path | None = None,
    track: bool = False,
    experiment: str = "evaluations",
    review: str | Path | None = None,
    screen: str | Path | None = None,
    options: RunOptions | None = None,
    **run: Any,
) -> Evaluation:
    """Evaluate ``model`` (a .pt, ``runs:/``/``models:/`` URI or ultralytics name) on ``split`` of ``data``.

    ``out``: a folder for ``evaluation.json``, ``predictions.json`` (COCO results) and ``ground_truth.json``
    (COCO). ``track``: log the numbers and files as an MLflow run tagged ``pipeline.kind=evaluation``.
    ``review``: a folder for the review queue of the images with missed objects and false alarms at the
    thresholds of ``screen`` (a screen.json), else those stored with the model (`pipeline.evaluation.review`).
    ``options``: how the model runs (`RunOptions`: imgsz, batch, conf, iou, device, tracking_uri), or its fields as
    keywords (``imgsz=640, device="cpu"``), laid over ``options``; ``tracking_uri`` is also where ``track`` logs."""
    options = RunOptions.given(options, run, "evaluate")
    tracking_uri = options.tracking_uri
    # Held from before the model loads (a refused --out costs nothing) to the swap; --review's folder too.
    with reserve(out, KIND, replace=True) as out, writer_lock(review, KIND, "--review"):
        plan = None
        if review is not None:  # the folder and the thresholds settled before the model loads, too
            from pipeline.evaluation.review import plan_review

            plan = plan_review(review, screen, model, tracking_uri, out)
        elif screen is not None:
            raise EvaluateError("--screen: goes with --review (the thresholds the review queue uses)")
        found = predict_split(model, data, options, split=split)
        truth, detections = found.truth, found.detections
        coco, coco_per_class = coco_scores(truth, detections)
        result = Evaluation(
            model=model,
            data=str(data),
            split=split,
            images=len(truth["images"]),
            instances=len(truth["annotations"]),
            ultralytics=_ultralytics_overall(found.metrics),
            coco=coco,
            per_class=_per_class(found.metrics, found.names, coco_per_class),
            model_run_id=found.model_run_id,
        )
        if plan is not None:  # the same predictions: the split is predicted once
            from pipeline.evaluation.review import review_split

            result.review = review_split(plan, found, model).summary()
        if out is not None:
            result.files = [str(p) for p in _write(result, truth, detections, Path(out))]
        if track:
            result.run_id = _log(result, experiment, tracking_uri)
        return result


class _Naming(logging.Filter):
    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def filter(self, record: logging.LogRecord) -> bool:
        return self.folder not in record.getMessage()


@contextlib.contextmanager
def _lines_naming_hidden(folder: str) -> Iterator[None]:
    """Ultralytics' log lines that name the temporary ``folder`` left out while the block runs."""
    logger, naming = logging.getLogger("ultralytics"), _Naming(Path(folder).name)  # unique, however resolved
    logger.addFilter(naming)
    try:
        yield
    finally:
        logger.removeFilter(naming)


def _image_shape(path: str) -> tuple[int, int]:
    """(height, width) as ultralytics reads it (EXIF rotation applied), from the file header only.

    The validator's rectangular batching drops each label's own shape, so it is read again here."""
    from PIL import Image
    from ultralytics.data.utils import exif_size

    with Image.open(path) as image:
        width, height = exif_size(image)
    return height, width


def _detections(jdict: list[dict[str, Any]], truth: dict[str, Any]) -> list[dict[str, Any]]:
    """The validator's predictions with the ground truth's image ids (matched by image path)."""
    ids = {image["file_name"]: image["id"] for image in truth["images"]}
    return [
        {"image_id": ids[p["file_name"]], "category_id": p["category_id"], "bbox": p["bbox"], "score": p["score"]}
        for p in jdict
        if p["file_name"] in ids
    ]


def _ultralytics_overall(metrics: Any) -> dict[str, float]:
    precision, recall, map50, map50_95 = metrics.box.mean_results()
    return {"precision": precision, "recall": recall, "mAP50": map50, "mAP50_95": map50_95}


def _per_class(
    metrics: Any, names: dict[int, str], coco: dict[int, dict[str, float | None]]
) -> dict[str, dict[str, float | int | None]]:
    """Every class of the dataset, measured or not (a class with no object in the split has NaN/None)."""
    box = metrics.box
    measured = {int(c): i for i, c in enumerate(box.ap_class_index)}
    instances = getattr(metrics, "nt_per_class", None)
    images = getattr(metrics, "nt_per_image", None)
    out: dict[str, dict[str, float | int | None]] = {}
    for index, name in sorted(names.items()):
        i = measured.get(index)
        out[name] = {
            "images": int(images[index]) if images is not None else None,
            "instances": int(instances[index]) if instances is not None else None,
            "precision": float(box.p[i]) if i is not None else math.nan,
            "recall": float(box.r[i]) if i is not None else math.nan,
            "AP50": float(box.ap50[i]) if i is not None else math.nan,
            "AP50_95": float(box.ap[i]) if i is not None else math.nan,
            "coco.AP50": coco.get(index + 1, {}).get("AP50"),
            "coco.AP": coco.get(index + 1, {}).get("AP"),
        }
    return out


def _write(result: Evaluation, truth: dict[str, Any], detections: list[dict[str, Any]], out: Path) -> list[Path]:
    """The three files, built beside ``out`` and swapped in whole; their paths are the final ones."""
    names = ["evaluation.json", "predictions.json", "ground_truth.json"]
    files = [out / name for name in names]
    with build_then_swap(out, KIND, "--out", model=result.model, data=result.data, split=result.split) as staging:
        (staging / names[1]).write_text(json.dumps(detections), encoding="utf-8")
        (staging / names[2]).write_text(json.dumps(truth), encoding="utf-8")
        payload = {**asdict(result), "files": [str(p) for p in files]}
        (staging / names[0]).write_text(json.dumps(payload, indent=1, allow_nan=True), encoding="utf-8")
    return files


def _log(result: Evaluation, experiment: str, tracking_uri: str) -> str:
    from pipeline.tracking.runs import log_summary_run

    params = {"model": result.model, "data": result.data, "split": result.split}
    tags = {"pipeline.model_run_id": result.model_run_id} if result.model_run_id else {}
    summary = {**result.metrics(), "images": result.images, "instances": result.instances}
    name = f"evaluate {Path(result.data).name} {result.split}"
    files = [Path(p) for p in result.files if Path(p).name == "evaluation.json"]
    return log_summary_run("evaluation", summary, params, files, experiment, name, tracking_uri, tags)


__all__ = [
    "Evaluation",
    "EvaluateError",
    "SplitPredictions",
    "evaluate",
    "predict_split",
    "coco_scores",
    "coco_ground_truth",
]

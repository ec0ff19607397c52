"""Validation of a tiled training (``data.tile``) on whole val images, seen exactly as predict sees them.

Ultralytics' validator letterboxes each whole val image to ``imgsz``: a 1,536-px board trained on as
640-px tiles would be scored shrunk to a fraction of the scale the model learned, which is not how the
screen will run it. This validator keeps ultralytics' loop, metrics (mAP50, mAP50-95, per-class AP,
confusion matrix) and the whole-image validation loss, and replaces only what is scored: each image of
a batch is read from its file and run through predict's own steps (`prepare`: `tile_windows` and the
detector's letterbox; `run_batches`: the network and NMS; `Prepared.merged`: `merge_tiles`), at the
size predict picks for the training's tiles (`inference_scale`). The merged boxes are in image pixels,
so the labels are taken in image pixels too, from the dataset's own (normalised) labels.

What predict's NMS does is what is scored: one class per box (ultralytics' validation keeps every class
above ``conf`` per box, ``multi_label``), so the mAP is that of the boxes predict writes at ``conf``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from typing import Any

import torch

from pipeline.yolo_env import configure_ultralytics

# Before ultralytics' first import, which reads its settings: a private temporary folder, never the user's.
configure_ultralytics()

from ultralytics.data.augment import LetterBox  # noqa: E402
from ultralytics.models.yolo.detect import DetectionValidator  # noqa: E402
from ultralytics.nn.autobackend import AutoBackend  # noqa: E402
from ultralytics.utils import ops  # noqa: E402
from ultralytics.utils.torch_utils import autocast  # noqa: E402

from pipeline.inference.batching import Prepared, Tiling, prepare, run_batches  # noqa: E402
from pipeline.inference.model import Detector  # noqa: E402
from pipeline.inference.scale import inference_scale  # noqa: E402

PREPARE_THREADS = 4  # images read and cut at once (the network runs in the caller's thread)
IN_IMAGE_PIXELS = ((1.0, 1.0), (0.0, 0.0))  # ratio_pad of boxes already in image pixels: scale_boxes keeps them


class _TrainingNetwork:
    """The training's EMA model, with the attributes of the AutoBackend a `Detector` runs (not fused: it trains on)."""

    def __init__(self, model: torch.nn.Module, device: torch.device, end2end: bool, amp: bool) -> None:
        self.model, self.device, self.end2end, self.amp = model, device, end2end, amp
        self.fp16 = False  # fp32 weights; on a GPU with AMP the forward runs under autocast, as ultralytics validates
        self.stride = max(int(model.stride.max()), 32) if hasattr(model, "stride") else 32  # as AutoBackend's

    def __call__(self, batch: torch.Tensor) -> Any:
        with autocast(self.amp, device=self.device.type):
            return self.model(batch)


class TiledDetectionValidator(DetectionValidator):
    """DetectionValidator that scores whole val images cut into tiles and merged as predict does."""

    def __init__(
        self,
        dataloader: Any = None,
        save_dir: Any = None,
        args: Any = None,
        _callbacks: dict | None = None,
        *,
        tile_size: int,
        overlap: float,
        image_side: int | None,
    ) -> None:
        super().__init__(dataloader, save_dir, args, _callbacks)
        self.tiling = Tiling(tile_size, overlap)
        self.image_side = image_side  # the training tiles' typical side: with imgsz, the scale the tiles run at
        # plot_matches draws the matched boxes on the letterboxed input; here they are in image pixels
        self.args.visualize = False
        self.detector: Detector | None = None
        self._batch: dict[str, Any] = {}
        self._labels: dict[str, dict[str, Any]] = {}

    def init_metrics(self, model: torch.nn.Module) -> None:
        super().init_metrics(model)
        self.detector = self._detector(model)
        self._labels = {label["im_file"]: label for label in self.dataloader.dataset.labels}

    def _detector(self, model: Any) -> Detector:
        """Predict's detector around the model being validated: best.pt's AutoBackend (fused, as predict loads it)
        in the final validation, the EMA model during training."""
        if isinstance(model, AutoBackend):
            backend: Any = model
        else:
            backend = _TrainingNetwork(model, self.device, self.end2end, amp=self.args.quantize == 16)
        size = inference_scale(0, self.tiling.size, int(self.args.imgsz), self.image_side).size
        names = {int(k): str(v) for k, v in model.names.items()}
        nms = {"conf": self.args.conf, "iou": self.args.iou, "max_det": self.args.max_det}
        detector = Detector({"torch": backend}, names, size, "validation", **nms)
        detector._letterbox = LetterBox(
            size, auto=True, stride=int(backend.stride)
        )  # as build_checkpoint_detector makes it
        return detector

    def preprocess(self, batch: dict[str, Any]) -> dict[str, Any]:
        self._batch = super().preprocess(batch)  # postprocess needs its image files
        return self._batch

    def postprocess(self, preds: Any) -> list[dict[str, torch.Tensor]]:
        """The batch's images as predict sees them; the whole-image ``preds`` served the validation loss only."""
        files = self._batch["im_file"]
        size = self.dataloader.batch_size or self.args.batch
        with ThreadPoolExecutor(min(PREPARE_THREADS, len(files))) as pool:  # decoding releases the GIL, as in predict
            items = pool.map(prepare, files, repeat(self.detector), repeat(False), repeat(self.tiling))
            return [self._scored(item) for item in run_batches(items, self.detector, size)]

    def _scored(self, item: Prepared) -> dict[str, torch.Tensor]:
        if item.error:  # ultralytics read it; predict's reader could not: say which, rather than score it empty
            raise RuntimeError(f"tiled validation: {item.path}: {item.error}")
        merged = torch.from_numpy(item.merged(self.detector.iou, self.detector.max_det)).to(self.device)
        return {"bboxes": merged[:, :4], "conf": merged[:, 4], "cls": merged[:, 5], "extra": merged[:, 6:]}

    def _prepare_batch(self, si: int, batch: dict[str, Any]) -> dict[str, Any]:
        """The image's labels in image pixels (the dataset's own, not the letterboxed copy), as the predictions are."""
        prepared = super()._prepare_batch(si, batch)
        label = self._labels[prepared["im_file"]]
        height, width = prepared["ori_shape"]
        cls = torch.as_tensor(label["cls"], dtype=torch.float32, device=self.device).reshape(-1)
        xywhn = torch.as_tensor(label["bboxes"], dtype=torch.float32, device=self.device).reshape(-1, 4)
        bboxes = ops.xywh2xyxy(xywhn) * torch.tensor([width, height, width, height], device=self.device)
        return {**prepared, "cls": cls, "bboxes": bboxes, "imgsz": (height, width), "ratio_pad": IN_IMAGE_PIXELS}

    def plot_predictions(
        self, batch: dict[str, Any], preds: list[dict[str, torch.Tensor]], ni: int, max_det: int | None = None
    ) -> None:
        """Drawn on the letterboxed images the dataloader made: the boxes go from image pixels to theirs."""
        shown = []
        for si, pred in enumerate(preds):
            (gain_h, gain_w), (pad_w, pad_h) = batch["ratio_pad"][si]
            gain = torch.tensor([gain_w, gain_h, gain_w, gain_h], device=pred["bboxes"].device)
            pad = torch.tensor([pad_w, pad_h, pad_w, pad_h], device=pred["bboxes"].device)
            shown.append({**pred, "bboxes": pred["bboxes"] * gain + pad})
        super().plot_predictions(batch, shown, ni, max_det)

"""Regions the classification loss leaves out: the parts of boxes a tile's border cut below ``min_visible``
(``data.tile.cut_boxes: ignore``, `pipeline.data.tiles`).

Such a tile keeps the defect's pixels; unlabelled, the loss would score every anchor on them as background
and teach that a defect is background. The regions travel as boxes of one extra class, ``nc``, added to the
training dataset's labels (`IgnoreRegions.add_to`), so mosaic, the affine, the flips and the square's
symmetries move them with the pixels. Before the loss, the batch's rows of that class are taken out
(`IgnoreRegions.take`) and the classification BCE of each detection loss (`IgnoringBCE`) gives no loss to an
anchor whose centre lies in a region of its image and which no true box claims. The box and DFL losses
only see anchors a true box claims, so they are unchanged; so is the loss's normalisation.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pipeline.data.annotations import Problem
from pipeline.data.tiles import ignore_file, ignore_folder
from pipeline.data.yolo import parse_label_line
from pipeline.training.assignment import detection_losses
from pipeline.training.callbacks.base import Callback, unwrapped

LOG = logging.getLogger("pipeline.training")


def _read_regions(image: str) -> np.ndarray:
    """The YOLO lines of an image's ignore file as (n, 4) normalised xywh; none when it has no file. A line (or a
    file) that cannot be read is left out with one warning naming it: the regions only refine the loss."""
    path = ignore_file(image)
    if path is None or not path.is_file():
        return np.zeros((0, 4), np.float32)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        LOG.warning("train: %s: left out (%s)", path, type(exc).__name__)
        return np.zeros((0, 4), np.float32)
    rows = []
    for number, line in enumerate(lines, 1):
        parsed = parse_label_line(line, number, path, 1, 1)  # the labels' own parser, in [0, 1] units
        if isinstance(parsed, Problem):
            LOG.warning("train: %s:%d: %s; left out", path, number, parsed.reason)
        elif parsed is not None:
            rows.append([(parsed.x1 + parsed.x2) / 2, (parsed.y1 + parsed.y2) / 2, parsed.width, parsed.height])
    return np.asarray(rows, np.float32).reshape(-1, 4)


class IgnoringBCE(nn.Module):
    """BCE with logits, per element, as ultralytics' detection loss takes it, with no loss where `regions`
    (set per batch) cover an anchor no true box claims."""

    def __init__(self, strides: Tensor):
        super().__init__()
        self.strides = [float(s) for s in strides]
        self.regions: Tensor | None = None  # (k, 5): image in the batch, x1, y1, x2, y2 in input pixels
        self.image_hw: tuple[int, int] = (0, 0)
        self.anchors_ignored: Tensor | int = 0  # since the last reset, on the device: a count read per batch would sync
        self._centres: dict[tuple[int, int, str], Tensor] = {}

    def centres(self, device: torch.device) -> Tensor:
        """The anchors' centres in input pixels, in the order of ultralytics' ``make_anchors``."""
        key = (*self.image_hw, str(device))
        if key not in self._centres:
            from ultralytics.utils.tal import make_anchors

            height, width = self.image_hw
            sizes = torch.tensor([[height // s, width // s] for s in map(int, self.strides)], device=device)
            points, strides = make_anchors(sizes.float(), self.strides, 0.5)
            self._centres[key] = points * strides
        return self._centres[key]

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if self.regions is None or not len(self.regions):
            return loss
        centres = self.centres(logits.device)
        if len(centres) != logits.shape[1]:  # a head this does not know: leave the loss as ultralytics has it
            return loss
        x, y = centres[:, 0], centres[:, 1]
        boxes = self.regions[:, 1:, None]
        inside = (x >= boxes[:, 0]) & (y >= boxes[:, 1]) & (x <= boxes[:, 2]) & (y <= boxes[:, 3])  # (k, anchors)
        covered = torch.zeros(logits.shape[:2], device=logits.device)
        covered.index_add_(0, self.regions[:, 0].long(), inside.to(covered.dtype))
        ignored = (covered > 0) & (target.sum(-1) == 0)  # an anchor a true box claims learns as always
        self.anchors_ignored = self.anchors_ignored + ignored.sum()
        return loss * (~ignored).unsqueeze(-1).to(loss.dtype)


class IgnoreRegions(Callback):
    """``data.tile.cut_boxes: ignore``: the regions into the training labels, out of the batch, into the loss."""

    def __init__(self) -> None:
        self.ignore_class: int | None = None  # set by `add_to`: off until a dataset has regions
        self.regions = 0  # in the training dataset
        self.anchors_ignored = 0  # in the last epoch, over every detection loss
        self.total_ignored = 0  # over the training
        self.installed: list[IgnoringBCE] = []  # the BCE of each detection loss of the criterion

    @staticmethod
    def present(image_files: list[str]) -> bool:
        """Whether the images have an ``ignore/`` folder beside their ``images/`` one: a tile set cut with
        ``cut_boxes: ignore`` (the training's own cache, or ``data tile --cut-boxes ignore`` trained on as data)."""
        folders = {Path(f).parent for f in image_files}
        return any((found := ignore_folder(folder)) is not None and found.is_dir() for folder in folders)

    def add_to(self, dataset: Any, ignore_class: int) -> int:
        """Each image's regions as labels of ``ignore_class`` (the model's class count); how many there are."""
        added = 0
        for label in dataset.labels:
            regions = _read_regions(label["im_file"])
            if not len(regions):
                continue
            label["bboxes"] = np.concatenate([label["bboxes"], regions]).astype(np.float32)
            label["cls"] = np.concatenate([label["cls"], np.full((len(regions), 1), ignore_class, np.float32)])
            added += len(regions)
        self.ignore_class, self.regions = ignore_class, added
        LOG.info("train: %d parts of boxes cut by a tile's border ignored by the loss (ignore/ beside images/)", added)
        return added

    @contextmanager
    def left_out(self, dataset: Any) -> Iterator[None]:
        """The dataset's labels without the regions for a while: for ultralytics' readers of the labels (class
        weights, the label plot), which know only the model's classes."""
        if self.ignore_class is None:
            yield
            return
        saved = [(label["cls"], label["bboxes"]) for label in dataset.labels]
        for label in dataset.labels:
            keep = label["cls"].ravel() != self.ignore_class
            label["cls"], label["bboxes"] = label["cls"][keep], label["bboxes"][keep]
        try:
            yield
        finally:
            for label, (cls, bboxes) in zip(dataset.labels, saved, strict=True):
                label["cls"], label["bboxes"] = cls, bboxes

    def take(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The batch without the regions' rows; the regions handed to the loss (in the batch's input pixels)."""
        if self.ignore_class is None:
            return batch
        cls = batch["cls"].view(-1)
        region = cls == self.ignore_class
        height, width = batch["img"].shape[2:]
        boxes = batch["bboxes"][region]
        scale = boxes.new_tensor([width, height, width, height])
        xyxy = torch.cat((boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2), 1) * scale
        regions = torch.cat((batch["batch_idx"][region].view(-1, 1).to(xyxy.dtype), xyxy), 1)
        for bce in self.installed:
            bce.regions, bce.image_hw = regions, (int(height), int(width))
        keep = ~region
        for key in ("cls", "bboxes", "batch_idx"):
            batch[key] = batch[key][keep]
        return batch

    def on_train_epoch_start(self, trainer: Any) -> None:
        if self.ignore_class is None:
            return
        model = unwrapped(trainer.model)
        if getattr(model, "criterion", None) is None:  # ultralytics builds it at the first batch; the same one now
            model.criterion = model.init_criterion()
        self.installed = []
        for loss in detection_losses(model.criterion).values():
            if not isinstance(loss.bce, IgnoringBCE):  # a resumed YOLO26 rebuilds its criterion
                loss.bce = IgnoringBCE(loss.stride)
            loss.bce.anchors_ignored = 0
            self.installed.append(loss.bce)
        if not self.installed:
            LOG.warning("train: the loss has no detection loss to ignore regions in; cut parts count as background")

    def on_train_epoch_end(self, trainer: Any) -> None:
        self.anchors_ignored = int(sum(int(bce.anchors_ignored) for bce in self.installed))
        self.total_ignored += self.anchors_ignored

    def on_fit_end(self, trainer: Any, status: str, error: BaseException | None) -> None:
        if self.ignore_class is not None:
            LOG.info("train: the loss left %d anchors on cut parts of boxes out of its background", self.total_ignored)

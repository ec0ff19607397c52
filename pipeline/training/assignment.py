"""Positive target assignments per detection-head level (stride), counted from the loss's own assigner.

Ultralytics' TaskAlignedAssigner returns ``fg_mask`` (images x anchors): which anchors got a target. The anchors
are the head levels' grids laid end to end (stride 8 first), so the level of an anchor is its position. A
forward hook on the assigner reads ``fg_mask`` and the target boxes, without copying any of the loss: per level
the positives and the smallest and largest object (sqrt(w*h), pixels) that went there, accumulated on the
device and read once at the end of the epoch. Each positive also carries the assigner's target score, the
weight of its box and DFL loss: an anchor picked with a score of ~0 (a small object's anchor on a coarse level,
taken to fill the top-k) trains nothing, so a level's share of that weight, not its count, says whether its
box branch learns; a level without it is the ``idle-level`` finding. YOLO26 has two assigners (one-to-many
and one-to-one); each is its own branch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

LOG = logging.getLogger("pipeline.training")
MAIN = ""  # the one-to-many (or only) branch; YOLO26's one-to-one branch is "one2one"
_BRANCHES = {"one2many": MAIN, "one2one": "one2one"}


@dataclass
class BranchCounts:
    """One assigner branch's epoch: per level (stride order) the positives and the object sizes assigned."""

    strides: list[int]
    images: int
    positives: list[float]
    weight: list[float]  # sum of the positives' target scores: what the level's box loss is weighted by
    size_min: list[float]  # NaN where the level got nothing
    size_max: list[float]
    objects: float = 0.0  # target boxes seen
    object_size_min: float = math.nan
    object_size_max: float = math.nan

    def per_image(self) -> list[float]:
        return [p / self.images if self.images else math.nan for p in self.positives]

    def weight_share(self) -> list[float]:
        total = sum(self.weight)
        return [w / total if total > 0 else 0.0 for w in self.weight]

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BranchCounts:
        return cls(**data)


Assignment = dict[str, BranchCounts]  # branch name -> counts


def assignment_to_json(assignment: Assignment | None) -> dict[str, Any] | None:
    return None if assignment is None else {name: counts.to_json() for name, counts in assignment.items()}


def assignment_from_json(data: dict[str, Any] | None) -> Assignment | None:
    return None if data is None else {name: BranchCounts.from_json(counts) for name, counts in data.items()}


def level_metrics(assignment: Assignment | None) -> dict[str, float]:
    """``positives_per_image.stride8`` (main branch), ``positives_per_image.one2one.stride8`` (YOLO26)."""
    out: dict[str, float] = {}
    for branch, counts in (assignment or {}).items():
        prefix = f"positives_per_image.{branch}." if branch else "positives_per_image."
        for stride, value in zip(counts.strides, counts.per_image(), strict=True):
            out[f"{prefix}stride{stride}"] = value
    return out


def detection_losses(criterion: Any) -> dict[str, Any]:
    """The criterion's detection losses (each with its TaskAlignedAssigner) by branch: ``{"": criterion}`` for
    YOLO11, its one2many and one2one losses for YOLO26."""
    from ultralytics.utils.tal import TaskAlignedAssigner

    found = {}
    if isinstance(getattr(criterion, "assigner", None), TaskAlignedAssigner):
        found[MAIN] = criterion
    for attribute, branch in _BRANCHES.items():
        loss = getattr(criterion, attribute, None)
        if isinstance(getattr(loss, "assigner", None), TaskAlignedAssigner):
            found[branch] = loss
    return found


def find_assigners(criterion: Any) -> dict[str, torch.nn.Module]:
    """The criterion's TaskAlignedAssigners by branch: ``{"": a}`` for YOLO11, one2many and one2one for YOLO26."""
    return {branch: loss.assigner for branch, loss in detection_losses(criterion).items()}


def level_ids(anchor_points: Tensor, strides: list[int]) -> Tensor | None:
    """The level of each anchor: each level's grid starts at (stride/2, stride/2), found after the previous one."""
    points = anchor_points.detach().float().cpu()
    starts = [0]
    for stride in strides[1:]:
        after = points[starts[-1] + 1 :]
        hits = ((after[:, 0] == stride / 2) & (after[:, 1] == stride / 2)).nonzero()
        if len(hits) == 0:
            return None
        starts.append(starts[-1] + 1 + int(hits[0]))
    ids = torch.zeros(len(points), dtype=torch.long)
    for level, start in enumerate(starts[1:], 1):
        ids[start:] = level
    return ids.to(anchor_points.device)


class _Branch:
    """Device accumulators for one assigner."""

    def __init__(self, strides: list[int]):
        self.strides = strides
        self._ids: dict[tuple[int, str], Tensor | None] = {}  # per anchor count and device: level of each anchor
        self.reset()

    def reset(self) -> None:
        self.images = 0
        self.sums: Tensor | None = None  # [L] positives
        self.weights: Tensor | None = None  # [L] their target scores
        self.mins: Tensor | None = None  # [L] smallest assigned object
        self.maxs: Tensor | None = None
        self.objects: Tensor | None = None  # [3] count, smallest, largest

    def add(
        self, anchor_points: Tensor, gt_bboxes: Tensor, mask_gt: Tensor, scores: Tensor, fg_mask: Tensor, gt_idx: Tensor
    ) -> None:
        key = (anchor_points.shape[0], str(anchor_points.device))
        if key not in self._ids:  # once per image size: the only host read, cached
            self._ids[key] = level_ids(anchor_points, self.strides)
        ids = self._ids[key]
        if ids is None:
            return
        device, levels = fg_mask.device, len(self.strides)
        if self.sums is None:
            self.sums = torch.zeros(levels, device=device)
            self.weights = torch.zeros(levels, device=device)
            self.mins = torch.full((levels,), math.inf, device=device)
            self.maxs = torch.full((levels,), -math.inf, device=device)
            self.objects = torch.tensor([0.0, math.inf, -math.inf], device=device)
        self.images += fg_mask.shape[0]
        if gt_bboxes.shape[1] == 0:  # no targets in the batch: nothing assigned
            return
        wh = (gt_bboxes[..., 2:4] - gt_bboxes[..., 0:2]).float().clamp(min=0)
        size = wh.prod(-1).sqrt()  # [B, M]
        valid = mask_gt.squeeze(-1).bool()
        anchor_size = size.gather(1, gt_idx.long())  # [B, N] the size of each anchor's target
        self.sums.index_add_(0, ids, fg_mask.sum(0, dtype=self.sums.dtype))
        self.weights.index_add_(0, ids, torch.where(fg_mask, scores.float().sum(-1), 0.0).sum(0))
        self.mins.scatter_reduce_(0, ids, torch.where(fg_mask, anchor_size, math.inf).amin(0), "amin")
        self.maxs.scatter_reduce_(0, ids, torch.where(fg_mask, anchor_size, -math.inf).amax(0), "amax")
        self.objects = torch.stack(
            [
                self.objects[0] + valid.sum(),
                torch.minimum(self.objects[1], torch.where(valid, size, math.inf).amin()),
                torch.maximum(self.objects[2], torch.where(valid, size, -math.inf).amax()),
            ]
        )

    def result(self) -> BranchCounts | None:
        if self.sums is None:
            return None
        host = torch.cat([self.sums, self.mins, self.maxs, self.objects, self.weights]).cpu().tolist()
        n = len(self.strides)

        def finite(values: list[float]) -> list[float]:
            return [v if math.isfinite(v) else math.nan for v in values]

        return BranchCounts(
            strides=list(self.strides),
            images=self.images,
            positives=host[:n],
            weight=host[3 * n + 3 :],
            size_min=finite(host[n : 2 * n]),
            size_max=finite(host[2 * n : 3 * n]),
            objects=host[3 * n],
            object_size_min=finite([host[3 * n + 1]])[0],
            object_size_max=finite([host[3 * n + 2]])[0],
        )


class AssignmentCounter:
    """Hooks the training criterion's assigners and counts positives per level, per epoch."""

    def __init__(self) -> None:
        self._criterion: Any = None
        self._handles: list[Any] = []
        self._branches: dict[str, _Branch] = {}

    def attach(self, criterion: Any) -> bool:
        """Hook ``criterion``'s assigners (again only if the criterion was replaced); False if it has none."""
        if criterion is self._criterion:
            return bool(self._handles)
        self.detach()
        self._criterion = criterion
        for branch, assigner in find_assigners(criterion).items():
            strides = [int(s) for s in assigner.stride] if getattr(assigner, "stride", None) is not None else []
            if not strides:
                continue
            counts = self._branches.setdefault(branch, _Branch(strides))
            self._handles.append(assigner.register_forward_hook(self._hook(counts), with_kwargs=True))
        return bool(self._handles)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._criterion = [], None

    def begin_epoch(self) -> None:
        for counts in self._branches.values():
            counts.reset()

    def end_epoch(self) -> Assignment | None:
        """The epoch's counts (one transfer per branch), or None if the assigners never ran."""
        results = {name: c.result() for name, c in self._branches.items()}
        results = {name: r for name, r in results.items() if r is not None}
        return results or None

    @staticmethod
    def _hook(counts: _Branch):
        names = ("pd_scores", "pd_bboxes", "anc_points", "gt_labels", "gt_bboxes", "mask_gt")

        def hook(_module: Any, args: tuple, kwargs: dict, output: tuple) -> None:
            inputs = dict(zip(names, args, strict=False)) | kwargs
            try:
                with torch.no_grad():
                    counts.add(
                        inputs["anc_points"], inputs["gt_bboxes"], inputs["mask_gt"], output[2], output[3], output[4]
                    )
            except Exception as exc:  # noqa: BLE001 - a count must never cost the training
                LOG.debug("gradients: positives not counted (%s: %s)", type(exc).__name__, exc)

        return hook

"""Per-layer gradient statistics: fused multi-tensor ops, accumulated on the device, one transfer per epoch.

The optimizer step calls :meth:`GradientMonitor.observe_gradients` after the AMP unscale and before
clipping, so the values are the true gradients of the loss, and :meth:`GradientMonitor.observe_update`
after the optimiser has changed the weights, for ||dw|| / ||w||. Given the step's loss, the monitor also
follows the epoch's course (its first sampled step's loss and total norm, the loss's peak and last), which
the diagnosis reads to judge an epoch against its own first batches. Every statistic of every parameter
comes from a handful of ``torch._foreach_*`` calls (no Python loop with a device sync per parameter);
per-parameter values are folded into groups with ``index_add_``/``scatter_reduce_``. Nothing leaves the
device until :meth:`GradientMonitor.end_epoch`, which makes one transfer and reduces the epoch's samples
to mean, max and last.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# Row order of the per-group statistics on the device.
STATS = ("grad_norm", "grad_max", "grad_nonfinite", "weight_norm", "update_ratio")
REDUCTIONS = ("mean", "max", "last")
# Run-wide statistics of the total (all-parameter) gradient norm, before clipping.
TOTALS = ("grad_total_norm", "grad_total_norm_max", "grad_total_norm_last", "grad_clipped_fraction")
COUNTS = ("grad_steps", "grad_nonfinite_steps")
# The epoch's course over its sampled steps, for the diagnosis (not sent to MLflow): the first step's total norm and
# loss (in a training's first epoch those of the untrained model), the loss's peak and its last value.
COURSE = ("norm_first", "loss_first", "loss_max", "loss_last")
# What the compact record (``gradients.detail: block``) sends per part: how big the gradient is, how fast it learns.
PART_STATS = ("grad_norm", "update_ratio")
DETAILS = ("block", "layer")
# A detection head's per-level branches: cv2 (box), cv3 (class), cv4 (masks, keypoints, angles); YOLO26's one2one_*.
_HEAD_BRANCH = re.compile(r"(one2one_)?cv\d+")


def group_name(param_name: str, grouping: str) -> str:
    """``model.2.cv1.conv.weight`` -> itself (parameter), ``model.2.cv1.conv`` (layer) or ``model.2`` (block)."""
    if grouping == "parameter":
        return param_name
    owner = param_name.rpartition(".")[0] or param_name
    if grouping == "layer":
        return owner
    parts = param_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():  # ultralytics numbers its blocks: model.<i>.
            return ".".join(parts[: i + 1])
    return parts[0]


def part_name(param_name: str, heads: frozenset[str] = frozenset()) -> str:
    """The part a parameter belongs to: its block (``model.2``), or in a detection head (a block in ``heads``) its
    branch and level, ``model.23.cv2.0`` (box branch of level 0, stride 8), ``model.23.one2one_cv3.2``; other head
    modules by their first name (``model.23.proto``)."""
    block = group_name(param_name, "block")
    if block not in heads:
        return block
    rest = param_name[len(block) + 1 :].split(".")
    if len(rest) > 2 and _HEAD_BRANCH.fullmatch(rest[0]) and rest[1].isdigit():
        return f"{block}.{rest[0]}.{rest[1]}"
    return f"{block}.{rest[0]}" if len(rest) > 1 else block


def head_blocks(model: nn.Module) -> frozenset[str]:
    """Names of the modules that are ultralytics detection heads (Detect and its Segment, Pose, OBB, v10/26 kin)."""
    try:
        from ultralytics.nn.modules.head import Detect
    except ImportError:  # pragma: no cover - ultralytics is a dependency; a plain model has no head to split
        return frozenset()
    return frozenset(name for name, module in model.named_modules() if isinstance(module, Detect))


def _sections(model: nn.Module, parts: list[str], heads: frozenset[str]) -> dict[str, str]:
    """backbone, neck or head for each part of an ultralytics model (its YAML lists the backbone's blocks first)."""
    spec = getattr(model, "yaml", None)
    backbone = len(spec.get("backbone", [])) if isinstance(spec, dict) else 0
    if not backbone:
        return {}
    out = {}
    for part in parts:
        block = group_name(part + ".x", "block")
        number = block.rpartition(".")[2]
        if block in heads:
            out[part] = "head"
        elif number.isdigit():
            out[part] = "backbone" if int(number) < backbone else "neck"
    return out


def metric_key(stat: str, reduction: str, group: str) -> str:
    """``grad_norm.model.2.cv1.conv`` for the epoch mean, ``grad_norm_max.model.2.cv1.conv`` for the max."""
    return f"{stat}.{group}" if reduction == "mean" else f"{stat}_{reduction}.{group}"


@dataclass(frozen=True)
class ParameterGroups:
    """The trainable parameters and, for each, the index of the group it belongs to and of its part.

    Every statistic is folded into ``columns``: the G groups (the table's rows, ``gradients.grouping``),
    then the parts (blocks and head levels, the compact MLflow record), both in one ``index_add_`` over the
    per-parameter values written twice, so the parts cost no extra kernel and are exact per step (a block's
    norm is the sqrt of the sum of its layers' squared norms, its update ratio ||dw_block|| / ||w_block||).
    """

    names: list[str]
    params: list[nn.Parameter]
    index: Tensor  # [P] group of each parameter
    numel: Tensor  # [G] elements per group
    parts: list[str] = field(default_factory=list)
    group_parts: list[str] = field(default_factory=list)  # [G] the part of each group ("" if it spans several)
    fold: Tensor | None = None  # [2P] column of each parameter's group, then of its part (G + part)
    columns_numel: Tensor | None = None  # [G + parts] elements per column
    frozen: dict[str, str] = field(default_factory=dict)  # groups with no trainable parameter -> their part
    sections: dict[str, str] = field(default_factory=dict)  # part -> backbone | neck | head (ultralytics models)

    @classmethod
    def of(cls, model: nn.Module, grouping: str = "layer") -> ParameterGroups:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("gradients: the model has no trainable parameters")
        groups = [group_name(name, grouping) for name, _ in named]
        names = list(dict.fromkeys(groups))  # in model order
        heads = head_blocks(model)
        of_param = [part_name(name, heads) for name, _ in named]
        parts = list(dict.fromkeys(of_param))
        position = {name: i for i, name in enumerate(names)}
        part_position = {name: len(names) + i for i, name in enumerate(parts)}
        device = named[0][1].device
        # Statistics in float32, or float64 for a float64 model (half-precision values are widened, never narrowed).
        dtype = functools.reduce(torch.promote_types, (p.dtype for _, p in named), torch.float32)
        index = torch.tensor([position[g] for g in groups], device=device)
        fold = torch.cat([index, torch.tensor([part_position[part] for part in of_param], device=device)])
        sizes = torch.tensor([float(p.numel()) for _, p in named], device=device, dtype=dtype)
        numel = torch.zeros(len(names), device=device, dtype=dtype).index_add_(0, index, sizes)
        columns_numel = torch.zeros(len(names) + len(parts), device=device, dtype=dtype).index_add_(
            0, fold, sizes.repeat(2)
        )
        spans: dict[str, set[str]] = {}
        for group, part in zip(groups, of_param, strict=True):
            spans.setdefault(group, set()).add(part)
        group_parts = [next(iter(spans[g])) if len(spans[g]) == 1 else "" for g in names]
        frozen: dict[str, str] = {}  # requires_grad=False (the config's freeze, ultralytics' .dfl), in model order
        for name, p in model.named_parameters():
            if not p.requires_grad and group_name(name, grouping) not in position:
                frozen.setdefault(group_name(name, grouping), part_name(name, heads))
        sections = _sections(model, [*parts, *frozen.values()], heads)
        return cls(
            names,
            [p for _, p in named],
            index,
            numel,
            parts,
            group_parts,
            fold,
            columns_numel,
            frozen,
            sections,
        )

    def __len__(self) -> int:
        return len(self.names)

    @property
    def width(self) -> int:
        """Columns of the folded statistics: the groups, then the parts."""
        return len(self.names) + len(self.parts)

    def _fold(self) -> tuple[Tensor, Tensor, int]:
        if self.fold is None or self.columns_numel is None:  # groups made by hand, without parts
            return self.index, self.numel, 1
        return self.fold, self.columns_numel, 2

    def norm(self, per_param: Tensor) -> Tensor:
        """Column L2 norms from per-parameter L2 norms: sqrt of the sum of squares within each group and part."""
        index, numel, copies = self._fold()
        return torch.zeros_like(numel).index_add_(0, index, per_param.square().repeat(copies)).sqrt()

    def amax(self, per_param: Tensor) -> Tensor:
        index, numel, copies = self._fold()
        out = torch.full_like(numel, -math.inf)
        return out.scatter_reduce_(0, index, per_param.repeat(copies), "amax", include_self=True)

    def total(self, per_param: Tensor) -> Tensor:
        index, numel, copies = self._fold()
        return torch.zeros_like(numel).index_add_(0, index, per_param.repeat(copies))

    def columns_size(self) -> Tensor:
        return self._fold()[1]


def _norms(tensors: list[Tensor], dtype: torch.dtype, order: float = 2.0) -> Tensor:
    return torch.stack(torch._foreach_norm(tensors, order, dtype=dtype))


@dataclass
class GradientStats:
    """One step's gradient statistics, per column (groups, then parts), still on the device."""

    columns: Tensor  # [3, G + parts]: L2 norm, max |g|, fraction of NaN/inf values
    groups: int  # G
    total_norm: Tensor  # [] L2 norm over every parameter, as clip_grad_norm_ computes it

    @property
    def grad_norm(self) -> Tensor:  # [G]
        return self.columns[0, : self.groups]

    @property
    def grad_max(self) -> Tensor:  # [G]
        return self.columns[1, : self.groups]

    @property
    def grad_nonfinite(self) -> Tensor:  # [G]
        return self.columns[2, : self.groups]


def gradient_stats(grads: list[Tensor], groups: ParameterGroups) -> GradientStats:
    """Per-group (and per-part) statistics of ``grads`` (one tensor per parameter of ``groups``), on the device."""
    dtype = groups.numel.dtype
    norms = _norms(grads, dtype)
    maxes = _max_magnitudes(grads, dtype)
    columns = torch.stack(
        [
            groups.norm(norms),
            groups.amax(maxes),
            groups.total(_nonfinite_counts(grads, maxes)) / groups.columns_size(),
        ]
    )
    return GradientStats(columns=columns, groups=len(groups), total_norm=torch.linalg.vector_norm(norms))


def on_host(tensor: Tensor) -> bool:
    return tensor.device.type == "cpu"


def _max_magnitudes(grads: list[Tensor], dtype: torch.dtype) -> Tensor:
    """max |g| per parameter (NaN if any NaN, inf if any inf), reading each gradient once."""
    if not on_host(grads[0]):
        return _norms(grads, dtype, math.inf)  # one fused kernel on a GPU
    # On the CPU the fused inf-norm falls back to a slow generic kernel; aminmax is one vectorised pass each,
    # and with no device there is nothing for a per-tensor call to wait for.
    extremes = [torch.aminmax(g) for g in grads]
    lows = torch.stack([low for low, _ in extremes]).to(dtype)
    highs = torch.stack([high for _, high in extremes]).to(dtype)
    return torch.maximum(-lows, highs)


def _nonfinite_counts(grads: list[Tensor], maxes: Tensor) -> Tensor:
    """NaN/inf values per parameter."""
    if on_host(maxes) and bool(maxes.isfinite().all()):
        # On the CPU a flag is read for free (no device to wait for), so skip the count when there is nothing to count.
        return torch.zeros_like(maxes)
    # g - g is 0 where g is finite and NaN elsewhere; an L0 "norm" counts the non-zeros, i.e. the non-finite.
    return _norms(torch._foreach_sub(grads, grads), maxes.dtype, 0.0)


def step_loss(loss: Tensor | dict[str, Tensor] | None, like: Tensor) -> Tensor:
    """A step's loss as one number on ``like``'s device: the sum of ultralytics' loss items (a dict of tensors, or
    one tensor in older versions), NaN when there is none. No read back: it stays on the device."""
    if loss is None:
        return torch.full_like(like, math.nan)
    items = list(loss.values()) if isinstance(loss, dict) else [loss]
    sums = [torch.as_tensor(item).detach().to(device=like.device, dtype=like.dtype).sum() for item in items]
    return torch.stack(sums).sum() if sums else torch.full_like(like, math.nan)


@dataclass
class EpochGradients:
    """An epoch's statistics on the host: ``values[stat][reduction]`` is one number per group (layer), and
    ``part_values[stat][reduction]`` one per part (block ``model.N``, or head branch and level ``model.23.cv2.0``)."""

    epoch: int  # 1-based, the MLflow step
    groups: list[str]
    values: dict[str, dict[str, list[float]]]
    totals: dict[str, float] = field(default_factory=dict)
    parts: list[str] = field(default_factory=list)
    part_values: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    group_parts: list[str] = field(default_factory=list)  # the part of each group, "" if it spans several
    frozen: dict[str, str] = field(default_factory=dict)  # frozen groups (no statistics) -> their part
    sections: dict[str, str] = field(default_factory=dict)  # part -> backbone | neck | head
    course: dict[str, float] = field(default_factory=dict)  # COURSE: NaN where no loss was given

    def metrics(self, reductions: tuple[str, ...] | list[str] = REDUCTIONS, detail: str = "block") -> dict[str, float]:
        """The epoch's MLflow record: per part (``block``, the default: gradient norm and update ratio) or per
        group with every statistic (``layer``), for each of ``reductions``; then the run-wide totals."""
        if detail == "layer" or not self.parts:  # an epoch read from an old history has only its groups
            names, values, stats = self.groups, self.values, tuple(self.values)
        elif detail == "block":
            names, values, stats = self.parts, self.part_values, PART_STATS
        else:
            raise ValueError(f"gradients: detail must be one of {', '.join(DETAILS)}, got {detail!r}")
        out = {
            metric_key(stat, reduction, name): value
            for stat in stats
            for reduction in reductions
            for name, value in zip(names, values[stat][reduction], strict=True)
        }
        out.update(self.totals)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "groups": self.groups,
            "values": self.values,
            "totals": self.totals,
            "parts": self.parts,
            "part_values": self.part_values,
            "group_parts": self.group_parts,
            "frozen": self.frozen,
            "sections": self.sections,
            "course": self.course,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpochGradients:
        return cls(
            data["epoch"],
            data["groups"],
            data["values"],
            data.get("totals", {}),
            data.get("parts", []),
            data.get("part_values", {}),
            data.get("group_parts", []),
            data.get("frozen", {}),
            data.get("sections", {}),
            data.get("course", {}),
        )


class GradientMonitor:
    """Accumulates the statistics of sampled optimizer steps on the device; reduces them once per epoch."""

    def __init__(self, model: nn.Module, grouping: str = "layer", every: int = 1, clip_norm: float = 10.0):
        self.groups = ParameterGroups.of(model, grouping)
        self.every = every
        self.clip_norm = clip_norm
        self.steps_seen = 0  # optimizer steps so far in this epoch
        self.sampling = False  # whether the current optimizer step is sampled
        self._before: list[Tensor] | None = None  # the weights before the step, for ||dw||
        self._pending: Tensor | None = None  # this step's gradient rows, completed by observe_update
        self._total: Tensor | None = None
        self._loss: Tensor | None = None  # this step's loss, NaN when not given
        self.reset()

    @property
    def params(self) -> list[nn.Parameter]:
        return self.groups.params

    def reset(self) -> None:
        """Start a new accumulation interval (an epoch), whose first optimizer step is always sampled."""
        self.steps_seen = 0  # so no epoch goes without statistics, however large ``every`` is
        shape, like = (len(STATS), self.groups.width), self.groups.numel
        self._sum = torch.zeros(shape, device=like.device, dtype=like.dtype)
        self._count = torch.zeros(shape, device=like.device, dtype=like.dtype)
        self._max = torch.full(shape, -math.inf, device=like.device, dtype=like.dtype)
        self._last = torch.full(shape, math.nan, device=like.device, dtype=like.dtype)
        # total-norm sum, finite count, max, last; clipped steps, non-finite steps, sampled steps
        self._totals = torch.tensor(
            [0.0, 0.0, -math.inf, math.nan, 0.0, 0.0, 0.0], device=like.device, dtype=like.dtype
        )
        self._course = torch.tensor([math.nan, math.nan, -math.inf, math.nan], device=like.device, dtype=like.dtype)
        self._folded = 0  # sampled steps folded into this interval (a host count: no device read)

    def due(self) -> bool:
        """Whether this optimizer step is sampled (every ``every``-th step of the epoch, counting from its first)."""
        self.sampling = self.steps_seen % self.every == 0
        self.steps_seen += 1
        return self.sampling

    def gradients(self) -> list[Tensor]:
        zeros = None
        grads = []
        for p in self.params:
            if p.grad is None:  # a parameter the loss did not reach this step: its gradient is zero
                zeros = torch.zeros((), device=p.device) if zeros is None else zeros
                grads.append(zeros)
            else:
                grads.append(p.grad)
        return grads

    def observe_gradients(self, loss: Tensor | dict[str, Tensor] | None = None) -> Tensor:
        """Record this step's gradients (unscaled, not yet clipped) and, if given, its loss (ultralytics' loss items,
        a dict or a tensor, still on the device); returns the total norm for clipping."""
        stats = gradient_stats(self.gradients(), self.groups)
        self._pending = stats.columns
        self._total = stats.total_norm
        self._loss = step_loss(loss, stats.total_norm)
        weights = [p.detach() for p in self.params]
        if self._before is None:
            self._before = [torch.empty_like(w) for w in weights]
        torch._foreach_copy_(self._before, weights)
        return stats.total_norm

    def observe_update(self) -> None:
        """After the optimiser step: weight norms and ||dw|| / ||w||, then fold the whole step into the epoch."""
        if self._pending is None or self._before is None:
            return
        weights = [p.detach() for p in self.params]
        torch._foreach_sub_(self._before, weights)  # now -dw, in place: no second copy of the model
        # One call for both norms: ||w|| and ||dw|| per parameter.
        both = _norms(weights + self._before, self.groups.numel.dtype)
        weight_norm, update_norm = (self.groups.norm(half) for half in both.split(len(weights)))  # [G + parts]
        update_ratio = torch.where(weight_norm > 0, update_norm / weight_norm, torch.zeros_like(weight_norm))
        self._accumulate(torch.cat([self._pending, weight_norm[None], update_ratio[None]]), self._total)
        self._follow(self._total, self._loss)
        self._pending = self._total = self._loss = None

    def _accumulate(self, rows: Tensor, total: Tensor) -> None:
        finite = rows.isfinite()
        self._sum += torch.where(finite, rows, 0.0)
        self._count += finite
        self._max = torch.fmax(self._max, rows)  # fmax ignores NaN, keeps inf
        self._last = rows
        total_finite = total.isfinite()
        step = torch.stack(
            [
                torch.where(total_finite, total, 0.0),
                total_finite.to(total.dtype),
                torch.fmax(self._totals[2], total),
                total,
                (self.clip_norm / (total + 1e-6) < 1.0).to(total.dtype),  # the test clip_grads_with_norm_ applies
                (~total_finite).to(total.dtype),
                torch.ones((), device=total.device, dtype=total.dtype),
            ]
        )
        self._totals = torch.cat([self._totals[:2] + step[:2], step[2:4], self._totals[4:] + step[4:]])

    def _follow(self, total: Tensor, loss: Tensor | None) -> None:
        """The epoch's course: its first sampled step's total norm and loss, then the loss's peak and last."""
        if loss is None:
            loss = torch.full_like(total, math.nan)
        first = self._course[:2] if self._folded else torch.stack([total, loss])
        self._course = torch.cat([first, torch.fmax(self._course[2], loss)[None], loss[None]])
        self._folded += 1

    def end_epoch(self, epoch: int) -> EpochGradients | None:
        """Reduce the interval's samples to mean, max and last (one device-to-host transfer); None if nothing was sampled."""
        packed = torch.cat(
            [
                self._sum.flatten(),
                self._count.flatten(),
                self._max.flatten(),
                self._last.flatten(),
                self._totals,
                self._course,
            ]
        )
        host = packed.cpu().tolist()
        n = len(STATS) * self.groups.width
        sums, counts, maxes, lasts, totals = (
            host[:n],
            host[n : 2 * n],
            host[2 * n : 3 * n],
            host[3 * n : 4 * n],
            host[4 * n : -len(COURSE)],
        )
        course = dict(zip(COURSE, host[-len(COURSE) :], strict=True))
        course["loss_max"] = course["loss_max"] if course["loss_max"] != -math.inf else math.nan
        steps = int(totals[6])
        if steps == 0:
            return None
        g, width = len(self.groups), self.groups.width
        values: dict[str, dict[str, list[float]]] = {}
        part_values: dict[str, dict[str, list[float]]] = {}
        for row, stat in enumerate(STATS):
            cells = slice(row * width, (row + 1) * width)
            reduced = {
                "mean": [s / c if c else math.nan for s, c in zip(sums[cells], counts[cells], strict=True)],
                "max": [m if m != -math.inf else math.nan for m in maxes[cells]],
                "last": lasts[cells],
            }
            values[stat] = {reduction: column[:g] for reduction, column in reduced.items()}
            part_values[stat] = {reduction: column[g:] for reduction, column in reduced.items()}
        total_sum, total_count, total_max, total_last, clipped, nonfinite = totals[:6]
        return EpochGradients(
            epoch=epoch,
            groups=list(self.groups.names),
            values=values,
            totals={
                "grad_total_norm": total_sum / total_count if total_count else math.nan,
                "grad_total_norm_max": total_max if total_max != -math.inf else math.nan,
                "grad_total_norm_last": total_last,
                "grad_clipped_fraction": clipped / steps,
                "grad_steps": float(steps),
                "grad_nonfinite_steps": nonfinite,
            },
            parts=list(self.groups.parts),
            part_values=part_values,
            group_parts=list(self.groups.group_parts),
            frozen=dict(self.groups.frozen),
            sections=dict(self.groups.sections),
            course=course,
        )

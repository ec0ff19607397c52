"""Per-layer gradient statistics: fused multi-tensor ops, accumulated on the device, one transfer per epoch.

The optimizer step calls :meth:`GradientMonitor.observe_gradients` after the AMP unscale and before
clipping, so the values are the true gradients of the loss, and :meth:`GradientMonitor.observe_update`
after the optimiser has changed the weights, for ||dw|| / ||w||. Every statistic of every parameter
comes from a handful of ``torch._foreach_*`` calls (no Python loop with a device sync per parameter);
per-parameter values are folded into groups with ``index_add_``/``scatter_reduce_``. Nothing leaves the
device until :meth:`GradientMonitor.end_epoch`, which makes one transfer and reduces the epoch's samples
to mean, max and last.
"""

from __future__ import annotations

import functools
import math
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


def metric_key(stat: str, reduction: str, group: str) -> str:
    """``grad_norm.model.2.cv1.conv`` for the epoch mean, ``grad_norm_max.model.2.cv1.conv`` for the max."""
    return f"{stat}.{group}" if reduction == "mean" else f"{stat}_{reduction}.{group}"


@dataclass(frozen=True)
class ParameterGroups:
    """The trainable parameters and, for each, the index of the group it belongs to."""

    names: list[str]
    params: list[nn.Parameter]
    index: Tensor  # [P] group of each parameter
    numel: Tensor  # [G] elements per group

    @classmethod
    def of(cls, model: nn.Module, grouping: str = "layer") -> ParameterGroups:
        named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
        if not named:
            raise ValueError("gradients: the model has no trainable parameters")
        groups = [group_name(name, grouping) for name, _ in named]
        names = list(dict.fromkeys(groups))  # in model order
        position = {name: i for i, name in enumerate(names)}
        device = named[0][1].device
        # Statistics in float32, or float64 for a float64 model (half-precision values are widened, never narrowed).
        dtype = functools.reduce(torch.promote_types, (p.dtype for _, p in named), torch.float32)
        index = torch.tensor([position[g] for g in groups], device=device)
        sizes = torch.tensor([float(p.numel()) for _, p in named], device=device, dtype=dtype)
        numel = torch.zeros(len(names), device=device, dtype=dtype).index_add_(0, index, sizes)
        return cls(names, [p for _, p in named], index, numel)

    def __len__(self) -> int:
        return len(self.names)

    def norm(self, per_param: Tensor) -> Tensor:
        """Group L2 norms from per-parameter L2 norms: sqrt of the sum of squares within each group."""
        return torch.zeros_like(self.numel).index_add_(0, self.index, per_param.square()).sqrt()

    def amax(self, per_param: Tensor) -> Tensor:
        out = torch.full_like(self.numel, -math.inf)
        return out.scatter_reduce_(0, self.index, per_param, "amax", include_self=True)

    def total(self, per_param: Tensor) -> Tensor:
        return torch.zeros_like(self.numel).index_add_(0, self.index, per_param)


def _norms(tensors: list[Tensor], dtype: torch.dtype, order: float = 2.0) -> Tensor:
    return torch.stack(torch._foreach_norm(tensors, order, dtype=dtype))


@dataclass
class GradientStats:
    """One step's gradient statistics, per group, still on the device."""

    grad_norm: Tensor  # [G] L2 norm
    grad_max: Tensor  # [G] max |g|
    grad_nonfinite: Tensor  # [G] fraction of NaN/inf values
    total_norm: Tensor  # [] L2 norm over every parameter, as clip_grad_norm_ computes it


def gradient_stats(grads: list[Tensor], groups: ParameterGroups) -> GradientStats:
    """Per-group statistics of ``grads`` (one tensor per parameter of ``groups``), without leaving the device."""
    dtype = groups.numel.dtype
    norms = _norms(grads, dtype)
    maxes = _max_magnitudes(grads, dtype)
    return GradientStats(
        grad_norm=groups.norm(norms),
        grad_max=groups.amax(maxes),
        grad_nonfinite=groups.total(_nonfinite_counts(grads, maxes)) / groups.numel,
        total_norm=torch.linalg.vector_norm(norms),
    )


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


@dataclass
class EpochGradients:
    """An epoch's statistics on the host: ``values[stat][reduction]`` is one number per group."""

    epoch: int  # 1-based, the MLflow step
    groups: list[str]
    values: dict[str, dict[str, list[float]]]
    totals: dict[str, float] = field(default_factory=dict)

    def metrics(self, reductions: tuple[str, ...] | list[str] = REDUCTIONS) -> dict[str, float]:
        out = {
            metric_key(stat, reduction, group): value
            for stat, by_reduction in self.values.items()
            for reduction in reductions
            for group, value in zip(self.groups, by_reduction[reduction], strict=True)
        }
        out.update(self.totals)
        return out

    def to_json(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "groups": self.groups, "values": self.values, "totals": self.totals}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EpochGradients:
        return cls(data["epoch"], data["groups"], data["values"], data.get("totals", {}))


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
        self.reset()

    @property
    def params(self) -> list[nn.Parameter]:
        return self.groups.params

    def reset(self) -> None:
        """Start a new accumulation interval (an epoch), whose first optimizer step is always sampled."""
        self.steps_seen = 0  # so no epoch goes without statistics, however large ``every`` is
        shape, like = (len(STATS), len(self.groups)), self.groups.numel
        self._sum = torch.zeros(shape, device=like.device, dtype=like.dtype)
        self._count = torch.zeros(shape, device=like.device, dtype=like.dtype)
        self._max = torch.full(shape, -math.inf, device=like.device, dtype=like.dtype)
        self._last = torch.full(shape, math.nan, device=like.device, dtype=like.dtype)
        # total-norm sum, finite count, max, last; clipped steps, non-finite steps, sampled steps
        self._totals = torch.tensor(
            [0.0, 0.0, -math.inf, math.nan, 0.0, 0.0, 0.0], device=like.device, dtype=like.dtype
        )

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

    def observe_gradients(self) -> Tensor:
        """Record this step's gradients (unscaled, not yet clipped); returns the total norm for clipping."""
        stats = gradient_stats(self.gradients(), self.groups)
        self._pending = torch.stack([stats.grad_norm, stats.grad_max, stats.grad_nonfinite])
        self._total = stats.total_norm
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
        weight_norm, update_norm = (self.groups.norm(half) for half in both.split(len(weights)))
        update_ratio = torch.where(weight_norm > 0, update_norm / weight_norm, torch.zeros_like(weight_norm))
        self._accumulate(torch.cat([self._pending, weight_norm[None], update_ratio[None]]), self._total)
        self._pending = self._total = None

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

    def end_epoch(self, epoch: int) -> EpochGradients | None:
        """Reduce the interval's samples to mean, max and last (one device-to-host transfer); None if nothing was sampled."""
        packed = torch.cat(
            [self._sum.flatten(), self._count.flatten(), self._max.flatten(), self._last.flatten(), self._totals]
        )
        host = packed.cpu().tolist()
        n = len(STATS) * len(self.groups)
        sums, counts, maxes, lasts, totals = (
            host[:n],
            host[n : 2 * n],
            host[2 * n : 3 * n],
            host[3 * n : 4 * n],
            host[4 * n :],
        )
        steps = int(totals[6])
        if steps == 0:
            return None
        g = len(self.groups)
        values: dict[str, dict[str, list[float]]] = {}
        for row, stat in enumerate(STATS):
            cells = slice(row * g, (row + 1) * g)
            values[stat] = {
                "mean": [s / c if c else math.nan for s, c in zip(sums[cells], counts[cells], strict=True)],
                "max": [m if m != -math.inf else math.nan for m in maxes[cells]],
                "last": lasts[cells],
            }
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
        )

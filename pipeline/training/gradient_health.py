"""What the diagnosis needs from the model, and how a finding reads in the log.

The rules themselves (which cause, when) are in diagnosis.py, the one definition; this module holds the
two places where they meet a real training: the facts a model states about itself (frozen parameters,
YOLO26's detached one-to-one branch, the detection head's name) and its optimiser (which family, what learning
rate), and the one-line message of a finding.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from pipeline.training.diagnosis import Finding, ModelFacts
from pipeline.training.gradients import group_name

_NAMED_LAYERS = 8  # how many layers a one-line message names


def model_facts(model: nn.Module, grouping: str, *, amp: bool = False, optimizer: Any = None) -> ModelFacts:
    """Frozen layers (the config's ``requires_grad=False``; ultralytics' always-frozen ``.dfl``), the layers
    of YOLO26's one-to-one head (trained on detached features), and the detection head, in ``grouping``'s names;
    the optimiser's class and learning rate when it is given."""
    named = [(name, group_name(name, grouping), param.requires_grad) for name, param in model.named_parameters()]
    trainable = {group for _, group, grad in named if grad}
    frozen: dict[str, str] = {}  # a group is frozen when none of it trains (block grouping mixes the two)
    detached: list[str] = []
    for name, group, grad in named:
        if not grad and group not in trainable:
            frozen.setdefault(group, "dfl" if ".dfl." in f".{name}." else "config")
        elif grad and ".one2one_" in name and group not in detached:
            detached.append(group)
    name, lr = _optimizer(optimizer)
    return ModelFacts(frozen=frozen, detached=detached, head=_head(model), amp=amp, optimizer=name, lr=lr)


def _optimizer(optimizer: Any) -> tuple[str | None, float | None]:
    """The optimiser's class (``AdamW``, ``SGD``, ...) and its largest configured learning rate: the scheduler's
    ``initial_lr`` (ultralytics' lr0, after ``optimizer: auto`` chose), not the warmup's current one."""
    if optimizer is None:
        return None, None
    rates = [group.get("initial_lr", group.get("lr")) for group in getattr(optimizer, "param_groups", [])]
    finite = [float(r) for r in rates if isinstance(r, int | float)]
    return type(optimizer).__name__, max(finite) if finite else None


def _head(model: nn.Module) -> str | None:
    """``model.23`` for an ultralytics detection model: the last block, when it has per-level branches."""
    blocks = getattr(model, "model", None)
    if isinstance(blocks, nn.Sequential) and len(blocks) and hasattr(blocks[-1], "cv2"):
        return f"model.{len(blocks) - 1}"
    return None


def message(finding: Finding) -> str:
    """``gradients: <cause> in epoch <n>: <evidence>; <remedy>; layers: a, b and 3 more``."""
    text = f"gradients: {finding.cause} in epoch {finding.epoch}: {finding.message}; {finding.remedy}"
    if finding.layers:
        named = ", ".join(finding.layers[:_NAMED_LAYERS])
        more = f" and {len(finding.layers) - _NAMED_LAYERS} more" if len(finding.layers) > _NAMED_LAYERS else ""
        text += f"; layers: {named}{more}"
    return text

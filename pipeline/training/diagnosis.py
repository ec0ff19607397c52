"""The gradient doctor: per epoch, name why learning fails, from a fixed vocabulary, with evidence and a remedy.

Pure rules over what was already gathered: the epochs' gradient statistics (EpochGradients, with each epoch's
course: its first sampled step's loss and the loss's peak), the train losses, the positives per head level
(assignment.py), and what the model and its optimiser say about themselves (frozen and detached parameters, the
optimiser's family and learning rate). A run is judged against itself: ultralytics sums the loss over the batch
and clips at norm 10 on nearly every step of a healthy training, so absolute norm thresholds mislead. No rule
needs a later epoch or a rising loss to name a blow-up: the first epoch is judged against its own first batches,
and steps far beyond healthy are a failure while the loss recovers. Causes explain layers before a worse verdict
is reached: a frozen layer, the box branch of an idle level or a detached branch is never called dead or
vanishing.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.training.assignment import MAIN, Assignment
from pipeline.training.gradients import EpochGradients

IDLE_LEVEL, FROZEN, DETACHED = "idle-level", "frozen", "detached"
STALLED, DIVERGING, EXPLODING = "stalled", "diverging", "exploding"
NONFINITE, AMP_OVERFLOW, DEAD_LAYER, VANISHING = "nonfinite", "amp-overflow", "dead-layer", "vanishing"
CAUSES = (IDLE_LEVEL, FROZEN, DETACHED, STALLED, DIVERGING, EXPLODING, NONFINITE, AMP_OVERFLOW, DEAD_LAYER, VANISHING)
SEVERITIES = ("info", "warning", "error")
OK = "ok"
# Optimisers whose steps are about lr in size whatever the gradient (Adam's m/sqrt(v) is about +-1 per weight);
# SGD's follow the gradient, which ultralytics clips at norm 10.
ADAPTIVE = frozenset({"Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop"})

REMEDIES = {
    IDLE_LEVEL: "raise imgsz, tile, or use a -p2 model",
    FROZEN: "none if intended; model.freeze sets which layers train",
    DETACHED: "none: by design",
    STALLED: "raise the learning rate (train.lr0), or check that the optimiser steps",
    DIVERGING: "lower the learning rate (train.lr0) or lengthen the warmup",
    EXPLODING: "lower the learning rate; look for broken boxes or outlier images in the data",
    NONFINITE: "lower the learning rate, check images and labels for NaN/inf, or train without AMP",
    AMP_OVERFLOW: "lower the learning rate, or train without AMP (train.amp: false)",
    DEAD_LAYER: "look for what cuts the layer off: a hook, a zeroed output, a branch the loss does not reach",
    VANISHING: "use a pretrained backbone, raise the learning rate, or shorten the path (normalisation, residuals)",
}


@dataclass(frozen=True)
class Thresholds:
    """The rules' constants; each is far from what a healthy training shows (see tests/unit/training/test_diagnosis.py)."""

    stall_update_ratio: float = 1e-6  # median ||dw||/||w|| per step; healthy trainings are 1e-5..1e-2
    stall_share: float = 0.6  # ... in this share of the layers
    loss_flat: float = 0.01  # the loss fell by less than this fraction since the previous epoch
    diverge_loss: float = 1.10  # loss rose by 10% ...
    diverge_norm: float = 1.5  # ... while the mean total norm grew by half, or ...
    diverge_jump: float = 1.5  # ... the loss jumped by half in one epoch, or the steps are huge (next); and either ...
    diverge_huge_step: float = 1e-2  # (median ||dw||/||w||, ten times the largest a healthy training shows)
    diverge_update_ratio: float = 3e-3  # ... the steps are too big (median ||dw||/||w||; healthy 3e-5..1e-3) ...
    diverge_blowup: float = 3.0  # ... or the loss is this many times the run's best. (From scratch, ultralytics'
    # loss rises in the first epochs of a healthy training, and its gradient norm with it: that alone is no sign.)
    # For the Adam family both step limits above are this: its steps are about lr whatever the gradient, and an
    # explicit Adam's bias warmup (bias lr 0.1) alone takes a healthy median to 1.3e-2 (Adam lr0 0.002, 64 px,
    # while the loss rose 10.1 -> 13.6 from scratch).
    diverge_step_adaptive: float = 2e-2
    # Steps this large are a failure whatever the loss does (it may fall again while the weights are rewritten):
    # median ||dw||/||w||, measured in the zoo (128 px): healthy SGD <= 4e-4; AdamW at the auto rate <= 2e-3, up to
    # 1.1e-2 while an explicit Adam's bias warmup (bias lr 0.1) lasts; Adam at lr 0.01, loss falling well, 2.3e-2;
    # Adam at lr 0.1-1 without warmup 0.2-0.7 in epoch 1.
    huge_step: float = 5e-2  # ... for an adaptive optimiser (Adam family: steps about lr, whatever the gradient)
    huge_step_sgd: float = 5e-3  # ... for SGD (healthy <= 4e-4; lr0 1 without warmup 1.2e-2 in epoch 1)
    rewrite_step: float = 0.3  # an error: each step moves the weights by a third of their size (any optimiser)
    healthy_step: float = 1e-3  # the top of a healthy training's median update ratio, for "N times beyond healthy"
    # An epoch whose loss (its peak sampled step, or its mean) reached this many times its first sampled step's (in
    # epoch 1, an untrained head's: no earlier epoch is needed), with steps too big (as above), blew up. One
    # batch's loss is noisy: healthy at 64 px, a first step of 3.6 in an epoch whose mean was 9.3 (2.6x); blown up,
    # 15 -> 295 (AdamW lr 0.3) and 15 -> 4.8e3 (Adam lr 1), the tester's 4 -> 172.
    blowup_within: float = 10.0
    explode_factor: float = 50.0  # epoch peak over the run's baseline (median of earlier epochs' mean total norm)
    amp_skip_share: float = 0.25  # AMP: share of steps the GradScaler skipped ...
    amp_skip_calibration: int = 8  # ... beyond the few it skips while it finds its scale
    # Stem-side median norm this many orders of magnitude under the head side ... (healthy YOLO trainings show the
    # opposite, the stem's norms 1.5-3 orders above the head's: summed over more pixels; the zoo's measurements)
    vanish_orders: float = 1.0
    vanish_epochs: int = 2  # ... in this many epochs in a row
    idle_share: float = 1e-3  # a level with less of the positives' target-score weight than this trains no boxes


@dataclass(frozen=True)
class ModelFacts:
    """What the model says about itself, in the recorder's group names."""

    frozen: dict[str, str] = field(default_factory=dict)  # layer -> "config" (requires_grad False) or "dfl"
    detached: list[str] = field(default_factory=list)  # YOLO26's one-to-one head branch
    head: str | None = None  # the Detect module's name, e.g. "model.23"
    amp: bool = False
    optimizer: str | None = None  # the optimiser's class, e.g. "AdamW" (ultralytics' auto resolved), when known
    lr: float | None = None  # its configured learning rate (lr0; the warmup ramps towards it)


@dataclass
class EpochRecord:
    gradients: EpochGradients
    loss: float | None = None  # the epoch's mean train loss (sum of its items)
    assignment: Assignment | None = None

    @property
    def epoch(self) -> int:
        return self.gradients.epoch


@dataclass
class Finding:
    epoch: int
    cause: str
    severity: str
    layers: list[str]
    evidence: dict[str, Any]
    remedy: str
    message: str  # the evidence in words, one line

    def line(self) -> str:
        return f"{self.cause} ({self.message}; {self.remedy})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(**data)


def _finding(epoch: int, cause: str, severity: str, layers: list[str], evidence: dict, message: str) -> Finding:
    return Finding(epoch, cause, severity, layers, evidence, REMEDIES[cause], message)


def diagnose(history: list[EpochRecord], facts: ModelFacts, limits: Thresholds = Thresholds()) -> list[Finding]:
    """The findings of the last epoch of ``history`` (epochs in order), judged with the epochs before it."""
    if not history:
        return []
    now, before = history[-1], history[:-1]
    findings: list[Finding] = []
    if not before:  # facts of the model, said once
        findings += _frozen(now.epoch, facts) + _detached(now.epoch, facts)
    idle, idle_layers = _idle_levels(now, facts, limits)
    findings += idle
    findings += _nonfinite(now, facts, limits)
    findings += _exploding(now, before, limits)
    findings += _diverging(now, before, facts, limits)
    findings += _stalled(now, before, limits)
    explained = set(facts.frozen) | set(facts.detached) | idle_layers
    dead = _dead_layers(now, explained)
    findings += dead
    explained |= {layer for f in dead for layer in f.layers}
    findings += _vanishing(history, explained, limits)
    return findings


# ---- facts of the model ------------------------------------------------------------------------------------


def _frozen(epoch: int, facts: ModelFacts) -> list[Finding]:
    if not facts.frozen:
        return []
    config = sorted(layer for layer, why in facts.frozen.items() if why == "config")
    dfl = sorted(layer for layer, why in facts.frozen.items() if why == "dfl")
    parts = [f"{len(config)} layers frozen by the config"] if config else []
    parts += ["ultralytics' DFL decoder, frozen by design"] if dfl else []
    evidence = {"config": len(config), "dfl": len(dfl)}
    finding = _finding(epoch, FROZEN, "info", config + dfl, evidence, " and ".join(parts) + ": not judged")
    if not config:
        finding.remedy = REMEDIES[DETACHED]  # nothing the user froze: nothing to do
    return [finding]


def _detached(epoch: int, facts: ModelFacts) -> list[Finding]:
    if not facts.detached:
        return []
    message = "YOLO26's one-to-one head trains on detached features: no backbone gradient from it"
    return [_finding(epoch, DETACHED, "info", list(facts.detached), {"layers": len(facts.detached)}, message)]


def box_branch(layer: str, head: str | None, level: int) -> bool:
    """Whether ``layer`` belongs to the box branch of head level ``level`` (cv2.<level>, one2one_cv2.<level>)."""
    if head is None:
        return False
    return bool(re.match(rf"{re.escape(head)}\.(one2one_)?cv2\.{level}(\.|$)", layer))


def _idle_levels(now: EpochRecord, facts: ModelFacts, limits: Thresholds) -> tuple[list[Finding], set[str]]:
    assignment = now.assignment
    if not assignment:
        return [], set()
    main = assignment.get(MAIN) or next(iter(assignment.values()))
    if main.objects == 0:  # no targets at all this epoch: nothing to say about levels
        return [], set()
    # Idle: no positive, or positives whose target scores are ~0 (the assigner's pick of last resort), in every branch.
    idle = [
        i
        for i in range(len(main.strides))
        if all(b.positives[i] == 0 or b.weight_share()[i] < limits.idle_share for b in assignment.values())
    ]
    if not idle:
        return [], set()
    layers = sorted({g for g in now.gradients.groups for i in idle if box_branch(g, facts.head, i)})
    strides = [main.strides[i] for i in idle]
    busy = [i for i in range(len(main.strides)) if i not in idle]
    went = ", ".join(
        f"stride {main.strides[i]}: {main.size_min[i]:.0f}-{main.size_max[i]:.0f} px, "
        f"{main.per_image()[i]:.3g} positives/image"
        for i in busy
    )
    sizes = f"objects {main.object_size_min:.0f}-{main.object_size_max:.0f} px"
    where = f"all went to stride {main.strides[busy[0]]}" if len(busy) == 1 else f"went to {went}"
    message = f"stride {', '.join(map(str, strides))}: no targets; {sizes} {where}"
    evidence = {
        "idle_strides": strides,
        "positives_per_image": {f"stride{s}": v for s, v in zip(main.strides, main.per_image(), strict=True)},
        "weight_share": {f"stride{s}": v for s, v in zip(main.strides, main.weight_share(), strict=True)},
        "size_min": dict(zip(map(str, main.strides), main.size_min, strict=True)),
        "size_max": dict(zip(map(str, main.strides), main.size_max, strict=True)),
        "objects": main.objects,
    }
    return [_finding(now.epoch, IDLE_LEVEL, "info", layers, evidence, message)], set(layers)


# ---- the epoch's own numbers --------------------------------------------------------------------------------


def _nonfinite(now: EpochRecord, facts: ModelFacts, limits: Thresholds) -> list[Finding]:
    g = now.gradients
    steps, bad = g.totals.get("grad_steps", 0.0), g.totals.get("grad_nonfinite_steps", 0.0)
    loss_bad = now.loss is not None and not math.isfinite(now.loss)
    fractions = g.values["grad_nonfinite"]["max"]
    layers = [name for name, f in zip(g.groups, fractions, strict=True) if f > 0]
    evidence = {"nonfinite_steps": bad, "steps": steps, "loss": now.loss}
    # Under AMP a non-finite step is how the GradScaler finds its scale: it skips the step and lowers the scale.
    if facts.amp and not loss_bad:
        if bad > steps / 2 and bad > 2 * limits.amp_skip_calibration:
            message = f"{bad:.0f} of {steps:.0f} steps had NaN/inf gradients even under the GradScaler"
            return [_finding(now.epoch, NONFINITE, "error", layers, evidence, message)]
        if bad > max(limits.amp_skip_calibration, limits.amp_skip_share * steps):
            message = f"the GradScaler skipped {bad:.0f} of {steps:.0f} steps"
            return [_finding(now.epoch, AMP_OVERFLOW, "warning", layers, evidence, message)]
        return []
    if bad == 0 and not loss_bad:
        return []
    message = f"{bad:.0f} of {steps:.0f} sampled steps had NaN/inf gradients" + (", the loss too" if loss_bad else "")
    return [_finding(now.epoch, NONFINITE, "error", layers, evidence, message)]


def _baseline(before: list[EpochRecord]) -> float | None:
    norms = [e.gradients.totals.get("grad_total_norm", math.nan) for e in before]
    finite = [n for n in norms if math.isfinite(n) and n > 0]
    return statistics.median(finite) if finite else None


def _exploding(now: EpochRecord, before: list[EpochRecord], limits: Thresholds) -> list[Finding]:
    totals = now.gradients.totals
    peak, mean = totals.get("grad_total_norm_max", math.nan), totals.get("grad_total_norm", math.nan)
    baseline = _baseline(before) or (mean if math.isfinite(mean) and mean > 0 else None)
    if baseline is None or not math.isfinite(peak) or peak <= limits.explode_factor * baseline:
        return []
    norms = now.gradients.values["grad_norm"]["max"]
    ranked = sorted(
        (pair for pair in zip(now.gradients.groups, norms, strict=True) if math.isfinite(pair[1])), key=lambda p: -p[1]
    )
    evidence = {"peak": peak, "baseline": baseline, "factor": peak / baseline}
    message = f"total norm peaked at {peak:.3g}, {peak / baseline:.0f}x the run's baseline {baseline:.3g}"
    return [_finding(now.epoch, EXPLODING, "warning", [g for g, _ in ranked[:8]], evidence, message)]


def _update_ratios(record: EpochRecord) -> list[float]:
    """The epoch's finite mean update ratios ||dw||/||w||, one per layer."""
    return [r for r in record.gradients.values["update_ratio"]["mean"] if math.isfinite(r)]


def _median_step(record: EpochRecord) -> float:
    ratios = _update_ratios(record)
    return statistics.median(ratios) if ratios else math.nan


Sign = tuple[str, dict[str, Any]]  # a rule's words and its evidence


def _diverging(now: EpochRecord, before: list[EpochRecord], facts: ModelFacts, limits: Thresholds) -> list[Finding]:
    """One finding from whichever signs there are: the loss rising against the epoch before, the loss blowing up
    within the epoch (no earlier epoch needed), steps far beyond healthy whatever the loss does."""
    step = _median_step(now)
    loss_signs = [
        sign
        for sign in (_loss_rising(now, before, step, facts, limits), _blown_up_within(now, step, facts, limits))
        if sign
    ]
    huge = _huge_steps(now, before, step, facts, limits)
    if not loss_signs and huge is None:
        return []
    evidence: dict[str, Any] = {"median_update_ratio": step}
    for _, found in [*loss_signs, *([huge] if huge else [])]:
        evidence |= found
    steps = f"steps of {step:.2g} of the weights (median ||dw||/||w||)" + (huge[0] if huge else "")
    message = f"{'; '.join(clause for clause, _ in loss_signs)} with {steps}" if loss_signs else steps
    if facts.optimizer in ADAPTIVE and facts.lr is not None:
        evidence |= {"optimizer": facts.optimizer, "lr": facts.lr}
        message += f"; {facts.optimizer} moves every weight by about its learning rate ({facts.lr:.2g}) per step"
    severity = "error" if step >= limits.rewrite_step else "warning"
    return [_finding(now.epoch, DIVERGING, severity, [], evidence, message)]


def _limits_with_loss(facts: ModelFacts, limits: Thresholds) -> tuple[float, float]:
    """The steps too big (and huge) to go with a rising or blown-up loss, by the optimiser's family."""
    if facts.optimizer in ADAPTIVE:
        return limits.diverge_step_adaptive, limits.diverge_step_adaptive
    return limits.diverge_update_ratio, limits.diverge_huge_step


def _loss_rising(
    now: EpochRecord, before: list[EpochRecord], step: float, facts: ModelFacts, limits: Thresholds
) -> Sign | None:
    big, huge = _limits_with_loss(facts, limits)
    if not before or now.loss is None or before[-1].loss is None:
        return None
    loss, previous = now.loss, before[-1].loss
    norm, previous_norm = (e.gradients.totals.get("grad_total_norm", math.nan) for e in (now, before[-1]))
    if not all(math.isfinite(v) and v > 0 for v in (loss, previous, norm, previous_norm)):
        return None
    growing = norm > limits.diverge_norm * previous_norm or loss > limits.diverge_jump * previous or step > huge
    if loss <= limits.diverge_loss * previous or not growing:
        return None
    best = min(e.loss for e in before if e.loss is not None and math.isfinite(e.loss))
    if not (step > big or loss > limits.diverge_blowup * best):
        return None
    evidence = {
        "loss": loss,
        "previous_loss": previous,
        "best_loss": best,
        "norm": norm,
        "previous_norm": previous_norm,
    }
    return f"loss rose {previous:.3g} -> {loss:.3g} (mean total norm {previous_norm:.3g} -> {norm:.3g})", evidence


def _blown_up_within(now: EpochRecord, step: float, facts: ModelFacts, limits: Thresholds) -> Sign | None:
    """The epoch against its own first sampled step (in a training's first epoch, the untrained model's loss)."""
    big, _ = _limits_with_loss(facts, limits)
    course = now.gradients.course
    first = course.get("loss_first", math.nan)
    peaks = [course.get("loss_max", math.nan), now.loss if now.loss is not None else math.nan]
    peak = max((p for p in peaks if math.isfinite(p)), default=math.nan)
    if not (math.isfinite(first) and first > 0 and math.isfinite(peak)):
        return None
    if peak < limits.blowup_within * first or not step > big:
        return None
    norm_first = course.get("norm_first", math.nan)
    norm_peak = now.gradients.totals.get("grad_total_norm_max", math.nan)
    evidence = {"loss_first": first, "loss_peak": peak, "norm_first": norm_first, "norm_peak": norm_peak}
    start = "an untrained model's" if now.epoch == 1 else "its first step's"
    clause = (
        f"loss blew up within the epoch, {first:.3g} ({start}) -> {peak:.3g} "
        f"({peak / first:.3g}x; total norm {norm_first:.3g} -> {norm_peak:.3g})"
    )
    return clause, evidence


def _limit_alone(facts: ModelFacts, limits: Thresholds) -> float:
    """The median step that is a failure by itself: by the optimiser's family; for one the rules do not know
    (MuSGD, or no optimiser given), only steps that rewrite the weights."""
    if facts.optimizer == "SGD":
        return limits.huge_step_sgd
    return limits.huge_step if facts.optimizer in ADAPTIVE else limits.rewrite_step


def _huge_steps(
    now: EpochRecord, before: list[EpochRecord], step: float, facts: ModelFacts, limits: Thresholds
) -> Sign | None:
    """Steps far beyond healthy, judged by the optimiser's family; a falling loss does not excuse them."""
    limit = _limit_alone(facts, limits)
    if not step > limit:
        return None
    beyond = step / limits.healthy_step
    evidence = {"huge_step": limit, "healthy_step": limits.healthy_step, "beyond_healthy": beyond}
    words = f", {beyond:.0f}x beyond healthy (<= {limits.healthy_step:g})"
    previous = before[-1].loss if before else None
    if now.loss is not None and previous is not None and math.isfinite(now.loss) and now.loss < previous:
        words += f", while the loss fell {previous:.3g} -> {now.loss:.3g}: too large all the same"
    elif not before:
        words += " in the first epoch"
    return words, evidence


def _stalled(now: EpochRecord, before: list[EpochRecord], limits: Thresholds) -> list[Finding]:
    ratios = _update_ratios(now)
    if not ratios or not before or now.loss is None or before[-1].loss is None:
        return []
    low = [r for r in ratios if r < limits.stall_update_ratio]
    if len(low) < limits.stall_share * len(ratios):
        return []
    loss, previous = now.loss, before[-1].loss
    if math.isfinite(loss) and math.isfinite(previous) and loss < (1 - limits.loss_flat) * previous:
        return []  # tiny updates, but the loss still falls
    median = statistics.median(ratios)
    evidence = {
        "median_update_ratio": median,
        "low_share": len(low) / len(ratios),
        "loss": loss,
        "previous_loss": previous,
    }
    message = (
        f"update ratio ||dw||/||w|| {median:.2g} (median) in {len(low)} of {len(ratios)} layers; "
        f"loss {previous:.3g} -> {loss:.3g}"
    )
    return [_finding(now.epoch, STALLED, "warning", [], evidence, message)]


def _dead_layers(now: EpochRecord, explained: set[str]) -> list[Finding]:
    g = now.gradients
    dead = [
        name
        for name, peak in zip(g.groups, g.values["grad_norm"]["max"], strict=True)
        if peak == 0.0 and name not in explained
    ]
    if not dead:
        return []
    message = f"{len(dead)} trainable layers had exactly zero gradient in every sampled step"
    return [_finding(now.epoch, DEAD_LAYER, "warning", dead, {"layers": len(dead)}, message)]


def _block(name: str) -> int | None:
    match = re.search(r"(?:^|\.)model\.(\d+)(?:\.|$)", name)
    return int(match.group(1)) if match else None


def _depth_gap(record: EpochRecord, explained: set[str]) -> tuple[float, list[str], float, float] | None:
    """log10(head-side median norm / stem-side median norm), the stem-side layers, and both medians."""
    by_block: dict[int, list[tuple[str, float]]] = {}
    for name, norm in zip(record.gradients.groups, record.gradients.values["grad_norm"]["mean"], strict=True):
        block = _block(name)
        if block is None or name in explained or not (math.isfinite(norm) and norm > 0):
            continue
        by_block.setdefault(block, []).append((name, norm))
    blocks = sorted(by_block)
    if len(blocks) < 3:
        return None
    third = max(1, len(blocks) // 3)
    stem = [pair for b in blocks[:third] for pair in by_block[b]]
    head = [pair for b in blocks[-third:] for pair in by_block[b]]
    stem_median, head_median = (statistics.median(n for _, n in side) for side in (stem, head))
    return math.log10(head_median / stem_median), [name for name, _ in stem], stem_median, head_median


def _vanishing(history: list[EpochRecord], explained: set[str], limits: Thresholds) -> list[Finding]:
    recent = history[-limits.vanish_epochs :]
    if len(recent) < limits.vanish_epochs:
        return []
    gaps = [_depth_gap(record, explained) for record in recent]
    if any(gap is None or gap[0] < limits.vanish_orders for gap in gaps):
        return []
    orders, stem, stem_median, head_median = gaps[-1]
    evidence = {"orders": orders, "stem_median": stem_median, "head_median": head_median, "epochs": len(recent)}
    message = (
        f"gradient norms fall {orders:.1f} orders of magnitude from the head ({head_median:.2g}) "
        f"to the stem ({stem_median:.2g}) for {len(recent)} epochs"
    )
    return [_finding(history[-1].epoch, VANISHING, "warning", stem, evidence, message)]


# ---- the run's summary --------------------------------------------------------------------------------------


def worst(findings: list[Finding]) -> str:
    severities = [SEVERITIES.index(f.severity) for f in findings]
    return SEVERITIES[max(severities)] if severities else OK


def summarize(by_epoch: dict[int, list[Finding]]) -> dict[str, Any]:
    """diagnosis.json: the health (worst severity or ok), the causes, the latest finding of each cause, per epoch."""
    latest: dict[str, Finding] = {}
    first: dict[str, int] = {}
    for epoch in sorted(by_epoch):
        for finding in by_epoch[epoch]:
            latest[finding.cause] = finding
            first.setdefault(finding.cause, epoch)
    findings = sorted(latest.values(), key=lambda f: (-SEVERITIES.index(f.severity), CAUSES.index(f.cause)))
    return {
        "health": worst(findings),
        "causes": [f.cause for f in findings],
        "findings": [{**f.to_json(), "first_epoch": first[f.cause]} for f in findings],
        "epochs": {str(e): [f.to_json() for f in by_epoch[e]] for e in sorted(by_epoch)},
    }


def merge(old: list[Finding], new: list[Finding]) -> list[Finding]:
    """A redone epoch: its new findings replace those of the same cause; what the first attempt found stays."""
    causes = {f.cause for f in new}
    return [f for f in old if f.cause not in causes] + new

"""Vanishing and exploding gradients, judged once per epoch from the reduced statistics.

Vanishing: a group's mean gradient norm stays below ``vanish_abs``, or below ``vanish_rel`` times the
median group's, for ``vanish_epochs`` epochs in a row. Exploding: the total norm (before clipping) went
above ``explode_norm``. Non-finite: a NaN or inf gradient. Under AMP a non-finite step is how the
GradScaler finds its scale (it skips the step and lowers the scale), so there it counts only when most
of the epoch's steps were non-finite.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from pipeline.config import GradientsConfig
from pipeline.train.gradients import EpochGradients

VANISHING, EXPLODING, NONFINITE = "vanishing", "exploding", "nonfinite"
_NAMED_LAYERS = 8  # how many layers a one-line warning names


@dataclass
class HealthEvent:
    epoch: int
    kind: str
    layers: list[str]
    detail: str

    def message(self) -> str:
        named = ", ".join(self.layers[:_NAMED_LAYERS])
        more = f" and {len(self.layers) - _NAMED_LAYERS} more" if len(self.layers) > _NAMED_LAYERS else ""
        return f"gradients: {self.kind} in epoch {self.epoch}: {self.detail}; layers: {named}{more}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GradientHealth:
    settings: GradientsConfig
    amp: bool = False
    streaks: dict[str, int] = field(default_factory=dict)
    vanishing: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # kinds found so far in this training
    exploding_epochs: list[int] = field(default_factory=list)

    def check(self, epoch: EpochGradients) -> list[HealthEvent]:
        """The events this epoch raises; updates the running state (streaks, layers now vanishing)."""
        events = [e for e in (self._nonfinite(epoch), self._exploding(epoch), self._vanishing(epoch)) if e is not None]
        for event in events:
            self.seen.add(event.kind)
            if event.kind in {EXPLODING, NONFINITE} and epoch.epoch not in self.exploding_epochs:
                self.exploding_epochs.append(epoch.epoch)
        return events

    def rewind(self, history: list[EpochGradients]) -> None:
        """An epoch is being redone (ultralytics reloaded last.pt): rebuild the streaks from the epochs before it.

        What was found stays found: the event that made the epoch be redone still happened."""
        self.streaks, self.vanishing = {}, set()
        for epoch in history:
            self._vanishing(epoch)

    def status(self) -> str:
        return ",".join(sorted(self.seen)) or "ok"

    def tags(self) -> dict[str, str]:
        return {
            "gradients.health": self.status(),
            "gradients.vanishing_layers": ",".join(sorted(self.vanishing))[:4000],
            "gradients.exploding_epochs": ",".join(map(str, self.exploding_epochs))[:4000],
        }

    def _nonfinite(self, epoch: EpochGradients) -> HealthEvent | None:
        steps, bad = epoch.totals["grad_steps"], epoch.totals["grad_nonfinite_steps"]
        if bad == 0 or (self.amp and bad <= steps / 2):
            return None
        fractions = epoch.values["grad_nonfinite"]["max"]
        layers = [g for g, f in zip(epoch.groups, fractions, strict=True) if f > 0]
        return HealthEvent(
            epoch.epoch, NONFINITE, layers, f"{int(bad)} of {int(steps)} sampled steps had NaN/inf gradients"
        )

    def _exploding(self, epoch: EpochGradients) -> HealthEvent | None:
        peak = epoch.totals["grad_total_norm_max"]
        if not (math.isfinite(peak) and peak > self.settings.explode_norm):
            return None
        norms = epoch.values["grad_norm"]["max"]
        ranked = sorted(zip(epoch.groups, norms, strict=True), key=lambda gn: -gn[1] if math.isfinite(gn[1]) else 0.0)
        return HealthEvent(
            epoch.epoch,
            EXPLODING,
            [g for g, _ in ranked],
            f"total gradient norm reached {peak:.3g} (threshold {self.settings.explode_norm:g}); largest layers first",
        )

    def _vanishing(self, epoch: EpochGradients) -> HealthEvent | None:
        norms = dict(zip(epoch.groups, epoch.values["grad_norm"]["mean"], strict=True))
        finite = [n for n in norms.values() if math.isfinite(n)]
        median = statistics.median(finite) if finite else math.nan
        floor = max(self.settings.vanish_abs, self.settings.vanish_rel * median if math.isfinite(median) else 0.0)
        newly = []
        for group, norm in norms.items():
            below = math.isfinite(norm) and norm < floor
            self.streaks[group] = self.streaks.get(group, 0) + 1 if below else 0
            if not below:
                self.vanishing.discard(group)
            elif self.streaks[group] >= self.settings.vanish_epochs and group not in self.vanishing:
                self.vanishing.add(group)
                newly.append(group)
        if not newly:
            return None
        return HealthEvent(
            epoch.epoch,
            VANISHING,
            newly,
            f"gradient norm below {floor:.3g} (median layer {median:.3g}) for {self.settings.vanish_epochs} epochs",
        )

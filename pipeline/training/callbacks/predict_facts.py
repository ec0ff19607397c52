"""What predict reads from the weights, recorded in the model and its EMA copy after set-up (saved with them):
the image side the model learns at (predict infers tiles at that scale) and, for a tiled training, how the training
images were cut (predict cuts large images the same way).
"""

from __future__ import annotations

from typing import Any

from pipeline.checkpoints import record_image_side, record_training_tile
from pipeline.training.callbacks.base import Callback, unwrapped
from pipeline.training.session import Session


class PredictFacts(Callback):
    def __init__(self, session: Session | None):
        self.session = session

    def on_setup(self, trainer: Any) -> None:
        if self.session is None:
            return
        side, tile = self.session.dataset.get("image_side"), self.session.config.data.tile
        for network in (unwrapped(trainer.model), trainer.ema.ema):
            if side:
                record_image_side(network, side)
            if tile is not None:
                record_training_tile(network, tile.size, tile.overlap)

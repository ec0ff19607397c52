"""The final stage alone, for a resume of a training killed after its last epoch (in its final validation).

Every epoch is in last.pt, so none is trained again: the checkpoint's state is loaded (ultralytics' own resume
refuses a checkpoint with no epoch left to train), and only what ultralytics does after its last epoch runs: the
final validation of best.pt, the plots, ``on_train_end``. The trainer runs `run` in place of its epochs.
"""

from __future__ import annotations

from typing import Any

from pipeline.training.callbacks.base import Callback


class FinalStage(Callback):
    def __init__(self, enabled: bool = False):
        self.enabled = enabled  # set by `resume` when every epoch was trained

    def load(self, trainer: Any, ckpt: dict) -> None:
        """In place of ultralytics' resume_training: the checkpoint's state, and no epoch left to train."""
        trainer._load_checkpoint_state(ckpt)
        trainer.start_epoch = ckpt["epoch"] + 1

    def on_setup(self, trainer: Any) -> None:
        if self.enabled:  # as after the training's last epoch
            trainer.epoch, trainer.stop = trainer.start_epoch - 1, True

    def run(self, trainer: Any) -> None:
        """Ultralytics' _do_train with no epoch: set-up, final validation, plots, on_train_end, clean-up."""
        trainer._setup_train()
        trainer.final_eval()
        if trainer.args.plots:
            trainer.plot_metrics()
        trainer.run_callbacks("on_train_end")
        trainer._clear_memory()
        for loader in (trainer.train_loader, trainer.test_loader):
            if hasattr(loader, "close"):
                loader.close()

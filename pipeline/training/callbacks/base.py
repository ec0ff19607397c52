"""The hooks through which the trainer tells each of its concerns (tracking, gradients, ...) where the training is.

Modelled on Lightning's ``Callback``: every hook is a no-op here, a concern overrides the ones it needs. The
trainer runs a hook on its callbacks in their order, except ``on_fit_end``, which runs in the reverse order, as
nested contexts close (the gradient report reaches the tracker before the tracker closes). Where each runs:

- ``on_fit_start``: before set-up, in the process that tracks (the single one, or rank 0); not in the DDP parent.
- ``on_setup``: after ultralytics' set-up (model, optimizer, loaders, a resume's state), that process only.
- ``on_train_epoch_start`` / ``on_train_epoch_end``: every rank; the end comes before the epoch's validation.
- ``on_metrics_saved``: the epoch's row is in results.csv, its checkpoint not yet written (tracking process).
- ``on_checkpoint_saved``: last.pt (and best.pt) written whole (tracking process).
- ``on_fit_epoch_end``: every rank, after the checkpoint; also after the final validation (epoch == epochs).
- ``on_fit_end``: every rank, however the training ended: ``status`` is FINISHED, KILLED or FAILED, ``error``
  what ended it (None when it finished). A hook that raises here stops the hooks after it.
"""

from __future__ import annotations

from typing import Any

from pipeline.training.epoch_listener import StoppedEarly

FINISHED, KILLED, FAILED = "FINISHED", "KILLED", "FAILED"


class Callback:
    def on_fit_start(self, trainer: Any) -> None:
        pass

    def on_setup(self, trainer: Any) -> None:
        pass

    def on_train_epoch_start(self, trainer: Any) -> None:
        pass

    def on_train_epoch_end(self, trainer: Any) -> None:
        pass

    def on_metrics_saved(self, trainer: Any, metrics: dict[str, float]) -> None:
        pass

    def on_checkpoint_saved(self, trainer: Any) -> None:
        pass

    def on_fit_epoch_end(self, trainer: Any) -> None:
        pass

    def on_fit_end(self, trainer: Any, status: str, error: BaseException | None) -> None:
        pass


def ended_as(error: BaseException | None) -> str:
    """How a training that raised ``error`` (None: none) ended, in MLflow's words: a stop asked for is KILLED."""
    if error is None:
        return FINISHED
    return KILLED if isinstance(error, (StoppedEarly, KeyboardInterrupt)) else FAILED


def unwrapped(model: Any) -> Any:
    """The model without its DDP or compile wrapper (its parameters' names without ``module.``)."""
    # Imported here: importing ultralytics reads its settings; the trainer configures them before it imports it.
    from ultralytics.utils.torch_utils import unwrap_model

    return unwrap_model(model)

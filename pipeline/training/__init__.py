"""Training: the trainer subclass, its session, and the train/resume entry points.

Outside a training, `loader` builds its dataset as it does, and `augment_preview` (``augment preview``) draws it.
"""

from pipeline.training.run import ResumeError, TrainResult, find_training, resume, train

__all__ = ["ResumeError", "TrainResult", "find_training", "resume", "train"]

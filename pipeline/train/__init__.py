"""Training: the trainer subclass, its session, and the train/resume entry points."""

from pipeline.train.run import ResumeError, TrainResult, find_training, resume, train

__all__ = ["ResumeError", "TrainResult", "find_training", "resume", "train"]

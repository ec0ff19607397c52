"""The trainer's concerns, each a `Callback` told of the training's moments by `PipelineTrainer`."""

from pipeline.training.callbacks.base import Callback
from pipeline.training.callbacks.final_stage import FinalStage
from pipeline.training.callbacks.gradients import GradientRecording
from pipeline.training.callbacks.ignore_regions import IgnoreRegions
from pipeline.training.callbacks.listener import EpochListening
from pipeline.training.callbacks.positives import PositiveCounting
from pipeline.training.callbacks.predict_facts import PredictFacts
from pipeline.training.callbacks.tracking import Tracking

__all__ = [
    "Callback",
    "EpochListening",
    "FinalStage",
    "GradientRecording",
    "IgnoreRegions",
    "PositiveCounting",
    "PredictFacts",
    "Tracking",
]

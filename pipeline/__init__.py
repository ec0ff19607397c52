"""YOLO fine-tuning pipeline: configs in, detectors and MLflow runs out.

The public API is imported lazily, so ``import pipeline`` is cheap and has no side effects:

    from pipeline import load_config, train, resume, sync, synthesize, predict, sweep, compare, evaluate, calibrate,
        check_screen, promote
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Config": "pipeline.config",
    "ConfigError": "pipeline.config",
    "load_config": "pipeline.config",
    "build_config": "pipeline.config",
    "train": "pipeline.training.run",
    "resume": "pipeline.training.run",
    "TrainResult": "pipeline.training.run",
    "sync": "pipeline.tracking",
    "synthesize": "pipeline.data.synth",
    "predict": "pipeline.inference",
    "PredictResult": "pipeline.inference",
    "PredictOptions": "pipeline.inference",
    "RunOptions": "pipeline.inference",  # how evaluate, calibrate and check_screen run a model
    "promote": "pipeline.promotion.promotion",
    "compare": "pipeline.comparison",
    "sweep": "pipeline.sweeps.sweep",
    "evaluate": "pipeline.evaluation.evaluation",
    "calibrate": "pipeline.screen.calibrate",
    "check_screen": "pipeline.screen.check",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name]), name)

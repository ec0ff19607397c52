"""Batch inference over image folders: discovery, decoding, batching, results to files, resumable.

``from pipeline.inference import predict``; the engine (torch, ultralytics) loads on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {"PredictOptions": "options", "PredictResult": "engine", "RunOptions": "options", "predict": "engine"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline.inference' has no attribute {name!r}")
    return getattr(import_module(f"pipeline.inference.{_EXPORTS[name]}"), name)

"""Batch inference over image folders: discovery, decoding, batching, results to files, resumable.

``from pipeline.inference import predict``; the engine (torch, ultralytics) loads on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PredictResult", "predict"]


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'pipeline.inference' has no attribute {name!r}")
    from pipeline.inference import engine

    return getattr(engine, name)

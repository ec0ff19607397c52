"""The inference backends, by name: the one registry that ``--runtime``'s choices, `build_checkpoint_detector` and
the race of ``--runtime auto`` read (`pipeline.inference.runtime`).

A new backend is a module here with a `Backend` subclass, and one entry in `BACKENDS`. The order
of `BACKENDS` is the race's order. Importing this package loads neither torch nor ultralytics
(the CLI reads the choices): a backend imports them when it loads.
"""

from __future__ import annotations

from pipeline.inference.backends.base import Backend, BackendInfo, LoadRequest, Network
from pipeline.inference.backends.onnx import OnnxBackend
from pipeline.inference.backends.openvino import OpenVinoBackend
from pipeline.inference.backends.torch import TorchBackend

BACKENDS: dict[str, type[Backend]] = {
    TorchBackend.name: TorchBackend,
    OnnxBackend.name: OnnxBackend,
    OpenVinoBackend.name: OpenVinoBackend,
}
AUTO = "auto"  # --runtime auto: on a GPU the fallback; on a CPU the racers, timed against each other
FALLBACK = TorchBackend.name  # runs everywhere: a GPU's under auto, and what runs when another fails to load

__all__ = [
    "AUTO",
    "BACKENDS",
    "FALLBACK",
    "Backend",
    "BackendInfo",
    "LoadRequest",
    "Network",
    "label",
    "labels",
    "racers",
    "runtime_choices",
]


def runtime_choices() -> tuple[str, ...]:
    """What ``--runtime`` takes: auto, then each backend's name."""
    return (AUTO, *BACKENDS)


def racers(*, available: bool = False) -> tuple[str, ...]:
    """The backends ``--runtime auto`` races on a CPU, in the race's order; those installed here with ``available``."""
    return tuple(name for name, backend in BACKENDS.items() if backend.races and (not available or backend.available()))


def label(name: str) -> str:
    """How messages name a backend: ``ONNX Runtime``."""
    return BACKENDS[name].label if name in BACKENDS else name


def labels(names: list[str] | tuple[str, ...]) -> str:
    """``PyTorch and ONNX Runtime``; ``A, B and C``."""
    said = [label(name) for name in names]
    return " and ".join([", ".join(said[:-1]), said[-1]] if len(said) > 1 else said)

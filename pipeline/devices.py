"""Which device ``auto`` means, for training and prediction alike."""

from __future__ import annotations


def resolve_device(device: str) -> str:
    """``auto`` is the first CUDA GPU when there is one, else the CPU; anything else is kept."""
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"

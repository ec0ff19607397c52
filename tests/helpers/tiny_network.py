"""A tiny network named like an ultralytics model (model.<i>.<layer>), with its loss and a batch."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Tiny(nn.Module):
    """Named like an ultralytics model: model.<i>.<layer>."""

    def __init__(self):
        super().__init__()
        self.model = nn.Sequential(Block(3, 4), Block(4, 4), nn.Conv2d(4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def loss_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return (model(x) - 0.3).square().mean() * 100


def batch(seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def small_detector(nc: int, last_channels: int = 16) -> dict:
    """An ultralytics model definition with a few layers of YOLO11's kinds and its Detect head: exported and quantized
    in seconds, as ultralytics exports any model (``last_channels``: the backbone's last stage, the embedding's
    width)."""
    return {
        "nc": nc,
        "backbone": [
            [-1, 1, "Conv", [8, 3, 2]],
            [-1, 1, "Conv", [16, 3, 2]],
            [-1, 1, "Conv", [16, 3, 2]],
            [-1, 1, "C3k2", [16, False, 0.25]],
            [-1, 1, "Conv", [16, 3, 2]],
            [-1, 1, "Conv", [last_channels, 3, 2]],
        ],
        "head": [[[3, 4, 5], 1, "Detect", ["nc"]]],
    }

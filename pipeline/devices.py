"""Which device ``auto`` means, for training and prediction alike, and whether a named one exists."""

from __future__ import annotations

from pipeline.config import ConfigError


class DeviceError(ConfigError):
    """A device this machine does not have; the message is one line naming the option."""


def resolve_device(device: str) -> str:
    """``auto`` is the first CUDA GPU when there is one, else the CPU; anything else is kept."""
    if device != "auto":
        return device
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def check_device(device: str, option: str = "device") -> str:
    """``device`` resolved (see `resolve_device`), or a DeviceError when this machine lacks it.

    Ultralytics would stop with a multi-line error deep inside the training (after the folder and the run
    were made) for a GPU index that does not exist, so the same test is made here first.
    """
    import torch

    device = resolve_device(device)
    if device == "cpu":
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"{option}: mps: Apple's MPS is not available on this machine; use cpu or auto")
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise DeviceError(f"{option}: {device}: this machine has no CUDA GPU; use cpu or auto")
    missing = [i for i in device.split(",") if int(i) >= count]
    if missing:
        have = ", ".join(str(i) for i in range(count))
        raise DeviceError(f"{option}: {device}: no GPU {missing[0]} on this machine (it has {count}: {have})")
    return device

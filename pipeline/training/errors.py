"""Errors a training raises on purpose; each message is the one line a user needs."""


class NonFiniteGradients(RuntimeError):
    """Training stopped at an epoch with NaN/inf gradients because ``gradients.stop_on_nonfinite`` is on."""

"""How many PyTorch threads a CPU training takes, and the line that says so.

Ultralytics gives a CPU training ``min(8, cores - 1)`` threads (one on a 2-core machine, a core idle on any
small box) and loads its data in the training process between steps (``workers=0`` on a CPU). A training
here takes the cores that other processes leave free instead, as `predict` does, so a training beside
another one does not oversubscribe the machine; ``train.threads`` (a sweep's ``--cpus-per-trial``) sets
the share outright. The data stays in the training process: a loader process beside the compute costs
the core it takes from PyTorch (scripts/benchmarks/train_throughput.py --loaders measures both).
"""

from __future__ import annotations

from pipeline.cpu import LoadProbe, cpu_threads, free_threads, use_torch_threads


def cpu_share(asked: int, others: float, cores: int) -> tuple[int, str]:
    """The threads for a CPU training (``asked``: ``train.threads``, 0 for the free cores) and why, in words."""
    if asked:
        return asked, f"{_threads(asked)} (train.threads) on {cores} cores"
    threads = free_threads(others, cores)
    if threads < cores:
        return (
            threads,
            f"{_threads(threads)}: other processes keep {others:.0%} of the CPU busy, {threads} of {cores} cores free",
        )
    return threads, f"{_threads(threads)} on {cores} free cores"


def use_cpu_share(asked: int, load: LoadProbe) -> str:
    """Give this process's PyTorch its share (see `cpu_share`); the line the training prints."""
    threads, why = cpu_share(asked, load.others() if not asked else 0.0, cpu_threads())
    use_torch_threads(threads)
    # Ultralytics' select_device sets its own count again wherever it is called (the final validation of best.pt).
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = threads
    return f"{why}; data loaded in the training process"


def _threads(count: int) -> str:
    return f"{count} PyTorch thread{'s' if count > 1 else ''}"

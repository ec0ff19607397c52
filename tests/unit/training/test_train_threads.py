"""A CPU training's PyTorch threads: the free cores, or the share the config (a sweep's trial) sets."""

from __future__ import annotations

import pytest
import torch

from pipeline.cpu import LoadProbe
from pipeline.training.threads import cpu_share, use_cpu_share


@pytest.mark.parametrize(
    ("asked", "others", "cores", "threads", "why"),
    [
        (0, 0.0, 2, 2, "2 PyTorch threads on 2 free cores"),
        (0, 0.2, 8, 6, "6 PyTorch threads: other processes keep 20% of the CPU busy, 6 of 8 cores free"),
        (0, 0.9, 2, 1, "1 PyTorch thread: other processes keep 90% of the CPU busy, 1 of 2 cores free"),
        (3, 0.9, 2, 3, "3 PyTorch threads (train.threads) on 2 cores"),
        (1, 0.0, 16, 1, "1 PyTorch thread (train.threads) on 16 cores"),
    ],
)
def test_the_share_is_the_free_cores_unless_the_config_sets_it(
    asked: int, others: float, cores: int, threads: int, why: str
) -> None:
    assert cpu_share(asked, others, cores) == (threads, why)


def test_the_share_is_given_to_pytorch_and_kept_by_ultralytics(monkeypatch: pytest.MonkeyPatch) -> None:
    from ultralytics.utils import torch_utils

    monkeypatch.setattr(torch_utils, "NUM_THREADS", 3)  # ultralytics' own count, put back after the test
    before = torch.get_num_threads()
    try:
        line = use_cpu_share(2, LoadProbe())
        assert torch.get_num_threads() == 2
        torch_utils.select_device("cpu", verbose=False)  # as the final validation does: the share stays
        assert torch.get_num_threads() == 2
        assert line.startswith("2 PyTorch threads (train.threads) on ") and line.endswith(
            "; data loaded in the training process"
        )
    finally:
        torch.set_num_threads(before)

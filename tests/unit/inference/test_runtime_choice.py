"""`--runtime auto` on a CPU: the two raced on the first batches, the faster kept and cached per weights, size,
batch and thread count; the network on the cores other processes leave free."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.checkpoints import file_sha256
from pipeline.files import CACHE_ENV
from pipeline.inference import runtime
from pipeline.inference.backends.onnx import session_options
from pipeline.inference.runtime import cached_choice


@pytest.fixture(autouse=True)
def two_racers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race's mechanics on two racers (the registry may hold more: each races the same way)."""
    from pipeline.inference import backends

    for name in [n for n in backends.BACKENDS if n not in ("torch", "onnx")]:
        monkeypatch.delitem(backends.BACKENDS, name)


@pytest.fixture()
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The SHA-256 of a checkpoint's bytes, which keys the cached answers."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # this test's answers only
    path = tmp_path / "best.pt"
    path.write_bytes(b"weights")
    return file_sha256(path)


def _race(race: runtime.Race, network_s: dict[str, float], waiting_s: dict[str, float] | None = None) -> list[str]:
    """Run ``race`` to its choice: each batch waits ``waiting_s`` for its inputs, then its network takes
    ``network_s``; the order the runtimes ran in."""
    ran = []
    while race.choice is None:
        name = race.next()
        time.sleep((waiting_s or {}).get(name, 0.0) + network_s[name])
        race.finished(name, 8)
        ran.append(name)
    return ran


def test_the_race_times_both_on_the_first_batches_keeps_the_faster_and_caches_it(weights: str) -> None:
    race = runtime.Race(weights, size=64, batch=16, threads=2)
    ran = _race(race, {"torch": 0.03, "onnx": 0.005})
    assert ran == list(runtime.schedule(("torch", "onnx"))) == ["torch", "onnx", "onnx", "torch", "torch", "onnx"]
    assert race.choice.runtime == "onnx" and race.choice.reason.startswith("ONNX Runtime ")
    assert "against PyTorch's" in race.choice.reason
    assert "on 2 CPU threads, timed end to end on 4 of this run's batches (cached in " in race.choice.reason

    again = cached_choice(weights, 64, 16, 2)
    assert again is not None and again.runtime == "onnx" and "(cached in " in again.reason
    (entry,) = (runtime.cache_dir() / "runtime").glob("*.json")
    record = json.loads(entry.read_text())
    assert record["runtime"] == "onnx" and set(record["ms_per_image"]) == {"torch", "onnx"}
    assert (record["size"], record["batch"], record["threads"]) == (64, 16, 2)
    assert 25 <= record["ms_per_image"]["torch"] * 8 <= 60  # per image: 30 ms per batch of 8, timed as slept


def test_the_race_counts_the_wait_for_inputs_and_not_the_first_batch_of_each(weights: str) -> None:
    # ONNX Runtime's network is faster, but its batches wait on the decoding: end to end PyTorch wins.
    race = runtime.Race(weights, 64, 16, 2)
    _race(race, {"torch": 0.01, "onnx": 0.002}, waiting_s={"onnx": 0.03})
    assert race.choice.runtime == "torch"
    # A slow first batch (allocations, set-up) is not counted against its runtime.
    race = runtime.Race(weights, 64, 16, 2)
    first = {"torch": 0.2}

    def network(name: str) -> float:
        return first.pop(name, 0.002 if name == "torch" else 0.02)

    while race.choice is None:
        name = race.next()
        time.sleep(network(name))
        race.finished(name, 8)
    assert race.choice.runtime == "torch"


def test_what_fewer_threads_measured_is_kept_apart_from_every_cores(weights: str) -> None:
    _race(runtime.Race(weights, 64, 16, 2), {"torch": 0.02, "onnx": 0.002})
    race = runtime.Race(weights, 64, 16, 1)  # a shared CPU: one core left free
    _race(race, {"torch": 0.002, "onnx": 0.02})
    assert race.choice.runtime == "torch" and "on 1 CPU thread, timed end to end" in race.choice.reason
    assert cached_choice(weights, 64, 16, 1).runtime == "torch"
    assert cached_choice(weights, 64, 16, 2).runtime == "onnx"


def test_the_cache_is_per_size_batch_threads_and_weights(weights: str, tmp_path: Path) -> None:
    _race(runtime.Race(weights, 64, 16, 2), {"torch": 0.001, "onnx": 0.02})
    assert cached_choice(weights, 64, 16, 2).runtime == "torch"
    assert cached_choice(weights, 128, 16, 2) is None
    assert cached_choice(weights, 64, 8, 2) is None
    assert cached_choice(weights, 64, 16, 1) is None
    retrained = tmp_path / "retrained.pt"
    retrained.write_bytes(b"other weights")
    assert cached_choice(file_sha256(retrained), 64, 16, 2) is None


def test_a_damaged_cache_entry_is_measured_again(weights: str) -> None:
    _race(runtime.Race(weights, 64, 16, 2), {"torch": 0.001, "onnx": 0.02})
    (entry,) = runtime.cache_dir().glob("runtime/*.json")
    entry.write_text("{not json")
    assert cached_choice(weights, 64, 16, 2) is None


def test_onnx_sessions_do_not_spin_and_use_the_given_threads() -> None:
    pytest.importorskip("onnxruntime")
    options = session_options(3)
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_pytorch_must_be_faster_by_more_than_the_timing_varies() -> None:
    assert runtime.faster({"torch": 10.0, "onnx": 10.4}) == "onnx"  # within the margin: a tie goes to ONNX Runtime
    assert runtime.faster({"torch": 10.0, "onnx": 11.0}) == "torch"
    assert runtime.faster({"torch": 10.0}) == "torch"
    reason = runtime._comparison("onnx", {"torch": 10.0, "onnx": 10.4}, 2)
    assert reason.endswith("(PyTorch is not 1.05x faster: within what the timing varies)")


def test_auto_uses_what_was_cached_for_these_threads_and_races_otherwise(weights: str) -> None:
    pytest.importorskip("onnxruntime")
    from pipeline.inference.model import _planned

    _race(runtime.Race(weights, 64, 16, 2), {"torch": 0.001, "onnx": 0.02})
    chosen, reason = _planned("auto", True, weights, 64, 16, threads=2)
    assert chosen == "torch" and "(cached in " in reason
    for size, threads in [(64, 1), (128, 2)]:  # another thread count (a shared CPU), another size: raced
        chosen, reason = _planned("auto", True, weights, size, 16, threads=threads)
        assert chosen == "auto" and reason.startswith(
            "not measured before for this model, size, batch and thread count: the first 6 batches run on PyTorch"
        )
    assert _planned("torch", True, weights, 64, 16, threads=1) == ("torch", "as --runtime asks")
    assert _planned("auto", False, weights, 64, 16, threads=2)[0] == "torch"  # a GPU


class _Backend:
    """A stand-in network on the CPU: ``seconds`` per call, no detections, and a count of its calls."""

    device, fp16, end2end, stride = torch.device("cpu"), False, False, 32

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.seconds)
        return torch.zeros(len(batch), 4 + 1, 10)  # (B, boxes + one class, anchors): nothing found


def test_a_racing_detector_runs_the_rest_on_the_faster_and_says_so(weights: str, caplog) -> None:
    from pipeline.inference.model import RACING, Detector

    slow, fast = _Backend(0.03), _Backend(0.002)
    race = runtime.Race(weights, 64, 2, 2)
    detector = Detector({"torch": slow, "onnx": fast}, {0: "defect"}, 64, "best.pt", RACING, race=race)
    inputs = np.zeros((2, 3, 64, 64), np.uint8)
    with caplog.at_level(logging.INFO, logger="pipeline.inference"):
        found = [detector.detect(inputs, [(64, 64)] * 2) for _ in range(len(race.schedule) + 3)]
    assert all(len(batch) == 2 and all(len(boxes) == 0 for boxes in batch) for batch in found)
    assert slow.calls == race.schedule.count("torch") == 3  # the race's, and no more
    assert fast.calls == race.schedule.count("onnx") + 3
    assert detector.runtime == "onnx" and list(detector.backends) == ["onnx"] and detector.race is None
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("predict: runtime ")]
    assert line.startswith("predict: runtime onnx: ONNX Runtime ") and detector.reason in line

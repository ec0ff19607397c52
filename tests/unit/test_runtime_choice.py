"""`--runtime auto` on a CPU: the faster runtime, measured once per weights, size, batch and thread count, and cached."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.checkpoints import file_sha256
from pipeline.files import CACHE_ENV
from pipeline.inference import runtime
from pipeline.inference.runtime import cached_choice, measure_choice, session_options


class _Network:
    """A stand-in network that takes ``seconds`` per call and counts its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self.calls = seconds, 0

    def __call__(self, inputs: object) -> None:
        self.calls += 1
        time.sleep(self.seconds)


@pytest.fixture()
def weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The SHA-256 of a checkpoint's bytes, which keys the cached answers."""
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # this test's answers only
    path = tmp_path / "best.pt"
    path.write_bytes(b"weights")
    return file_sha256(path)


def test_the_faster_runtime_is_chosen_and_the_answer_cached(weights: str) -> None:
    slow, fast = _Network(0.03), _Network(0.005)
    choice = measure_choice({"torch": slow, "onnx": fast}, weights, size=64, batch=16, threads=2)
    assert choice.runtime == "onnx"
    assert choice.reason.startswith("ONNX Runtime ")
    assert "against PyTorch's" in choice.reason and "on 2 CPU threads, measured now on 5 batches of 8" in choice.reason
    assert slow.calls == fast.calls == 1 + runtime.TIMED_ROUNDS  # one untimed call each, then alternating rounds

    again = cached_choice(weights, 64, 16, 2)
    assert again is not None and again.runtime == "onnx" and "(cached in " in again.reason
    (entry,) = (runtime.cache_dir() / "runtime").glob("*.json")
    record = json.loads(entry.read_text())
    assert record["runtime"] == "onnx" and set(record["ms_per_image"]) == {"torch", "onnx"}
    assert (record["size"], record["batch"], record["threads"]) == (64, 16, 2)


def test_the_cache_is_per_size_batch_threads_and_weights(weights: str, tmp_path: Path) -> None:
    measure_choice({"torch": _Network(0.001), "onnx": _Network(0.02)}, weights, size=64, batch=16, threads=2)
    assert cached_choice(weights, 64, 16, 2).runtime == "torch"
    assert cached_choice(weights, 128, 16, 2) is None
    assert cached_choice(weights, 64, 8, 2) is None
    assert cached_choice(weights, 64, 16, 1) is None
    retrained = tmp_path / "retrained.pt"
    retrained.write_bytes(b"other weights")
    assert cached_choice(file_sha256(retrained), 64, 16, 2) is None


def test_a_damaged_cache_entry_is_measured_again(weights: str) -> None:
    measure_choice({"torch": _Network(0.001), "onnx": _Network(0.02)}, weights, size=64, batch=16, threads=2)
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


class _Load:
    """A load probe that reads ``share``."""

    def __init__(self, share: float) -> None:
        self.share = share

    def others(self) -> float:
        return self.share


def test_on_cores_other_work_keeps_busy_auto_takes_onnx_and_measures_nothing(weights: str) -> None:
    pytest.importorskip("onnxruntime")
    from pipeline.inference.model import _planned

    measure_choice({"torch": _Network(0.001), "onnx": _Network(0.02)}, weights, size=64, batch=16, threads=2)
    chosen, reason = _planned("auto", True, weights, 64, 16, _Load(0.9))
    assert chosen == "onnx" and reason.startswith("other processes keep 90% of the CPU busy: ONNX Runtime")
    assert len(list(runtime.cache_dir().glob("runtime/*.json"))) == 1  # the quiet machine's answer is kept
    chosen, reason = _planned("auto", True, weights, 64, 16, _Load(0.1))
    assert chosen == "torch" and "(cached in " in reason  # quiet again: what was measured there
    assert _planned("torch", True, weights, 64, 16, _Load(0.9)) == ("torch", "as --runtime asks")


def test_the_load_of_other_processes_is_read_off_the_machine() -> None:
    cores = runtime.cpu_threads()
    spinners = (
        f"import subprocess, sys; [subprocess.Popen([sys.executable, '-c', 'while 1: pass']) for _ in range({cores})]"
    )
    group = subprocess.Popen([sys.executable, "-c", spinners + "; import time; time.sleep(60)"], start_new_session=True)
    try:
        time.sleep(1.0)  # one spinning process per core, running
        probe = runtime.LoadProbe()
        sum(i * i for i in range(200_000))  # this process's own work is not another's
        busy = probe.others()
    finally:
        os.killpg(group.pid, signal.SIGKILL)  # the launcher and its spinners, by their group
        group.wait()
    assert busy >= 0.6  # every core spun by other processes (less what the machine's own work takes)

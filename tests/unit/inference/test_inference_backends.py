"""The inference backends' registry: a backend registered there is a --runtime choice, built by `build_checkpoint_detector`
and, when it races, timed by `--runtime auto`; each real backend loads a model and says what it runs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from pipeline.cpu import LoadProbe
from pipeline.files import CACHE_ENV, cache_dir
from pipeline.inference import runtime
from pipeline.inference.backends import BACKENDS, Backend, BackendInfo, LoadRequest, racers, runtime_choices
from pipeline.inference.options import PredictOptions


class _Fake(Backend):
    """A backend that finds nothing, and keeps what it was loaded with."""

    name, label = "fake", "Fake"
    loaded: list[LoadRequest] = []

    def __init__(self, request: LoadRequest) -> None:
        self.device, self.fp16, self.stride, self.end2end = request.device, False, 32, False
        self.file, self.calls = request.weights, 0

    @classmethod
    def load(cls, request: LoadRequest) -> _Fake:
        cls.loaded.append(request)
        return cls(request)

    def run(self, batch: torch.Tensor) -> Any:
        self.calls += 1
        return torch.zeros(len(batch), 4 + 1, 10)  # (B, boxes + one class, anchors): nothing found


class _RacingFake(_Fake):
    name, label, races = "racer", "Racer", True


def _request(tiny_model: Path) -> LoadRequest:
    from pipeline.inference.model import open_checkpoint

    opened = open_checkpoint(str(tiny_model))
    # the threads PyTorch has already: loading the torch backend sets them for the whole process
    return LoadRequest(opened.yolo.model, opened.weights, 32, torch.device("cpu"), False, torch.get_num_threads())


def test_a_registered_backend_is_offered_by_the_choices_and_chosen_by_build_checkpoint_detector(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.cli import build_parser
    from pipeline.inference.model import build_checkpoint_detector, open_checkpoint

    before = runtime_choices()
    assert before[:3] == ("auto", "torch", "onnx") and "fake" not in before
    monkeypatch.setitem(BACKENDS, _Fake.name, _Fake)
    monkeypatch.setattr(_Fake, "loaded", [])
    assert runtime_choices() == (*before, "fake")
    assert PredictOptions.choices("runtime") == runtime_choices()
    assert PredictOptions.checked(runtime="fake").runtime == "fake"
    argv = ["predict", "images", "--model", "m.pt", "--out", "out", "--runtime", "fake"]
    assert build_parser().parse_args(argv).runtime == "fake"
    assert "fake" not in racers()  # it does not race: auto never builds it

    load = LoadProbe()
    opened = open_checkpoint(str(tiny_model))
    options = PredictOptions.checked(runtime="fake", device="cpu", imgsz=32)
    detector = build_checkpoint_detector(opened, options, load)
    assert detector.runtime == "fake" and list(detector.backends) == ["fake"] and detector.race is None
    assert detector.reason.startswith("as --runtime asks") and detector.note == ""
    (request,) = _Fake.loaded
    assert (request.weights, request.trained_size, request.device.type) == (opened.weights, 32, "cpu")
    found = detector.detect(np.zeros((2, 3, 32, 32), np.uint8), [(32, 32)] * 2)
    assert [len(boxes) for boxes in found] == [0, 0] and detector.backend.calls == 1
    assert detector.backend.describe() == BackendInfo("fake", "Fake", "cpu", "fp32", opened.weights)


def test_a_registered_racer_joins_the_race_and_what_was_cached_without_it_is_measured_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # this test's answers only
    weights = "ab" * 32
    for name in [n for n in BACKENDS if n not in ("torch", "onnx")]:  # the race of two, then a third joins
        monkeypatch.delitem(BACKENDS, name)
    race = runtime.Race(weights, 64, 16, 2, ("torch", "onnx"))
    while race.choice is None:
        race.finished(race.next(), 8)
    assert runtime.cached_choice(weights, 64, 16, 2) is not None

    monkeypatch.setitem(BACKENDS, _RacingFake.name, _RacingFake)
    assert racers() == ("torch", "onnx", "racer")
    assert runtime.cached_choice(weights, 64, 16, 2) is None  # raced without it: measured again
    race = runtime.Race(weights, 64, 16, 2)
    assert race.schedule == ("torch", "onnx", "racer", "racer", "onnx", "torch", "torch", "onnx", "racer")
    network_s = {"torch": 0.02, "onnx": 0.01, "racer": 0.001}
    while race.choice is None:
        name = race.next()
        time.sleep(network_s[name])
        race.finished(name, 8)
    assert race.choice.runtime == "racer" and race.choice.reason.startswith("Racer ")
    assert "against PyTorch's" in race.choice.reason and "ONNX Runtime's" in race.choice.reason
    assert "timed end to end on 6 of this run's batches" in race.choice.reason
    assert runtime.cached_choice(weights, 64, 16, 2).runtime == "racer"


def test_the_torch_backend_loads_the_network_and_describes_itself(tiny_model: Path) -> None:
    request = _request(tiny_model)
    backend = BACKENDS["torch"].load(request)
    assert backend.describe() == BackendInfo("torch", "PyTorch", "cpu", "fp32", request.weights)
    assert str(backend.describe()) == f"torch on cpu, fp32, {request.weights}"
    assert backend.stride == 32 and not backend.end2end
    raw = backend(torch.zeros(1, 3, 32, 32))
    assert (raw[0] if isinstance(raw, (list, tuple)) else raw).shape[:2] == (1, 4 + 1)


def test_the_onnx_backend_exports_the_network_and_describes_itself(tiny_model: Path) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    request = _request(tiny_model)
    backend = BACKENDS["onnx"].load(request)
    info = backend.describe()
    assert info == BackendInfo("onnx", "ONNX Runtime", "cpu", "fp32", info.file)
    assert info.file.suffix == ".onnx" and info.file.parent == cache_dir() / "onnx" and info.file.is_file()
    session = backend.auto.backend.session  # ours: the threads asked for, no spinning
    assert session.get_session_options().intra_op_num_threads == request.threads
    batch = torch.rand(2, 3, 32, 32)
    ours = backend(batch)
    theirs = BACKENDS["torch"].load(request)(batch)
    theirs = theirs[0] if isinstance(theirs, (list, tuple)) else theirs
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-3)
    assert BACKENDS["onnx"].cpu_only and not BACKENDS["torch"].cpu_only


def test_the_openvino_backend_runs_the_same_export_in_float32_and_describes_itself(tiny_model: Path) -> None:
    ov = pytest.importorskip("openvino")
    pytest.importorskip("onnx")
    request = _request(tiny_model)
    backend = BACKENDS["openvino"].load(request)
    info = backend.describe()
    assert info == BackendInfo("openvino", "OpenVINO", "cpu", "fp32", info.file)
    assert info.file == BACKENDS["onnx"].load(request).file  # the one export, made once
    # float32 even where the CPU would run bfloat16 by default (AMX), on the threads asked for
    assert backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert int(backend.compiled.get_property("INFERENCE_NUM_THREADS")) == request.threads
    torch_backend = BACKENDS["torch"].load(request)
    assert (backend.stride, backend.end2end) == (torch_backend.stride, torch_backend.end2end)
    batch = torch.rand(2, 3, 32, 32)
    ours = backend(batch)
    theirs = torch_backend(batch)
    theirs = theirs[0] if isinstance(theirs, (list, tuple)) else theirs
    assert ours.shape == theirs.shape and torch.allclose(ours, theirs, atol=1e-3)
    assert BACKENDS["openvino"].cpu_only and "openvino" not in racers()  # chosen, not raced

"""`PredictOptions`: the one definition of predict's options, as the CLI, the Python API and the Ray engine take them."""

from __future__ import annotations

from pathlib import Path

import pytest

import pipeline.inference
from pipeline.cli import main
from pipeline.inference import PredictOptions, predict
from pipeline.inference.engine import PredictResult
from pipeline.inference.errors import ModelError, ResultsError


@pytest.mark.parametrize(
    ("values", "error", "message"),
    [
        ({"batch": 0}, ResultsError, "--batch: must be >= 1, got 0"),
        ({"conf": float("nan")}, ResultsError, "--conf: must be between 0 and 1, got nan"),
        ({"iou": 1.5}, ResultsError, "--iou: must be between 0 and 1, got 1.5"),
        ({"imgsz": -64}, ResultsError, "--imgsz: must be >= 0, got -64"),
        ({"workers": -1}, ResultsError, "--workers: must be >= 0, got -1"),
        ({"max_det": 0}, ResultsError, "--max-det: must be >= 1, got 0"),
        ({"engine": "spark"}, ResultsError, "engine: must be local or ray, got 'spark'"),
        ({"runtime": "gpu"}, ModelError, "runtime: must be auto, torch, onnx or openvino, got 'gpu'"),
        ({"tile": 16}, ResultsError, "tile 16, overlap 0.2: the tile must be >= 32 px and the overlap in [0, 1)"),
        ({"tile": 64, "overlap": 1.0}, ResultsError, "tile 64, overlap 1.0: the tile must be >= 32 px"),
        ({"batch": "many"}, ResultsError, "batch: input should be a valid integer"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(values: dict, error: type, message: str) -> None:
    with pytest.raises(error) as caught:
        PredictOptions.checked(**values)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_defaults_and_what_a_caller_may_pass_for_them() -> None:
    options = PredictOptions.checked(device=0, thresholds=None)
    assert options == PredictOptions(device="0")
    assert options.model_dump(include={"batch", "conf", "engine", "thresholds"}) == {
        "batch": 16,
        "conf": 0.25,
        "engine": "local",
        "thresholds": {},
    }
    assert PredictOptions.checked(tile=0, overlap=5.0).overlap == 5.0  # the overlap matters only with tiles
    with pytest.raises(TypeError, match="unexpected keyword argument 'bacth'"):
        PredictOptions.checked(bacth=4)


def test_predict_refuses_a_bad_keyword_before_it_touches_anything(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(ResultsError, match="--batch: must be >= 1, got 0"):
        predict(tmp_path / "nowhere", "never-loaded.pt", out, batch=0)
    with pytest.raises(ResultsError, match="--conf: must be between 0 and 1, got 2.0"):
        predict(tmp_path / "nowhere", "never-loaded.pt", out, PredictOptions(batch=4), conf=2.0)  # keywords win
    with pytest.raises(TypeError, match="unexpected keyword argument 'confidence'"):
        predict(tmp_path / "nowhere", "never-loaded.pt", out, confidence=0.5)
    assert not out.exists()


def _options_of(monkeypatch: pytest.MonkeyPatch, *args: str) -> PredictOptions:
    """The options `yolo-pipeline predict` hands to `predict` for this command line."""
    seen: list[PredictOptions] = []

    def fake(source: str, model: str, out: str, options: PredictOptions) -> PredictResult:
        seen.append(options)
        return PredictResult(Path(out), model)

    monkeypatch.setattr(pipeline.inference, "predict", fake)
    assert main(["predict", "parts/", "--model", "best.pt", "--out", "results/", *args]) == 0
    return seen[0]


def test_the_command_line_builds_the_same_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _options_of(monkeypatch) == PredictOptions()
    given = _options_of(
        monkeypatch,
        *("--batch", "4", "--conf", "0.1", "--no-half", "--workers", "2", "--threshold", "scratch=0.4"),
        *("--threshold", "default=0.3", "--save-crops", "--max-det", "50", "--tile", "640", "--overlap", "0.3"),
        *("--track", "--experiment", "line-3", "--engine", "ray", "--tracking-uri", "http://127.0.0.1:5000"),
        *("--runtime", "torch", "--no-progress", "--device", "cpu", "--imgsz", "320"),
    )
    assert given == PredictOptions(
        batch=4,
        conf=0.1,
        half=False,
        workers=2,
        thresholds={"scratch": 0.4, "default": 0.3},
        save_crops=True,
        max_det=50,
        tile=640,
        overlap=0.3,
        track=True,
        experiment="line-3",
        engine="ray",
        tracking_uri="http://127.0.0.1:5000",
        runtime="torch",
        progress=False,
        device="cpu",
        imgsz=320,
    )
    assert _options_of(monkeypatch, "--half", "--save-images").model_dump(include={"half", "save_images"}) == {
        "half": True,
        "save_images": True,
    }

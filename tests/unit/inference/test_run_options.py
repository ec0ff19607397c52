"""`RunOptions`: how evaluate, calibrate and calibrate --check run a model, defined once; their flags come from it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

import pipeline.cli.calibrate as calibrate_command
import pipeline.cli.evaluate as evaluate_command
from pipeline import calibrate, check_screen, evaluate
from pipeline.cli import build_parser, main
from pipeline.inference.errors import ResultsError
from pipeline.inference.options import PredictOptions, RunOptions
from pipeline.screen.calibrate import LOW_CONF, RUN_FIELDS, run_options


def _command(name: str) -> argparse.ArgumentParser:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def test_predict_shares_the_run_fields_with_its_own_default_conf() -> None:
    assert list(PredictOptions.model_fields)[: len(RunOptions.model_fields)] == list(RunOptions.model_fields)
    assert (RunOptions().conf, PredictOptions().conf) == (
        0.001,
        0.25,
    )  # a split's evaluation; a prediction's
    assert PredictOptions.given(RunOptions(imgsz=64), {}, "predict") == PredictOptions(imgsz=64, conf=0.001)


@pytest.mark.parametrize(
    ("command", "fields"),
    [("evaluate", tuple(RunOptions.model_fields)), ("calibrate", RUN_FIELDS)],
)
def test_each_command_has_one_flag_per_field_it_takes(command: str, fields: tuple[str, ...]) -> None:
    flags = {action.dest: action for action in _command(command)._actions}
    for name, field in RunOptions.model_fields.items():
        if name in fields:
            assert flags[name].default == field.default and flags[name].help == field.description, name
        else:
            assert name not in flags, name  # calibrate's conf is its own, low: no --conf, no --iou


def _handed(monkeypatch: pytest.MonkeyPatch, module: object, function: str, *argv: str) -> RunOptions:
    seen: list[RunOptions] = []

    def fake(*args: object, options: RunOptions, **kwargs: object) -> object:
        seen.append(options)
        raise FileNotFoundError("stopped here")

    monkeypatch.setattr(module, function, fake)
    assert main(list(argv)) == 2
    return seen[0]


def test_the_command_lines_hand_their_options_to_the_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    common = (
        "--model",
        "m.pt",
        "--data",
        "d.yaml",
        "--imgsz",
        "320",
        "--device",
        "cpu",
    )
    given = _handed(
        monkeypatch,
        evaluate_command,
        "evaluate",
        "evaluate",
        *common,
        "--conf",
        "0.01",
        "--batch",
        "2",
    )
    assert given == RunOptions(imgsz=320, device="cpu", conf=0.01, batch=2)
    assert _handed(monkeypatch, calibrate_command, "calibrate", "calibrate", *common) == RunOptions(
        imgsz=320, device="cpu"
    )
    monkeypatch.setattr(calibrate_command, "read_screen", lambda path: None)  # --check: no screen file needed here
    checked = _handed(
        monkeypatch,
        calibrate_command,
        "check_screen",
        "calibrate",
        *common,
        "--check",
        "s.json",
    )
    assert checked == RunOptions(imgsz=320, device="cpu")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["calibrate", *common, "--conf", "0.5"])


def test_the_keyword_api_is_checked_by_the_same_model_before_anything_runs(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    with pytest.raises(ResultsError, match="--batch: must be >= 1, got 0"):
        evaluate("never-loaded.pt", tmp_path / "nowhere", out=out, batch=0)
    with pytest.raises(ResultsError, match="--imgsz: must be >= 0, got -1"):
        calibrate("never-loaded.pt", tmp_path / "nowhere", out=out, imgsz=-1)
    with pytest.raises(TypeError, match=r"evaluate\(\) got an unexpected keyword argument 'confidence'"):
        evaluate("never-loaded.pt", tmp_path / "nowhere", confidence=0.5)
    with pytest.raises(TypeError, match=r"calibrate\(\) got an unexpected keyword argument 'conf'"):
        calibrate("never-loaded.pt", tmp_path / "nowhere", out=out, conf=0.5)
    with pytest.raises(TypeError, match=r"check_screen\(\) got an unexpected keyword argument 'iou'"):
        check_screen("never-loaded.pt", tmp_path / "nowhere", None, iou=0.5)
    assert not out.exists()


def test_calibrate_runs_at_its_low_conf_whatever_the_options_say() -> None:
    options = run_options(RunOptions(conf=0.5, imgsz=64), {"device": "cpu"}, "calibrate")
    assert options == RunOptions(conf=LOW_CONF, imgsz=64, device="cpu")

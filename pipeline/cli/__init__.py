"""The ``yolo-pipeline`` command: one module per command or group, each with its parser and handler.

`train` (init, train, resume, sync), `data`, `augment`, `predict`, `compare`, `sweep`, `evaluate`, `calibrate`,
`promote`, `export`; `common` holds what they share (options generated from an options model, the one-line errors). This
module only assembles them: `build_parser` and `main` (the console script's entry point).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pipeline.cli import augment, calibrate, common, compare, data, evaluate, export, predict, promote, sweep, train
from pipeline.telemetry import block_telemetry

COMMANDS = (train, data, augment, predict, compare, sweep, evaluate, calibrate, promote, export)  # in `--help`'s order


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yolo-pipeline", description="Fine-tune YOLO detectors, tracked in MLflow.")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse, run the command (its summary printed, any error one line), return the exit code."""
    block_telemetry()  # before any command imports ONNX Runtime or OpenVINO
    return common.run(build_parser().parse_args(argv))

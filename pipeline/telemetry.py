"""No usage reports and no files in the user's home from the inference libraries.

ONNX Runtime's native library starts Microsoft's telemetry client at import (a device id and an event database in
``~/.cache/Microsoft/DeveloperTools/.onnxruntime/``) unless ``ORT_DISABLE_TELEMETRY`` is set. OpenVINO (``import
openvino`` alone, through its converter package) and NNCF send usage events through ``openvino_telemetry``
(writing ``~/intel/``), and fall back to no-op stubs when that package cannot be imported. Both settings only take
effect before the process first imports the library, so every place that imports one calls `block_telemetry`
first (the command line does at its start); a value the user set for ``ORT_DISABLE_TELEMETRY`` is kept.
"""

from __future__ import annotations

import os
import sys


def block_telemetry() -> None:
    """Keep ONNX Runtime, OpenVINO and NNCF from reporting usage and from writing into the home folder."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]  # None: its import fails, stubs run

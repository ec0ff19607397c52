"""The package's boundaries: only pipeline/tracking/ imports mlflow, and importing the CLI loads no heavy library."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pipeline"
MLFLOW_IMPORT = re.compile(r"^\s*(import mlflow|from mlflow[ .])", re.MULTILINE)


def test_only_the_tracking_package_imports_mlflow() -> None:
    importers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if MLFLOW_IMPORT.search(path.read_text(encoding="utf-8"))
    }
    assert importers and all(name.startswith("tracking/") for name in importers), importers


def test_importing_the_cli_loads_neither_mlflow_nor_torch_nor_ultralytics() -> None:
    code = "import sys, pipeline.cli; print(sorted(m for m in ('mlflow', 'torch', 'ultralytics') if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"

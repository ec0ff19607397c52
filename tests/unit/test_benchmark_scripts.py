"""Every benchmark script still imports: they run outside the suite, so a moved name would otherwise go unseen."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCHMARKS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "scripts" / "benchmarks").glob("*.py"))


@pytest.mark.parametrize("name", BENCHMARKS)
def test_a_benchmark_script_imports(name: str) -> None:
    module = importlib.import_module(f"scripts.benchmarks.{name}")
    assert name == "common" or callable(getattr(module, "main", None))

"""Makefile: `make test` ends with its own duration and keeps the checks' verdict."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def make_test(tmp_path: Path, pytest_status: int, mkdocs_status: int = 0) -> subprocess.CompletedProcess:
    """`make test` with stand-ins for ruff, mkdocs and pytest (in a venv that counts as installed)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "ruff").write_text('#!/bin/sh\necho ruff "$@"\n', encoding="utf-8")
    (venv / "bin" / "mkdocs").write_text(f'#!/bin/sh\necho mkdocs "$@"\nexit {mkdocs_status}\n', encoding="utf-8")
    (venv / "bin" / "python").write_text(f'#!/bin/sh\necho python "$@"\nexit {pytest_status}\n', encoding="utf-8")
    for tool in ("ruff", "mkdocs", "python"):
        (venv / "bin" / tool).chmod(0o755)
    (venv / ".installed").touch()  # newer than pyproject.toml: no install
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(REPO), "test", f"VENV={venv}"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_ends_with_its_duration(tmp_path: Path) -> None:
    done = make_test(tmp_path, pytest_status=0)
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[:2] == ["ruff check pipeline tests scripts", "ruff format --check pipeline tests scripts"]
    built = re.fullmatch(r"mkdocs build --strict --site-dir (/\S+)", lines[2])
    assert built and not Path(built[1]).exists()  # built into a temporary folder, removed: nothing in the checkout
    assert lines[3] == "python -m pytest -n 2 --dist loadfile --durations=20"
    assert re.fullmatch(r"make test: \d+m \d+s", lines[-1]) and len(lines) == 5


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_failing_suite_still_says_its_duration_and_fails(tmp_path: Path) -> None:
    done = make_test(tmp_path, pytest_status=1)
    assert done.returncode != 0
    assert re.fullmatch(r"make test: \d+m \d+s", done.stdout.splitlines()[-1])


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_failing_docs_build_fails_before_the_suite(tmp_path: Path) -> None:
    done = make_test(tmp_path, pytest_status=0, mkdocs_status=1)
    lines = done.stdout.splitlines()
    assert done.returncode != 0 and not any(line.startswith("python -m pytest") for line in lines)
    assert re.fullmatch(r"make test: \d+m \d+s", lines[-1])

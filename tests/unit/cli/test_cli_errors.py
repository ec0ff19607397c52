"""The command line's last line of defence: an error nothing foresaw is still one line, the traceback behind -v."""

from __future__ import annotations

import pytest

from pipeline import cli
from pipeline.cli import train as train_commands


def _boom(args: object) -> int:
    raise RuntimeError("tracking http://user:s3cret@host failed\nsecond line")


def test_an_unforeseen_error_is_one_redacted_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(train_commands, "cmd_sync", _boom)
    assert cli.main(["sync"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: RuntimeError: tracking http://user:***@host failed (run with -v for the traceback)"]


def test_verbose_shows_the_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_commands, "cmd_sync", _boom)
    with pytest.raises(RuntimeError, match="s3cret"):
        cli.main(["-v", "sync"])


def test_a_command_that_needs_the_training_stack_says_how_to_install_it_on_a_line_pc(tmp_path) -> None:
    """On a line PC's install (no torch, ultralytics or MLflow: blocked here) a command of the whole tool is one
    line naming what to install."""
    import subprocess
    import sys

    blocked = "import sys\nfor m in ('torch', 'ultralytics', 'mlflow'): sys.modules[m] = None\n"
    run = "from pipeline.cli import main\nsys.exit(main(['export', '--model', 'm.pt', '--out', 'bundle']))"
    done = subprocess.run([sys.executable, "-c", blocked + run], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: export needs torch, which a line PC's install leaves out: pip install 'yolo-pipeline[train]'"
    ]

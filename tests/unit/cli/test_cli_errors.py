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

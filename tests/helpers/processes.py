"""Another process holding a destination folder, as a second writer would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HOLDER = """
import sys
from pipeline.destinations import command_context, writer_lock
with command_context(sys.argv[2]), writer_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()  # until the test closes our stdin
"""


class hold:  # noqa: N801 - used as a context manager, like open()
    """``folder`` held by another process, as ``command``, until the block ends."""

    def __init__(self, folder: Path, command: str):
        self.folder, self.command = folder, command

    def __enter__(self) -> subprocess.Popen:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(self.folder), self.command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "held"
        return self.process

    def __exit__(self, *exc: object) -> None:
        self.process.stdin.close()
        assert self.process.wait(timeout=30) == 0

"""A real `mlflow server` on 127.0.0.1 for tests: own process group, health-checked, killable, restartable."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """The same database, artifact folder and port across restarts, so a restart is the same server back."""

    def __init__(self, folder: Path, port: int | None = None):
        self.folder = Path(folder)
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 90.0) -> None:
        mlflow = Path(sys.executable).with_name("mlflow")
        command = [
            str(mlflow),
            "server",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
            "--artifacts-destination", str(self.folder / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 - kept open for the server's lifetime
        # MLflow's job runner (huey consumers for its GenAI jobs, ~8 processes, ~15 s of CPU at each start) serves
        # nothing the pipeline records.
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.folder, env=env
        )
        try:
            self._wait_until_healthy(timeout_s)
        except BaseException:
            self.stop()  # never leave a server behind, also on Ctrl-C
            raise

    def _wait_until_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            if self.healthy():
                return
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server did not answer /health within {timeout_s}s")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the whole process group (the server starts workers of its own)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.process = None
        deadline = time.monotonic() + 10
        while self.healthy() and time.monotonic() < deadline:
            time.sleep(0.2)

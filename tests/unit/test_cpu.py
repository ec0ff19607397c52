"""The CPU share: threads for the cores other processes leave free, and the load read off the machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from pipeline import cpu


@pytest.mark.parametrize(
    ("others", "cores", "threads"),
    [(0.0, 2, 2), (0.2, 2, 2), (0.3, 2, 1), (0.9, 2, 1), (1.0, 1, 1), (0.5, 8, 4), (0.05, 16, 15)],
)
def test_the_work_gets_the_cores_other_processes_leave_free(others: float, cores: int, threads: int) -> None:
    assert cpu.free_threads(others, cores) == threads


def test_the_load_of_other_processes_is_read_off_the_machine() -> None:
    cores = cpu.cpu_threads()
    spinners = (
        f"import subprocess, sys; [subprocess.Popen([sys.executable, '-c', 'while 1: pass']) for _ in range({cores})]"
    )
    group = subprocess.Popen([sys.executable, "-c", spinners + "; import time; time.sleep(60)"], start_new_session=True)
    try:
        time.sleep(1.0)  # one spinning process per core, running
        probe = cpu.LoadProbe()
        sum(i * i for i in range(200_000))  # this process's own work is not another's
        busy = probe.others()
    finally:
        os.killpg(group.pid, signal.SIGKILL)  # the launcher and its spinners, by their group
        group.wait()
    assert busy >= 0.6  # every core spun by other processes (less what the machine's own work takes)

"""Detached processes with pid files (what deploy/local starts services with)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from deploy.local.processes import ManagedProcess


def sleeper(tmp_path: Path, marker: str = "liverank-test-sleeper") -> ManagedProcess:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    return ManagedProcess(
        name="sleeper",
        argv=(sys.executable, "-c", code, marker),
        pid_file=tmp_path / "run" / "sleeper.pid",
        log_file=tmp_path / "logs" / "sleeper.log",
        marker=marker,
    )


def test_start_is_detached_idempotent_and_stop_leaves_nothing(tmp_path: Path) -> None:
    process = sleeper(tmp_path)
    pid = process.start()
    assert process.start() == pid  # a second start changes nothing
    deadline = time.monotonic() + 5
    while process.pid() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.pid() == pid
    assert os.getpgid(pid) != os.getpgid(0)  # its own session: our signals do not reach it
    # It ignores SIGTERM, so stop must fall back to SIGKILL after the timeout.
    assert process.stop(timeout=0.5) is True
    assert process.pid() is None
    assert not process.pid_file.exists()
    assert process.stop() is False
    assert "starting sleeper" in process.log_tail()


def test_a_stale_pid_file_naming_another_program_is_not_running(tmp_path: Path) -> None:
    process = sleeper(tmp_path, marker="a-marker-that-no-process-has")
    process.pid_file.parent.mkdir(parents=True)
    process.pid_file.write_text(f"{os.getpid()} {os.getpgid(0)}\n")  # this test's own pid
    assert process.pid() is None
    assert process.stop() is False  # and it is not killed
    assert not process.pid_file.exists()


def test_exited_sees_a_process_that_died(tmp_path: Path) -> None:
    process = ManagedProcess(
        name="short",
        argv=(sys.executable, "-c", "import sys; print('bye'); sys.exit(3)"),
        pid_file=tmp_path / "short.pid",
        log_file=tmp_path / "short.log",
        marker="never-matches",
    )
    process.start()
    deadline = time.monotonic() + 10
    while not process.exited() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.exited()
    assert "bye" in process.log_tail()

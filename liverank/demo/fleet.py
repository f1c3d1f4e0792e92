"""The demo's processes: ``liverank`` sub-commands started with the demo's settings, each with
its own log, all stopped at the end (process groups, SIGTERM then SIGKILL)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

from liverank.errors import LiverankError


class DemoError(LiverankError):
    """A demo process failed; the message carries the end of its log."""


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


class Fleet:
    """Long-running ``liverank`` processes (workers, scorer, trainer) and one-shot jobs."""

    def __init__(self, env: dict[str, str], logs: Path, cwd: Path) -> None:
        self.env = env
        self.logs = logs
        self.cwd = cwd
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def _open(self, name: str) -> IO[bytes]:
        return self.log(name).open("ab")

    def start(self, name: str, *argv: str, env: dict[str, str] | None = None) -> None:
        with self._open(name) as log:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", "liverank.cli", *argv],
                cwd=self.cwd,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def run(
        self, name: str, *argv: str, env: dict[str, str] | None = None, timeout: float = 3600
    ) -> str:
        """Run a job to its end; its standard output, or DemoError with its log's tail."""
        with self._open(name) as log:
            try:
                done = subprocess.run(
                    [sys.executable, "-m", "liverank.cli", *argv],
                    cwd=self.cwd,
                    env={**self.env, **(env or {})},
                    stdout=subprocess.PIPE,
                    stderr=log,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise DemoError(f"{name} ran over {timeout:.0f}s; see {self.log(name)}") from exc
        output = done.stdout.decode(errors="replace")
        with self._open(name) as log:
            log.write(done.stdout)
        if done.returncode != 0:
            raise DemoError(
                f"{name} failed (exit {done.returncode}); end of {self.log(name)}:\n"
                + tail(self.log(name))
            )
        return output

    def check(self) -> None:
        """DemoError when a long-running process has died."""
        for name, process in list(self.running.items()):
            code = process.poll()
            if code is not None:
                raise DemoError(
                    f"{name} exited ({code}); end of {self.log(name)}:\n" + tail(self.log(name))
                )

    def stop(self, name: str, timeout: float = 30.0) -> None:
        process = self.running.pop(name, None)
        if process is None or process.poll() is not None:
            return
        _signal(process, signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _signal(process, signal.SIGKILL)
            process.wait(timeout=timeout)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)


def _signal(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)

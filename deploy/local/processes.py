"""Background processes with pid files: start detached, find alive, stop without leftovers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ManagedProcess:
    """One long-running process of a local service, known by its pid file.

    ``marker`` is a string that must appear in the process's command line; it guards against
    a stale pid file naming a pid that the system has since given to another program.
    """

    name: str
    argv: tuple[str, ...]
    pid_file: Path
    log_file: Path
    marker: str
    cwd: Path | None = None

    def pid(self) -> int | None:
        """The running process's pid, or None when it is not running."""
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        # A zombie has exited already; its cmdline is empty.
        state = stat.rsplit(")", 1)[-1].split()[0]
        if state == "Z" or self.marker.encode() not in cmdline:
            return None
        return pid

    def exited(self) -> bool:
        """True when the pid in the pid file is gone (or a zombie), marker or not.

        Used right after ``start``: a process may not show its marker yet (it is still the
        launching shell, or it renames itself as redis-server does).
        """
        try:
            pid = int(self.pid_file.read_text().split()[0])
            stat = Path(f"/proc/{pid}/stat").read_text()
        except (FileNotFoundError, ValueError, IndexError, OSError):
            return True
        return stat.rsplit(")", 1)[-1].split()[0] == "Z"

    def start(self) -> int:
        """Start detached (own session, output appended to the log); return the pid."""
        running = self.pid()
        if running is not None:
            return running
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n==== liverank: starting {self.name} ====\n".encode())
            # The shell puts the service in the background and exits at once, so the service
            # is adopted by init and outlives the command that started it. Its process group is
            # the new session's, which ``stop`` signals as a whole.
            script = 'exec </dev/null; "$@" >>"$0" 2>&1 & echo $!'
            launcher = subprocess.run(
                ["sh", "-c", script, str(self.log_file), *self.argv],
                cwd=self.cwd,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                check=True,
            )
        pid = int(launcher.stdout.decode().strip())
        pgid = os.getpgid(pid) if _exists(pid) else pid
        self.pid_file.write_text(f"{pid} {pgid}\n")
        return pid

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL after ``timeout``. True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        pgid = self._pgid(pid)
        _signal_group(pgid, pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() is not None:
            time.sleep(0.2)
        if self.pid() is not None:
            _signal_group(pgid, pid, signal.SIGKILL)
            while self.pid() is not None:
                time.sleep(0.1)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return f"(no log at {self.log_file})"
        return "\n".join(text.splitlines()[-lines:])

    def _pgid(self, pid: int) -> int:
        try:
            return int(self.pid_file.read_text().split()[1])
        except (FileNotFoundError, ValueError, IndexError):
            return pid


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pgid: int, pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

"""Start and stop the dev stack's server processes, identified by PID *and* start time.

A PID file alone can name an unrelated process after a reboot or PID reuse; we record the kernel's
start time of the process (``/proc/<pid>/stat`` field 22) next to the PID and only ever signal a
process whose start time still matches, so ``down`` stops exactly what ``up`` started.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from streams.exceptions import PortInUseError, StackError

__all__ = ["ManagedProcess", "port_in_use"]

# Children started by this interpreter, kept so they are reaped (no zombies, no ResourceWarning when
# a long-lived process such as the test session starts and stops the stack itself).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def port_in_use(host: str, port: int) -> bool:
    """Whether something is listening on ``host:port`` (a bind with SO_REUSEADDR fails)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def _reap(pid: int) -> None:
    """Collect the exit status of our child ``pid`` if it has exited (a crash, or a stop by another
    process): else it stays a zombie, and its ``Popen`` warns that it is still running at exit."""
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]


def _reap_exited() -> None:
    """Collect every child of ours that has exited, whoever stopped it."""
    for pid in list(_CHILDREN):
        _reap(pid)


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start = fields[0], fields[19]
    return None if state == "Z" else int(start)


@dataclass(frozen=True)
class ManagedProcess:
    """One server process of the dev stack, with its PID file and log file.

    Args:
        name: service name (``kafka``, ``redis``), used in messages.
        pid_file: where the PID and start time are recorded.
        log_file: where the process's stdout and stderr go.
    """

    name: str
    pid_file: Path
    log_file: Path

    def pid(self) -> int | None:
        """PID of our running process, or ``None`` (a stale PID file is removed)."""
        _reap_exited()  # children another process stopped (`crossroute down`) are zombies till now
        try:
            record = json.loads(self.pid_file.read_text())
            pid, ticks = int(record["pid"]), int(record["start_ticks"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _start_ticks(pid) != ticks:
            self.pid_file.unlink(missing_ok=True)
            _reap(pid)
            return None
        return pid

    def start(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> int:
        """Start ``argv`` detached (own session), output appended to the log file."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            try:
                proc = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=dict(env),
                    start_new_session=True,
                )
            except OSError as e:
                raise StackError(f"{self.name}: cannot start {argv[0]}: {e}") from e
        _CHILDREN[proc.pid] = proc
        ticks = _start_ticks(proc.pid)
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "start_ticks": ticks}))
        return proc.pid

    def adopt(self, pid: int) -> bool:
        """Record an already running process (``pid`` and its current start time) in our PID file,
        so :meth:`stop` can stop it later; return ``False`` (and record nothing) if it is not running.

        Used by the supervisor to take over a dev-stack server it has just had started, without
        touching the stack's own PID file."""
        ticks = _start_ticks(pid)
        if ticks is None:
            return False
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(json.dumps({"pid": pid, "start_ticks": ticks}))
        return True

    def log_size(self) -> int:
        """Current length of the log in bytes (0 without a log): an offset for :meth:`log_since`."""
        try:
            return self.log_file.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        """What was appended to the log after byte ``offset`` (output of one start only)."""
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except OSError:
            return ""

    def exited(self) -> bool:
        """Whether the recorded process is gone (crashed during start, or stopped)."""
        return self.pid() is None

    def log_tail(self, lines: int = 5, *, since: int = 0) -> str:
        """The last ``lines`` lines of the log (of what follows byte ``since``), joined with `` | ``
        for one-line errors."""
        text = self.log_since(since)
        return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:])

    def stop(self, timeout_s: float = 30.0) -> bool:
        """SIGTERM the process, SIGKILL it after ``timeout_s``; return whether one was running."""
        pid = self.pid()
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._gone(pid):
                break
            time.sleep(0.1)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while not self._gone(pid):
                time.sleep(0.05)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _gone(pid: int) -> bool:
        if pid in _CHILDREN:  # our own child: reap it
            _reap(pid)
            return pid not in _CHILDREN
        return _start_ticks(pid) is None


def require_free_port(service: str, host: str, port: int) -> None:
    """Raise :class:`PortInUseError` if ``host:port`` is taken."""
    if port_in_use(host, port):
        raise PortInUseError.for_port(service, host, port)

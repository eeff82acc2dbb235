"""What the project's managers of server processes (Triton, the Kafka broker) share."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on now (another process may still take it before us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ChildProcess:
    """Waiting on, probing and reading the log of one server child process.

    Subclasses set ``_process`` when they start the server, expose ``log_file``, and name the
    error raised when the process was never started in ``not_started_error``.
    """

    _process: subprocess.Popen[bytes] | None
    #: Where the process writes its log (a property of each subclass).
    log_file: Path
    not_started_error: type[Exception] = RuntimeError
    what: str = "process"

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Block until the process exits (or ``timeout_s`` passes); its exit code, or None."""
        process = self._process
        if process is None:
            raise self.not_started_error(f"the {self.what} has not been started")
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None

    @property
    def pid(self) -> int | None:
        """Process id while it runs."""
        return self._process.pid if self._process is not None else None

    def is_alive(self) -> bool:
        """Whether the process is running."""
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log."""
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

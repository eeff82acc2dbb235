"""Launch a real Triton Inference Server on the CPU from the ``nvidia-pytriton`` wheel.

The wheel carries a ``tritonserver`` binary, its shared libraries and the Python backend, but no
ONNX Runtime backend, so on a developer machine and in CI the models are served through the
``python`` repository variant (see :mod:`openlfr.inference.triton_repo`). Production runs the
official Triton container instead; this module is for tests, benchmarks and small CPU set-ups.

Things the wheel needs that are not obvious:

- The Python backend stub for the running interpreter's version is copied next to the backend
  library in a backend directory under the work dir, passed as ``--backend-directory``.
- The stub links ``libpython3.X.so``; ``LD_LIBRARY_PATH`` puts the running interpreter's own
  library directory first, otherwise a system libpython of the same version (e.g. Debian's) is
  picked up and the stub fails. The wheel's ``nvidia_pytriton.libs`` follows it.
- The stub embeds Python in isolated mode: ``PYTHONPATH`` is ignored, and the stub imports
  ``triton_python_backend_utils`` (hence numpy) before the model's ``model.py`` runs, so
  ``model.py`` cannot bring numpy in itself. The embedded interpreter finds its prefix by looking
  up ``python3`` on ``PATH``; with the virtualenv's ``bin`` first on ``PATH`` it finds the venv's
  ``pyvenv.cfg`` and gets the venv's site-packages (what pytriton does too). ``model.py`` adds
  the site-packages named in its config as well, for packages imported after start-up.
- That environment must have numpy < 2 (with numpy 2 every output comes back empty).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from openlfr.inference.exceptions import InferenceError
from openlfr.subprocesses import ChildProcess, free_port

logger = logging.getLogger(__name__)

_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_utils.py")
_STUB = "triton_python_backend_stub"
_ERROR_LINE = re.compile(r"^E\d{4} |^error: ")  # glog's error prefix: E<month><day>
_TABLE_LINE = re.compile(r"^[|+]")


class TritonServerError(InferenceError):
    """The Triton server could not be found, started or kept running."""


@dataclass(frozen=True, slots=True)
class TritonDistribution:
    """Where the files of the ``nvidia-pytriton`` wheel are.

    Attributes:
        binary: The ``tritonserver`` executable.
        libs_dir: The wheel's bundled shared libraries (``nvidia_pytriton.libs``).
        python_backend_dir: ``libtriton_python.so`` and ``triton_python_backend_utils.py``.
        stubs_dir: One ``triton_python_backend_stub`` per Python version (``3.11/``, ...).
    """

    binary: Path
    libs_dir: Path
    python_backend_dir: Path
    stubs_dir: Path

    @classmethod
    def find(cls) -> TritonDistribution:
        """Locate the wheel in the running interpreter's environment without importing it.

        Raises:
            TritonServerError: ``nvidia-pytriton`` is not installed or lacks a file.
        """
        found = importlib.util.find_spec("pytriton")
        if found is None or found.origin is None:
            raise TritonServerError(
                "nvidia-pytriton is not installed; it provides the tritonserver binary "
                "(pip install nvidia-pytriton)"
            )
        package = Path(found.origin).parent
        server = package / "tritonserver"
        distribution = cls(
            binary=server / "bin" / "tritonserver",
            libs_dir=package.parent / "nvidia_pytriton.libs",
            python_backend_dir=server / "backends" / "python",
            stubs_dir=server / "python_backend_stubs",
        )
        required = [distribution.binary, distribution.libs_dir, distribution.stubs_dir] + [
            distribution.python_backend_dir / name for name in _BACKEND_FILES
        ]
        missing = [str(p) for p in required if not p.exists()]
        if missing:
            raise TritonServerError(f"nvidia-pytriton at {package} lacks {missing}")
        return distribution


def interpreter_lib_dir() -> Path:
    """Directory of the base interpreter's ``libpython`` (sysconfig ``LIBDIR``; a venv's base)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if not libdir:
        raise TritonServerError(
            "sysconfig has no LIBDIR for this interpreter; cannot find libpython"
        )
    return Path(libdir)


def _copy_if_changed(source: Path, target: Path) -> None:
    if target.exists():
        src, dst = source.stat(), target.stat()
        if src.st_size == dst.st_size and int(src.st_mtime) == int(dst.st_mtime):
            return
        target.unlink()
    shutil.copy2(source, target)


def assemble_backend_dir(
    work_dir: Path,
    *,
    distribution: TritonDistribution | None = None,
    python_version: str | None = None,
) -> Path:
    """Lay out ``<work_dir>/backends/python/`` with the Python backend and the stub.

    Idempotent: files already there and unchanged are kept.

    Args:
        work_dir: Directory to build under; created if missing.
        distribution: The wheel's files; found in this environment if not given.
        python_version: ``"3.11"`` style version of the stub; defaults to the running
            interpreter's, which is the one whose site-packages the models use.

    Returns:
        The directory to pass as ``--backend-directory`` (``<work_dir>/backends``).
    """
    distribution = distribution or TritonDistribution.find()
    version = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = distribution.stubs_dir / version / _STUB
    if not stub.is_file():
        available = sorted(p.name for p in distribution.stubs_dir.iterdir())
        raise TritonServerError(f"no Python backend stub for Python {version} (have {available})")
    backends = work_dir / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name in _BACKEND_FILES:
        _copy_if_changed(distribution.python_backend_dir / name, python_dir / name)
    _copy_if_changed(stub, python_dir / _STUB)
    return backends


class TritonServer(ChildProcess):
    """A ``tritonserver`` subprocess serving one model repository on the CPU.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with TritonServer(model_repository=repo, work_dir=tmp) as server:
            backend = TritonBackend(url=server.grpc_url)
    """

    not_started_error = TritonServerError
    what = "server"


    def __init__(
        self,
        *,
        model_repository: Path,
        work_dir: Path,
        host: str = "127.0.0.1",
        http_port: int | None = None,
        grpc_port: int | None = None,
        metrics_port: int | None = None,
        startup_timeout_s: float = 60.0,
        exit_timeout_s: int = 5,
        backend_config: Mapping[str, Mapping[str, str]] | None = None,
        extra_args: Sequence[str] = (),
        distribution: TritonDistribution | None = None,
        python_executable: Path | None = None,
    ) -> None:
        """Describe the server; nothing starts until :meth:`start`.

        Args:
            model_repository: The repository to serve (every model in it is loaded at start).
            work_dir: Holds the assembled backend directory and ``tritonserver.log``.
            host: Address all three endpoints bind to.
            http_port: HTTP port; a free one is chosen at start if not given.
            grpc_port: gRPC port; a free one is chosen at start if not given.
            metrics_port: Prometheus metrics port; a free one is chosen at start if not given.
            startup_timeout_s: How long :meth:`start` waits for the server to become ready.
            exit_timeout_s: How long the server, once told to stop, waits for in-flight
                requests and open HTTP connections (``--exit-timeout-secs``; Triton's default
                of 30 s makes every stop with a client still connected take 30 s).
            backend_config: ``--backend-config`` settings per backend, e.g.
                ``{"python": {"shm-default-byte-size": "16777216"}}``.
            extra_args: Further ``tritonserver`` arguments, appended last.
            distribution: The wheel's files; found in this environment if not given.
            python_executable: The interpreter of the virtualenv the Python backend runs in
                (its directory goes first on ``PATH``); defaults to ``sys.executable``. Not
                resolved: a venv's ``python`` is a symlink to the base interpreter.
        """
        if startup_timeout_s <= 0:
            raise ValueError(f"startup_timeout_s={startup_timeout_s}, expected > 0")
        if exit_timeout_s < 0:
            raise ValueError(f"exit_timeout_s={exit_timeout_s}, expected >= 0")
        self.model_repository = Path(model_repository)
        self.work_dir = Path(work_dir)
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.exit_timeout_s = exit_timeout_s
        self.backend_config = {k: dict(v) for k, v in (backend_config or {}).items()}
        self.extra_args = tuple(extra_args)
        self._requested_ports = (http_port, grpc_port, metrics_port)
        self._ports: tuple[int, int, int] | None = None
        self._distribution = distribution
        self.python_executable = Path(python_executable or sys.executable)
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: Path = self.work_dir / "tritonserver.log"
        self.startup_s: float | None = None

    # -- endpoints -----------------------------------------------------------------------------

    def _port(self, index: int) -> int:
        if self._ports is None:
            raise TritonServerError("the server has not been started")
        return self._ports[index]

    @property
    def http_port(self) -> int:
        """HTTP port (known once started)."""
        return self._port(0)

    @property
    def grpc_port(self) -> int:
        """gRPC port (known once started)."""
        return self._port(1)

    @property
    def metrics_port(self) -> int:
        """Prometheus metrics port (known once started)."""
        return self._port(2)

    @property
    def http_url(self) -> str:
        """``host:port`` of the HTTP endpoint, as ``tritonclient.http`` takes it."""
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint, as ``tritonclient.grpc`` takes it."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics page."""
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def log_file(self) -> Path:
        """The server's combined stdout and stderr."""
        return self._log_file

    # -- lifecycle -----------------------------------------------------------------------------

    def command(self) -> list[str]:
        """The ``tritonserver`` command line (ports must be known, i.e. after :meth:`start`)."""
        distribution = self._distribution or TritonDistribution.find()
        backends = self.work_dir / "backends"
        args = [
            str(distribution.binary),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={backends}",
            "--disable-auto-complete-config",  # what --strict-model-config=true was
            "--exit-on-error=true",
            "--strict-readiness=true",
            "--log-verbose=0",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
        ]
        for backend, settings in self.backend_config.items():
            args += [f"--backend-config={backend},{key}={value}" for key, value in settings.items()]
        return args + list(self.extra_args)

    def environment(self) -> dict[str, str]:
        """The server's environment: ours plus the library path the wheel needs."""
        distribution = self._distribution or TritonDistribution.find()
        env = dict(os.environ)
        library_path = [str(interpreter_lib_dir()), str(distribution.libs_dir)]
        if env.get("LD_LIBRARY_PATH"):
            library_path.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
        env["PATH"] = os.pathsep.join(
            p for p in (str(self.python_executable.parent), env.get("PATH", "")) if p
        )
        return env

    def prepare(self) -> tuple[list[str], dict[str, str]]:
        """What :meth:`start` does before it starts the process: check the repository, find the
        wheel, assemble the backend directory, fix the ports.

        ``openlfr.inference.triton_exec`` (a container's entry point) execs the result itself.

        Returns:
            The command line and the environment to run it with.

        Raises:
            TritonServerError: The repository is not a directory, or the wheel lacks a file.
        """
        if not self.model_repository.is_dir():
            raise TritonServerError(f"model repository {self.model_repository} is not a directory")
        self._distribution = self._distribution or TritonDistribution.find()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        assemble_backend_dir(self.work_dir, distribution=self._distribution)
        ports = tuple(p if p is not None else free_port(self.host) for p in self._requested_ports)
        self._ports = (ports[0], ports[1], ports[2])
        return self.command(), self.environment()

    def start(self) -> TritonServer:
        """Start the server and wait until it and all its models are ready.

        Raises:
            TritonServerError: The server exited, or was not ready within ``startup_timeout_s``;
                the message ends with the tail of its log.
        """
        if self.is_alive():
            raise TritonServerError(f"the server is already running (pid {self.pid})")
        command, environment = self.prepare()

        started = time.monotonic()
        with self._log_file.open("wb") as log:
            # The child keeps its own copy of the descriptor; ours can close at once.
            self._process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=environment,
                cwd=self.work_dir,
                start_new_session=True,  # a Ctrl-C meant for the tests does not hit the server
            )
        logger.info(
            'starting tritonserver pid=%d repository="%s" '
            "http_port=%d grpc_port=%d metrics_port=%d",
            self._process.pid,
            self.model_repository,
            *self._ports,
        )
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - started
        logger.info(
            'tritonserver ready pid=%d startup_seconds="%.2f"', self._process.pid, self.startup_s
        )
        return self

    def _wait_ready(self, started: float) -> None:
        url = f"http://{self.host}:{self.http_port}/v2/health/ready"
        deadline = started + self.startup_timeout_s
        last_error = "no answer yet"
        while True:
            code = self._process.poll() if self._process is not None else None
            if code is not None:
                raise TritonServerError(
                    f"tritonserver exited with code {code} during start-up\n{self.failure_report()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=1.0) as response:
                    if response.status == 200:
                        return
                    last_error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:  # 400 while models are still loading
                last_error = f"HTTP {exc.code}"
            except OSError as exc:  # not listening yet
                last_error = str(exc)
            if time.monotonic() >= deadline:
                raise TritonServerError(
                    f"tritonserver not ready after {self.startup_timeout_s:.0f}s ({last_error})\n"
                    + self.failure_report()
                )
            time.sleep(0.1)

    def stop(self, *, timeout_s: float | None = None) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it has not exited after ``timeout_s``.

        ``timeout_s`` defaults to ``exit_timeout_s`` plus 5 s for unloading the models.
        """
        process = self._process
        if process is None:
            return
        if timeout_s is None:
            timeout_s = self.exit_timeout_s + 5.0
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "tritonserver pid=%d ignored SIGTERM for %.0fs; killing it",
                    process.pid,
                    timeout_s,
                )
                process.kill()
                process.wait(timeout=timeout_s)
        # The Python backend stubs are the server's children, in its session; a killed server
        # leaves them behind, so end any that remain.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        logger.info("tritonserver pid=%d stopped code=%s", process.pid, process.returncode)
        self._process = None

    def failure_report(self, *, errors: int = 10, lines: int = 15) -> str:
        """The log's last error lines (printed before Triton's long status tables) and its tail."""
        if not self._log_file.exists():
            return "(no log)"
        text = self._log_file.read_text(errors="replace").splitlines()
        error_lines = [line for line in text if _ERROR_LINE.match(line)][-errors:]
        tail = [line for line in text if not _TABLE_LINE.match(line)][-lines:]
        return (
            f"errors in {self._log_file}:\n"
            + "\n".join(error_lines or ["(none)"])
            + "\nlog tail (tables left out):\n"
            + "\n".join(tail)
        )

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

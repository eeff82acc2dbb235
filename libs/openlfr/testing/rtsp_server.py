"""An RTSP camera on loopback for tests: GStreamer's RTSP server serving a moving test pattern.

The server is a program for the SYSTEM ``python3`` (Debian's PyGObject and GStreamer; the
virtualenv has neither), installed by ``scripts/test-deps.sh``. It listens on 127.0.0.1 only,
prints ``ready`` once listening, and stops on SIGTERM or SIGINT::

    /usr/bin/python3 libs/openlfr/testing/rtsp_server.py --port 8554 --path /cam --fps 10

Each client gets its own pipeline (``videotestsrc`` -> ``x264enc`` -> ``rtph264pay``, or JPEG
with ``--codec mjpeg``), so a client that connects starts at a key frame. ``--check`` only
verifies that the typelibs and elements are installed.

From tests, in the virtualenv, :class:`RtspServer` runs that program as a subprocess and can
stop and start it again on the same port, as a camera that drops off the network and returns::

    with RtspServer() as camera:
        cap = cv2.VideoCapture(camera.url)

This file must stay importable by the system ``python3`` alone: the server part uses only the
standard library and ``gi``, which it imports inside :func:`serve`.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

logger = logging.getLogger(__name__)

#: The interpreter that has Debian's PyGObject; the virtualenv's has not.
SYSTEM_PYTHON = "/usr/bin/python3"

#: The script that installs what the server needs, relative to the repository root.
DEPS_SCRIPT = "scripts/test-deps.sh"

#: The only address the server binds: nothing outside this host can reach the test camera.
HOST = "127.0.0.1"

Codec = Literal["h264", "mjpeg"]

#: GStreamer elements each codec's pipeline uses (``--check`` looks for these).
ELEMENTS: dict[str, tuple[str, ...]] = {
    "h264": ("videotestsrc", "capsfilter", "videoconvert", "x264enc", "rtph264pay"),
    "mjpeg": ("videotestsrc", "capsfilter", "videoconvert", "jpegenc", "rtpjpegpay"),
}

#: Exit code of the program when typelibs or elements are missing.
EXIT_MISSING = 3
#: Exit code of the program when it cannot listen (the port is taken).
EXIT_LISTEN = 4


class RtspServerError(RuntimeError):
    """The RTSP test server could not be found, started or stopped."""


# --- the server program (system python3) -------------------------------------------------------


def launch_description(*, codec: Codec, fps: int, width: int, height: int) -> str:
    """The ``gst-launch`` description of one client's media; the payloader is ``pay0``."""
    source = (
        f"videotestsrc is-live=true pattern=ball ! video/x-raw,width={width},height={height},framerate={fps}/1 "
        "! videoconvert ! video/x-raw,format=I420"
    )
    if codec == "h264":
        # A key frame every second and SPS/PPS with each: a client that (re)connects decodes
        # within a second. Zero latency: no B-frames and no lookahead buffering.
        encode = (
            f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} bitrate=1000 "
            "! video/x-h264,profile=constrained-baseline ! rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        encode = "jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26"
    return f"( {source} ! {encode} )"


def _missing(codec: Codec) -> list[str]:
    """What of PyGObject, the typelibs and the elements is missing; empty when all is there."""
    try:
        import gi
    except ImportError:
        return ["python3-gi (PyGObject)"]
    missing = []
    for namespace in ("Gst", "GstRtspServer"):
        try:
            gi.require_version(namespace, "1.0")
        except ValueError:
            missing.append(f"typelib {namespace}-1.0")
    if missing:
        return missing
    from gi.repository import Gst

    Gst.init(None)
    return [f"GStreamer element {name}" for name in ELEMENTS[codec] if Gst.ElementFactory.find(name) is None]


def serve(*, port: int, path: str, codec: Codec, fps: int, width: int, height: int) -> int:
    """Serve the test pattern on ``rtsp://127.0.0.1:<port><path>`` until SIGTERM or SIGINT.

    Returns:
        The program's exit code.
    """
    missing = _missing(codec)
    if missing:
        sys.stderr.write(f"rtsp_server: missing {', '.join(missing)}; run {DEPS_SCRIPT}\n")
        return EXIT_MISSING
    from gi.repository import GLib, GstRtspServer

    server = GstRtspServer.RTSPServer()
    server.set_address(HOST)
    server.set_service(str(port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_description(codec=codec, fps=fps, width=width, height=height))
    factory.set_shared(False)  # a pipeline per client, so each starts at a key frame
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        sys.stderr.write(f"rtsp_server: cannot listen on {HOST}:{port}\n")
        return EXIT_LISTEN

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, lambda *_: loop.quit() or GLib.SOURCE_REMOVE)
    sys.stdout.write(f"ready rtsp://{HOST}:{server.get_bound_port()}{path}\n")
    sys.stdout.flush()
    loop.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=8554, help="TCP port on 127.0.0.1 (default 8554)")
    parser.add_argument("--path", default="/cam", help="mount path (default /cam)")
    parser.add_argument("--codec", choices=sorted(ELEMENTS), default="h264")
    parser.add_argument("--fps", type=int, default=10)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--check", action="store_true", help="only check that everything is installed")
    args = parser.parse_args(argv)
    if not args.path.startswith("/"):
        parser.error(f"--path must start with '/', got {args.path!r}")
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if args.fps < 1 or args.width < 16 or args.height < 16:
        parser.error("--fps must be at least 1, --width and --height at least 16")
    if args.check:
        missing = _missing(args.codec)
        if missing:
            sys.stderr.write(f"rtsp_server: missing {', '.join(missing)}; run {DEPS_SCRIPT}\n")
            return EXIT_MISSING
        return 0
    return serve(port=args.port, path=args.path, codec=args.codec, fps=args.fps, width=args.width, height=args.height)


# --- the test helper (virtualenv) --------------------------------------------------------------


class RtspServer:
    """The RTSP test camera as a subprocess that can be stopped and started again on one port.

    Use as a context manager, or call :meth:`start` and :meth:`stop`; between a stop and the
    next start the camera is off the network (connections are refused).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        path: str = "/cam",
        codec: Codec = "h264",
        fps: int = 10,
        width: int = 640,
        height: int = 360,
        python: str = SYSTEM_PYTHON,
        startup_timeout_s: float = 20.0,
        stop_timeout_s: float = 5.0,
    ) -> None:
        """Describe the camera; nothing starts until :meth:`start`.

        Args:
            port: the TCP port on 127.0.0.1; a free one is chosen at the first start if not
                given, and kept for later starts.
            path: the mount path of the stream.
            codec: ``h264`` (as real cameras send) or ``mjpeg``.
            fps: frames per second of the pattern.
            width: frame width in pixels.
            height: frame height in pixels.
            python: the interpreter with PyGObject.
            startup_timeout_s: how long :meth:`start` waits for ``ready`` (the first start
                of GStreamer on a machine also builds its plugin registry).
            stop_timeout_s: how long :meth:`stop` waits after SIGTERM before it kills.
        """
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        if codec not in ELEMENTS:
            raise ValueError(f"codec must be one of {sorted(ELEMENTS)}, got {codec!r}")
        if fps < 1 or width < 16 or height < 16:
            raise ValueError(f"fps must be >= 1 and width, height >= 16, got {fps}, {width}, {height}")
        self._port = port
        self.path = path
        self.codec = codec
        self.fps = fps
        self.width = width
        self.height = height
        self.python = python
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=50)
        self._ready = threading.Event()
        #: Wall-clock times (``time.time()``) of the last :meth:`start` (when ``ready``) and
        #: :meth:`stop` (when the process had exited), for tests that measure an outage.
        self.ready_at: float | None = None
        self.stopped_at: float | None = None

    @property
    def port(self) -> int:
        """The TCP port (known once started, or given)."""
        if self._port is None:
            raise RtspServerError("the RTSP server has not been started")
        return self._port

    @property
    def url(self) -> str:
        """``rtsp://127.0.0.1:<port><path>``."""
        return f"rtsp://{HOST}:{self.port}{self.path}"

    def _command(self, *extra: str) -> list[str]:
        # -I: the virtualenv's or the caller's PYTHON* variables must not reach Debian's python.
        return [
            self.python,
            "-I",
            str(Path(__file__).resolve()),
            "--codec",
            self.codec,
            *extra,
        ]

    def check(self) -> None:
        """Raise if the interpreter, PyGObject, the typelibs or an element is missing.

        Raises:
            RtspServerError: what is missing, and that ``scripts/test-deps.sh`` installs it.
        """
        if not os.access(self.python, os.X_OK):
            raise RtspServerError(f"{self.python} not found; the RTSP test server needs it: run {DEPS_SCRIPT}")
        result = subprocess.run(
            self._command("--check"), capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL
        )
        detail = (result.stdout + result.stderr).strip()[-2000:]
        if result.returncode == EXIT_MISSING:
            raise RtspServerError(detail)  # names what is missing and the script
        if result.returncode != 0:
            raise RtspServerError(
                f"the RTSP test server's check exited with code {result.returncode}; run {DEPS_SCRIPT}\n{detail}"
            )

    def start(self) -> RtspServer:
        """Start the server and wait until it listens.

        Raises:
            RtspServerError: it is already running, it exited (missing packages, port taken)
                or it did not print ``ready`` within ``startup_timeout_s``.
        """
        if self.is_alive():
            raise RtspServerError(f"the RTSP server is already running (pid {self.pid})")
        if self._port is None:
            # Imported here: the system python3 that runs this file as the server has no openlfr.
            from openlfr.subprocesses import free_port

            self._port = free_port(HOST)
        command = self._command(
            "--port", str(self._port), "--path", self.path, "--fps", str(self.fps),
            "--width", str(self.width), "--height", str(self.height),
        )  # fmt: skip
        self._output.clear()
        self._ready.clear()
        try:
            process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                text=True,
                bufsize=1,
                start_new_session=True,  # a Ctrl-C meant for the tests does not hit the server
            )
        except FileNotFoundError as exc:
            raise RtspServerError(f"{self.python} not found; run {DEPS_SCRIPT}") from exc
        self._process = process
        atexit.register(self.stop)
        threading.Thread(target=self._drain, args=(process,), name="rtsp-server-output", daemon=True).start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self._ready.wait(0.05):
            code = process.poll()
            if code is not None or time.monotonic() > deadline:
                self.stop()
                hint = f"; run {DEPS_SCRIPT}" if code == EXIT_MISSING else ""
                if code is not None:
                    reason = f"exited with code {code}"
                else:
                    reason = f"was not ready within {self.startup_timeout_s:.0f}s"
                raise RtspServerError(f"the RTSP server {reason}{hint}\n{self.output_tail()}")
        self.ready_at = time.time()
        logger.info('rtsp server ready pid=%d url="%s"', process.pid, self.url)
        return self

    def _drain(self, process: subprocess.Popen[str]) -> None:
        """Keep the server's output (so its pipe never fills) and notice ``ready``."""
        if process.stdout is None:
            return
        for raw in process.stdout:
            line = raw.rstrip("\n")
            self._output.append(line)
            if line.startswith("ready"):
                self._ready.set()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``stop_timeout_s``); clients are cut off.

        Safe to call twice or before start; the port is kept for the next :meth:`start`.
        """
        process = self._process
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning(
                    "rtsp server pid=%d ignored SIGTERM for %.0fs; killing it", process.pid, self.stop_timeout_s
                )
                process.kill()
                process.wait()
        self.stopped_at = time.time()
        logger.info("rtsp server pid=%d stopped code=%s", process.pid, process.returncode)
        self._process = None

    @property
    def pid(self) -> int | None:
        """Process id of the server while it runs."""
        return self._process.pid if self._process is not None else None

    def is_alive(self) -> bool:
        """Whether the server process is running."""
        return self._process is not None and self._process.poll() is None

    def output_tail(self) -> str:
        """The server's last lines of output (stdout and stderr)."""
        return "\n".join(self._output)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())

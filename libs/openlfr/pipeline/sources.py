"""Frame sources: what ingest reads frames from, each frame with its capture time.

A video file (:class:`VideoFileSource`), a live stream or webcam (:class:`StreamSource`, which
reconnects with capped exponential backoff, for ever or up to ``max_reconnects`` attempts without
a frame) or a folder of images (:class:`ImageFolderSource`); :func:`open_source` picks one for a
target, :func:`parse_camera_specs` and :func:`camera_sources` read the cameras setting. The
ingest loop that reads them is :mod:`openlfr.pipeline.ingest`.
"""

from __future__ import annotations

import abc
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import cv2
import numpy as np
from pydantic import TypeAdapter, ValidationError

from openlfr.messages.models import Id
from openlfr.vision.exceptions import ImageError
from openlfr.vision.images import load_image
from openlfr.vision.video import VIDEO_SUFFIXES

logger = logging.getLogger(__name__)

#: Files of an image folder that are taken as frames (by suffix, case-insensitive).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

#: URL schemes opened as live streams through OpenCV's FFmpeg backend.
STREAM_SCHEMES = frozenset({"rtsp", "rtsps", "rtmp", "rtmps", "http", "https", "udp", "tcp", "srt"})

#: Frame rate assumed for a video file whose container states none (or nonsense).
FALLBACK_FILE_FPS = 25.0

#: What a source reports besides frames: a reopen attempt, or an image file that did not decode.
SourceEvent = Literal["reconnect", "unreadable"]

_CAMERA_ID = TypeAdapter(Id)


class SourceFrame(NamedTuple):
    """One frame of a source: HxWx3 RGB uint8 pixels and the capture time (Unix seconds)."""

    image: np.ndarray
    capture_ts: float


def keep_all(capture_ts: float) -> bool:  # noqa: ARG001 - the signature of a keep predicate
    """A ``keep`` predicate that keeps every frame."""
    return True


def _ignore_event(event: SourceEvent) -> None:
    """An ``on_event`` callback that does nothing."""


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and descriptions."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


class FrameSource(abc.ABC):
    """Where a camera's frames come from.

    Attributes:
        live: frames come at their own pace and cannot wait for a slow consumer (a camera, or
            a file or folder paced in real time). :class:`CameraIngest` drops the oldest
            queued frame for live sources and blocks the reader for the others.
        description: what the source reads, for logs (passwords redacted).
        stop_timeout_s: the longest a source may take to notice ``stop`` (a blocking open or
            read), which bounds how long :meth:`CameraIngest.run` waits for its reader.
    """

    live: bool
    description: str
    stop_timeout_s: float = 1.0

    @abc.abstractmethod
    def frames(
        self,
        stop: threading.Event,
        *,
        keep: Callable[[float], bool] = keep_all,
        on_event: Callable[[SourceEvent], None] = _ignore_event,
    ) -> Iterator[SourceFrame]:
        """Yield frames until the source ends or ``stop`` is set.

        Args:
            stop: ends the iteration promptly (waits and backoffs wake on it).
            keep: asked with each frame's capture time as soon as the frame is read and before
                it is converted to RGB (or, for a folder, before the file is decoded); frames
                it refuses are skipped cheaply. It is how the ingest loop samples.
            on_event: told of each reconnect attempt and each unreadable image file.

        Raises:
            ImageError: a file or folder source cannot be opened at all.
        """


class VideoFileSource(FrameSource):
    """Frames of a video file, read with OpenCV.

    Capture time is ``start_ts`` (default: the wall clock when iteration starts) plus the
    frame's time in the file (index / fps), so it grows by exactly one frame interval per frame;
    with ``loop`` it keeps growing across repeats.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        loop: bool = False,
        realtime: bool,
        start_ts: float | None = None,
    ) -> None:
        """Set up the source; the file is opened when iteration starts.

        Args:
            path: the video file.
            loop: start again from the first frame at the end, for ever.
            realtime: pace frames at the file's frame rate, as a live camera delivers them
                (the source is then ``live``); ``False`` reads as fast as OpenCV decodes.
            start_ts: capture time of the first frame; defaults to the wall clock at start.
        """
        self.path = Path(path)
        self.loop = loop
        self.realtime = realtime
        self.live = realtime
        self.start_ts = start_ts
        self.description = f"video file {self.path}"
        #: Frame rate used for timing, known once iteration has started.
        self.fps: float | None = None

    def _open(self) -> cv2.VideoCapture:
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise ImageError(f"{self.path}: cannot open as a video")
        return cap

    def frames(
        self,
        stop: threading.Event,
        *,
        keep: Callable[[float], bool] = keep_all,
        on_event: Callable[[SourceEvent], None] = _ignore_event,
    ) -> Iterator[SourceFrame]:
        cap = self._open()
        try:
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            if not math.isfinite(fps) or not 0.0 < fps <= 1000.0:
                logger.warning(
                    'video="%s" fps="%s" states no usable frame rate; using %s', self.path, fps, FALLBACK_FILE_FPS
                )
                fps = FALLBACK_FILE_FPS
            self.fps = fps
            start_ts = time.time() if self.start_ts is None else self.start_ts
            start_mono = time.monotonic()
            done = 0  # frames of earlier loops
            index = 0
            while not stop.is_set():
                t = (done + index) / fps
                if self.realtime:
                    delay = start_mono + t - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        break
                if not cap.grab():
                    if self.loop and index > 0:
                        # Reopening is more reliable than seeking back across codecs.
                        cap.release()
                        cap = self._open()
                        done += index
                        index = 0
                        continue
                    break
                index += 1
                capture_ts = start_ts + t
                if not keep(capture_ts):
                    continue
                ok, bgr = cap.retrieve()
                if not ok or bgr is None:
                    frame_no = done + index - 1
                    logger.warning('video="%s" frame="%d" could not be retrieved; ending', self.path, frame_no)
                    break
                yield SourceFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), capture_ts)
        finally:
            cap.release()


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff between reconnect attempts.

    The wait starts at ``initial_s``, is multiplied by ``factor`` after each failed attempt up
    to ``max_s``, and returns to ``initial_s`` once frames flow again. ``jitter`` spreads each
    wait by up to that fraction either way, so cameras behind one recorder do not retry in step.
    """

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if not self.initial_s > 0:
            raise ValueError(f"Backoff.initial_s must be positive, got {self.initial_s}")
        if self.max_s < self.initial_s:
            raise ValueError(f"Backoff.max_s ({self.max_s}) must be at least initial_s ({self.initial_s})")
        if self.factor < 1:
            raise ValueError(f"Backoff.factor must be at least 1, got {self.factor}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"Backoff.jitter must be in [0, 1), got {self.jitter}")

    def next_delay(self, delay: float) -> float:
        """The delay after ``delay``."""
        return min(delay * self.factor, self.max_s)

    def spread(self, delay: float) -> float:
        """``delay`` with jitter applied."""
        if not self.jitter:
            return delay
        return delay * (1.0 + random.uniform(-self.jitter, self.jitter))  # noqa: S311 - not crypto


class StreamSource(FrameSource):
    """A live stream (RTSP, HTTP/MJPEG, RTMP, ...) or a webcam, read with OpenCV.

    It never gives up: when the stream fails to open, stalls past ``read_timeout_s`` or ends, it
    is reopened after a backoff wait, until ``stop`` is set. Capture time is the wall clock when
    a frame is read.
    """

    live = True

    def __init__(
        self,
        url: str | int,
        *,
        backoff: Backoff = Backoff(),  # noqa: B008 - frozen value
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        max_reconnects: int | None = None,
    ) -> None:
        """Set up the source; nothing is opened until iteration starts.

        Args:
            url: a stream URL, or a webcam index (an int, or a string of digits).
            backoff: waits between reconnect attempts.
            max_reconnects: reopen attempts in a row without a frame before the source gives up
                (``SourceUnreachable``); None: for ever (a service's camera).
            open_timeout_s: how long one attempt to open a network stream may take; ``stop``
                cannot interrupt an attempt, so this bounds how long stopping can take.
            read_timeout_s: a network stream that delivers no frame for this long counts as failed.
        """
        if isinstance(url, str) and url.strip().isdigit():
            url = int(url.strip())
        if isinstance(url, int) and url < 0:
            raise ValueError(f"webcam index must be non-negative, got {url}")
        if not open_timeout_s > 0 or not read_timeout_s > 0:
            raise ValueError("open_timeout_s and read_timeout_s must be positive")
        self.url = url
        self.backoff = backoff
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.stop_timeout_s = max(open_timeout_s, read_timeout_s)
        if max_reconnects is not None and max_reconnects < 0:
            raise ValueError(f"max_reconnects must be >= 0 or None, got {max_reconnects}")
        self.description = f"webcam {url}" if isinstance(url, int) else f"stream {redact_url(url)}"
        self.max_reconnects = max_reconnects
        #: Open attempts made after the first one, over this source's life.
        self.reconnects = 0

    def _open(self) -> cv2.VideoCapture | None:
        try:
            if isinstance(self.url, int):
                cap = cv2.VideoCapture(self.url)
            else:
                params = [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    int(self.open_timeout_s * 1000),
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    int(self.read_timeout_s * 1000),
                ]
                cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG, params)
        except cv2.error as exc:
            logger.warning('source="%s" open failed: %s', self.description, exc)
            return None
        if not cap.isOpened():
            cap.release()
            return None
        return cap

    def frames(
        self,
        stop: threading.Event,
        *,
        keep: Callable[[float], bool] = keep_all,
        on_event: Callable[[SourceEvent], None] = _ignore_event,
    ) -> Iterator[SourceFrame]:
        delay = self.backoff.initial_s
        first = True
        failed_in_a_row = 0  # reopen attempts since the last frame
        while not stop.is_set():
            if not first:
                self.reconnects += 1
                on_event("reconnect")
            first = False
            failed_in_a_row += 1
            cap = self._open()
            flowing = False
            if cap is not None:
                logger.info('source="%s" opened', self.description)
                try:
                    while not stop.is_set():
                        if not cap.grab():
                            break
                        capture_ts = time.time()
                        if not flowing:
                            flowing = True
                            failed_in_a_row = 0
                            delay = self.backoff.initial_s
                        if not keep(capture_ts):
                            continue
                        ok, bgr = cap.retrieve()
                        if not ok or bgr is None:
                            break
                        yield SourceFrame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), capture_ts)
                finally:
                    cap.release()
            if stop.is_set():
                break
            if self.max_reconnects is not None and failed_in_a_row > self.max_reconnects:
                # Given up now, not after announcing (and waiting for) one more reconnect.
                raise SourceUnreachable(
                    f"{self.description}: no frame after {failed_in_a_row - 1} reconnect attempt(s) "
                    f"(--max-reconnects {self.max_reconnects}); is it reachable?"
                )
            wait = self.backoff.spread(delay)
            logger.warning(
                'source="%s" %s; reconnect="%d" in_s="%.2f"',
                self.description,
                "ended or failed" if cap is not None else "could not be opened",
                self.reconnects + 1,
                wait,
            )
            if stop.wait(wait):
                break
            delay = self.backoff.next_delay(delay)


class ImageFolderSource(FrameSource):
    """The image files of a folder, in sorted name order, as frames ``1 / fps`` apart.

    Files that do not decode are skipped, counted in ``unreadable`` and reported as
    ``"unreadable"`` events. Capture time is ``start_ts`` (default: the wall clock when
    iteration starts) plus ``index / fps``.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        fps: float,
        realtime: bool = False,
        start_ts: float | None = None,
    ) -> None:
        """Set up the source; the folder is listed when iteration starts.

        Args:
            directory: the folder (not searched recursively).
            fps: frames per second the files stand for.
            realtime: pace files at ``fps`` (the source is then ``live``).
            start_ts: capture time of the first file; defaults to the wall clock at start.
        """
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be positive, got {fps}")
        self.directory = Path(directory)
        self.fps = fps
        self.realtime = realtime
        self.live = realtime
        self.start_ts = start_ts
        self.description = f"image folder {self.directory}"
        #: Files that could not be decoded, over this source's life.
        self.unreadable = 0

    def frames(
        self,
        stop: threading.Event,
        *,
        keep: Callable[[float], bool] = keep_all,
        on_event: Callable[[SourceEvent], None] = _ignore_event,
    ) -> Iterator[SourceFrame]:
        if not self.directory.is_dir():
            raise ImageError(f"{self.directory}: not a folder")
        files = sorted(p for p in self.directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        start_ts = time.time() if self.start_ts is None else self.start_ts
        start_mono = time.monotonic()
        for index, path in enumerate(files):
            t = index / self.fps
            if self.realtime:
                delay = start_mono + t - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    return
            if stop.is_set():
                return
            capture_ts = start_ts + t
            if not keep(capture_ts):
                continue
            try:
                image = load_image(path)
            except ImageError as exc:
                self.unreadable += 1
                on_event("unreadable")
                logger.warning('source="%s" skipped unreadable image: %s', self.description, exc)
                continue
            yield SourceFrame(image, capture_ts)


class CameraTarget(NamedTuple):
    """One entry of a camera spec string: the camera id and what to read."""

    camera_id: str
    target: str


def check_camera_id(camera_id: str) -> str:
    """Return ``camera_id`` if it is a valid message id; raise ``ValueError`` saying why if not."""
    try:
        return _CAMERA_ID.validate_python(camera_id)
    except ValidationError as exc:
        raise ValueError(f"camera id {camera_id!r}: {exc.errors()[0]['msg']}") from exc


def parse_camera_specs(text: str) -> list[CameraTarget]:
    """Parse ``"cam-1=rtsp://host/stream;cam-2=/path/video.mp4"`` into camera ids and targets.

    Entries are separated by ``;`` or newlines; each is ``camera_id=target``, split at the
    first ``=`` (a URL's query may hold more). Blank entries are ignored. A target cannot hold
    a ``;``. Fit for a pydantic validator: every error is a ``ValueError`` naming the entry.

    Raises:
        ValueError: no entry, an entry without ``=``, an empty target, an invalid or repeated id.
    """
    out: list[CameraTarget] = []
    seen: set[str] = set()
    for raw in text.replace("\n", ";").split(";"):
        entry = raw.strip()
        if not entry:
            continue
        camera_id, sep, target = entry.partition("=")
        camera_id, target = camera_id.strip(), target.strip()
        if not sep or not camera_id:
            raise ValueError(f"camera entry {redact_url(entry)!r}: expected camera_id=target")
        check_camera_id(camera_id)
        if not target:
            raise ValueError(f"camera {camera_id}: empty target")
        if camera_id in seen:
            raise ValueError(f"camera {camera_id}: given twice")
        seen.add(camera_id)
        out.append(CameraTarget(camera_id, target))
    if not out:
        raise ValueError("no camera given (expected camera_id=target;...)")
    return out


class SourceUnreachable(RuntimeError):
    """A live source gave no frame after its allowed reconnect attempts."""


def open_source(
    target: str,
    *,
    realtime_files: bool = True,
    loop_files: bool = False,
    folder_fps: float = 1.0,
    backoff: Backoff = Backoff(),  # noqa: B008 - frozen value
    max_reconnects: int | None = None,
) -> FrameSource:
    """The source for a target: a webcam index, a stream URL, a video file or an image folder.

    Nothing is opened here; paths must exist.

    Args:
        target: digits (webcam), a URL with a stream scheme, or a path.
        realtime_files: pace video files and image folders as live cameras.
        loop_files: repeat video files for ever.
        folder_fps: frames per second an image folder's files stand for.
        backoff: reconnect waits of stream sources.
        max_reconnects: stream sources give up after so many reconnect attempts without a
            frame (``SourceUnreachable``); None: never.

    Raises:
        ValueError: an unknown scheme, a missing path, or a file that is not a video.
    """
    target = target.strip()
    if target.isdigit():
        return StreamSource(int(target), backoff=backoff, max_reconnects=max_reconnects)
    scheme, sep, _ = target.partition("://")
    if sep:
        if scheme.lower() not in STREAM_SCHEMES:
            raise ValueError(f"{redact_url(target)}: unsupported scheme {scheme!r} (one of {sorted(STREAM_SCHEMES)})")
        return StreamSource(target, backoff=backoff, max_reconnects=max_reconnects)
    path = Path(target).expanduser()
    if path.is_dir():
        return ImageFolderSource(path, fps=folder_fps, realtime=realtime_files)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder")
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"{path}: not a video file (suffixes {sorted(VIDEO_SUFFIXES)}) or an image folder")
    return VideoFileSource(path, loop=loop_files, realtime=realtime_files)


def camera_sources(
    text: str,
    *,
    realtime_files: bool = True,
    loop_files: bool = False,
    folder_fps: float = 1.0,
    backoff: Backoff = Backoff(),  # noqa: B008 - frozen value
) -> list[tuple[str, FrameSource]]:
    """Parse a camera spec string (see :func:`parse_camera_specs`) into ``(camera_id, source)``.

    Raises:
        ValueError: a bad entry or target, naming the camera.
    """
    out = []
    for camera_id, target in parse_camera_specs(text):
        try:
            source = open_source(
                target, realtime_files=realtime_files, loop_files=loop_files, folder_fps=folder_fps, backoff=backoff
            )
        except ValueError as exc:
            raise ValueError(f"camera {camera_id}: {exc}") from exc
        out.append((camera_id, source))
    return out

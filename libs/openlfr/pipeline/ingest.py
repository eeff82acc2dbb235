"""The bounded, freshness-first ingest loop over frame sources (:mod:`openlfr.pipeline.sources`:
a video file, a live stream or webcam, a folder of images; importable from here too).

:class:`CameraIngest` runs one camera: a reader thread pulls frames from the source and keeps
about ``sample_fps`` of them; kept frames wait in a queue of ``queue_size`` slots; the sender
(the thread that calls :meth:`CameraIngest.run`) JPEG-encodes each one into a
:class:`~openlfr.messages.models.Frame` and hands it to ``publish``. Publishing to Kafka is the
caller's business: this module does no I/O but the source's.

Freshness: for a live source (a stream, or a file or folder paced in real time) the queue
drops its OLDEST frame when a new one arrives and it is full, and counts it; a backlog of stale
video is worse than a gap. For a file read as fast as possible (``drain=True``, the default for
sources that are not live) nothing is dropped: the reader waits for the sender, so every
sampled frame is published, as batch and embedded runs need.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from openlfr.messages.models import Frame
from openlfr.messages.topics import FRAMES
from openlfr.pipeline.ingest_metrics import DropReason, IngestMetrics
from openlfr.pipeline.sources import (  # noqa: F401 - the sources, importable from here as before
    IMAGE_SUFFIXES,
    STREAM_SCHEMES,
    FALLBACK_FILE_FPS,
    SourceEvent,
    SourceFrame,
    keep_all,
    redact_url,
    FrameSource,
    VideoFileSource,
    Backoff,
    StreamSource,
    ImageFolderSource,
    CameraTarget,
    check_camera_id,
    parse_camera_specs,
    SourceUnreachable,
    open_source,
    camera_sources,
    _ignore_event,
    _CAMERA_ID,
)
from openlfr.pipeline.stage import Outgoing
from openlfr.vision.exceptions import ImageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IngestCounters:
    """What one camera's ingest has done so far.

    Attributes:
        read: frames read from the source (before sampling).
        sampled: frames kept by sampling and queued.
        published: frames handed to ``publish``.
        dropped: sampled frames not published, by reason (``queue_full``, ``stopped``).
        reconnects: reopen attempts of a stream source.
        unreadable: image files of a folder source that did not decode.
    """

    read: int = 0
    sampled: int = 0
    published: int = 0
    dropped: Mapping[str, int] = field(default_factory=dict)
    reconnects: int = 0
    unreadable: int = 0


class _Sampler:
    """Keeps about ``fps`` frames a second, by capture time.

    For a constant-rate source this keeps every k-th frame (k = source fps / ``fps``, fractional
    ratios spread evenly); unlike a frame count it also holds for streams whose rate varies.
    After a gap (a reconnect) it restarts from the next frame instead of catching up.
    """

    def __init__(self, fps: float) -> None:
        self.period = 1.0 / fps
        self.slack = self.period * 1e-3  # float rounding of start + i / fps
        self.next_ts: float | None = None

    def __call__(self, capture_ts: float) -> bool:
        if self.next_ts is not None and capture_ts + self.slack < self.next_ts:
            return False
        if self.next_ts is None or capture_ts - self.next_ts > self.period:
            self.next_ts = capture_ts
        self.next_ts += self.period
        return True


@dataclass(frozen=True, slots=True)
class _Queued:
    seq: int
    image: np.ndarray
    capture_ts: float


class _End:
    """The reader has finished and the queue is empty."""


_END = _End()


class _FrameQueue:
    """A bounded queue that either drops its oldest item or makes the producer wait."""

    def __init__(self, size: int) -> None:
        self._items: deque[_Queued] = deque()
        self._size = size
        self._cond = threading.Condition()
        self._closed = False

    def put_latest(self, item: _Queued) -> _Queued | None:
        """Queue ``item``; when full, drop and return the oldest item."""
        with self._cond:
            dropped = self._items.popleft() if len(self._items) >= self._size else None
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def put_wait(self, item: _Queued, stop: threading.Event) -> bool:
        """Queue ``item`` once there is room; ``False`` (not queued) if ``stop`` is set first."""
        with self._cond:
            while len(self._items) >= self._size:
                if stop.is_set():
                    return False
                # A timeout, since an Event cannot notify this condition.
                self._cond.wait(0.05)
            self._items.append(item)
            self._cond.notify_all()
            return True

    def get(self, timeout: float) -> _Queued | _End | None:
        """The oldest item, ``_END`` once closed and empty, or ``None`` after ``timeout``."""
        with self._cond:
            if not self._items and not self._closed:
                self._cond.wait(timeout)
            if self._items:
                item = self._items.popleft()
                self._cond.notify_all()
                return item
            return _END if self._closed else None

    def close(self) -> None:
        """No more items will come."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def clear(self) -> int:
        """Remove every item; return how many there were."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return n


class CameraIngest:
    """One camera's ingest: sample, queue (bounded), JPEG-encode, publish.

    :meth:`run` starts a reader thread for the source and publishes from the calling thread,
    so ``publish`` is always called from one thread per camera.
    """

    def __init__(
        self,
        camera_id: str,
        source: FrameSource,
        *,
        publish: Callable[[Outgoing], None],
        sample_fps: float,
        jpeg_quality: int = 85,
        queue_size: int = 2,
        max_frame_px: int | None = 1920,
        drain: bool | None = None,
        metrics: IngestMetrics | None = None,
    ) -> None:
        """Set up the camera; nothing starts until :meth:`run`.

        Args:
            camera_id: the camera's id (a message id: letters, digits and ``._:@/-``).
            source: where frames come from.
            publish: called with each ``Frame`` to send (topic ``FRAMES``, key ``camera_id``).
                Its exceptions stop the camera and propagate from :meth:`run`.
            sample_fps: frames per second to keep; more than the source gives keeps them all.
            jpeg_quality: JPEG quality of published frames, 1..100.
            queue_size: frames waiting between reader and sender.
            max_frame_px: frames whose longer side is larger are scaled down to it (aspect
                kept) before encoding; ``None`` keeps full size.
            drain: ``True`` makes the reader wait for room instead of dropping, so every sampled
                frame is published (for files read as fast as possible); ``False`` drops the
                oldest queued frame when full. Defaults to ``not source.live``. Draining a live
                source is refused: its frames would grow stale while it waits.
            metrics: prometheus metrics to update; the counters of :meth:`counters` are kept
                either way.

        Raises:
            ValueError: an invalid argument, naming it.
        """
        self.camera_id = check_camera_id(camera_id)
        if not (math.isfinite(sample_fps) and sample_fps > 0):
            raise ValueError(f"sample_fps must be positive, got {sample_fps}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be at least 1, got {queue_size}")
        if max_frame_px is not None and max_frame_px < 16:
            raise ValueError(f"max_frame_px must be at least 16 or None, got {max_frame_px}")
        drain = (not source.live) if drain is None else drain
        if drain and source.live:
            raise ValueError(
                f"camera {camera_id}: drain=True on a live source ({source.description}) would let frames go stale"
            )
        self.source = source
        self.publish = publish
        self.sample_fps = sample_fps
        self.jpeg_quality = jpeg_quality
        self.queue_size = queue_size
        self.max_frame_px = max_frame_px
        self.drain = drain
        self.metrics = metrics
        self._lock = threading.Lock()
        self._read = 0
        self._sampled = 0
        self._published = 0
        self._dropped: dict[str, int] = {}
        self._reconnects = 0
        self._unreadable = 0
        self._seq = 0
        # Frame ids must not repeat when ingest restarts: track and alert ids derive from them,
        # and a repeated id would make a new alert look like a replayed one.
        self.run_id = format(time.time_ns() // 1_000_000, "x")

    def counters(self) -> IngestCounters:
        """A snapshot of the counters (safe from any thread)."""
        with self._lock:
            return IngestCounters(
                read=self._read,
                sampled=self._sampled,
                published=self._published,
                dropped=dict(self._dropped),
                reconnects=self._reconnects,
                unreadable=self._unreadable,
            )

    def run(self, stop: threading.Event) -> IngestCounters:
        """Ingest until ``stop`` is set or a finite source is exhausted and fully published.

        On stop, the frame being published is finished and frames still queued are dropped
        (counted as ``stopped``).

        Returns:
            The counters at the end.

        Raises:
            Whatever the source raised (e.g. ``ImageError`` for a file that cannot be opened)
            or ``publish`` raised.
        """
        queue = _FrameQueue(self.queue_size)
        halt = threading.Event()
        errors: list[BaseException] = []
        reader = threading.Thread(
            target=self._reader, args=(queue, halt, errors), name=f"ingest-{self.camera_id}", daemon=True
        )
        logger.info(
            'ingest starting camera_id="%s" source="%s" sample_fps="%s" drain="%s"',
            self.camera_id,
            self.source.description,
            self.sample_fps,
            self.drain,
        )
        reader.start()
        try:
            while True:
                if stop.is_set():
                    break
                item = queue.get(timeout=0.1)
                if isinstance(item, _End):
                    break
                if item is None:
                    continue
                if stop.is_set():
                    self._drop("stopped")
                    break
                self._send(item)
        finally:
            halt.set()
            reader.join(timeout=self.source.stop_timeout_s + 5.0)
            if reader.is_alive():
                logger.warning('ingest camera_id="%s" reader did not stop in time; leaving it', self.camera_id)
            left = queue.clear()
            if left:
                self._drop("stopped", left)
        if errors:
            raise errors[0]
        counters = self.counters()
        logger.info(
            'ingest stopped camera_id="%s" read="%d" sampled="%d" published="%d" dropped="%s" reconnects="%d"',
            self.camera_id,
            counters.read,
            counters.sampled,
            counters.published,
            dict(counters.dropped),
            counters.reconnects,
        )
        return counters

    # --- reader side -------------------------------------------------------------------------

    def _reader(self, queue: _FrameQueue, halt: threading.Event, errors: list[BaseException]) -> None:
        sampler = _Sampler(self.sample_fps)

        def keep(capture_ts: float) -> bool:
            with self._lock:
                self._read += 1
            if self.metrics:
                self.metrics.frame(self.camera_id, "read")
            return sampler(capture_ts)

        try:
            frames = self.source.frames(halt, keep=keep, on_event=self._on_event)
            with contextlib.closing(frames):
                for image, capture_ts in frames:
                    with self._lock:
                        seq = self._seq
                        self._seq += 1
                        self._sampled += 1
                    if self.metrics:
                        self.metrics.frame(self.camera_id, "sampled")
                    item = _Queued(seq, image, capture_ts)
                    if self.drain:
                        if not queue.put_wait(item, halt):
                            self._drop("stopped")
                            break
                    elif queue.put_latest(item) is not None:
                        self._drop("queue_full")
                    if halt.is_set():
                        break
        except SourceUnreachable as exc:  # an expected end, said in words (no traceback)
            logger.error('ingest camera_id="%s" gave up: %s', self.camera_id, exc)
            errors.append(exc)
        except Exception as exc:  # handed to run(), which raises it in the caller's thread
            logger.exception('ingest camera_id="%s" source="%s" failed', self.camera_id, self.source.description)
            errors.append(exc)
        finally:
            queue.close()

    def _on_event(self, event: SourceEvent) -> None:
        with self._lock:
            if event == "reconnect":
                self._reconnects += 1
            else:
                self._unreadable += 1
        if self.metrics:
            if event == "reconnect":
                self.metrics.reconnect(self.camera_id)
            else:
                self.metrics.frame(self.camera_id, "unreadable")

    def _drop(self, reason: DropReason, n: int = 1) -> None:
        with self._lock:
            self._dropped[reason] = self._dropped.get(reason, 0) + n
        if self.metrics:
            self.metrics.dropped(self.camera_id, reason, n)
        logger.debug('ingest camera_id="%s" dropped="%d" reason="%s"', self.camera_id, n, reason)

    # --- sender side -------------------------------------------------------------------------

    def encode(self, image: np.ndarray) -> tuple[bytes, int, int]:
        """JPEG bytes of an RGB frame (scaled down to ``max_frame_px``), with width and height."""
        height, width = image.shape[:2]
        longest = max(height, width)
        if self.max_frame_px is not None and longest > self.max_frame_px:
            scale = self.max_frame_px / longest
            width, height = max(1, round(width * scale)), max(1, round(height * scale))
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        )
        if not ok:
            raise ImageError(f"camera {self.camera_id}: JPEG encoding of a {width}x{height} frame failed")
        return buf.tobytes(), width, height

    def _send(self, item: _Queued) -> None:
        jpeg, width, height = self.encode(item.image)
        ingest_ts = time.time()
        frame = Frame(
            camera_id=self.camera_id,
            frame_id=f"{self.camera_id}:{self.run_id}:{item.seq}",
            capture_ts=item.capture_ts,
            trace_id=uuid.uuid4().hex,
            width=width,
            height=height,
            jpeg=jpeg,
            ingest_ts=ingest_ts,
        )
        self.publish(Outgoing(topic=FRAMES, key=self.camera_id, message=frame))
        with self._lock:
            self._published += 1
        if self.metrics:
            self.metrics.published(self.camera_id, ingest_ts - item.capture_ts)


def run_all(ingests: Sequence[CameraIngest], stop: threading.Event) -> dict[str, IngestCounters]:
    """Run several cameras, one thread each, until ``stop`` is set or every source has ended.

    ``publish`` is then called from several threads and must be thread-safe (a Kafka producer
    is). The first camera to fail stops the others, and its error is raised.

    Returns:
        Each camera's final counters, by camera id.
    """
    ids = [ingest.camera_id for ingest in ingests]
    if len(set(ids)) != len(ids):
        raise ValueError(f"camera ids must be unique, got {ids}")
    halt = threading.Event()
    results: dict[str, IngestCounters] = {}
    errors: list[BaseException] = []

    def run_one(ingest: CameraIngest) -> None:
        try:
            results[ingest.camera_id] = ingest.run(halt)
        except Exception as exc:  # raised below, in the caller's thread
            errors.append(exc)
            halt.set()

    threads = [threading.Thread(target=run_one, args=(i,), name=f"camera-{i.camera_id}") for i in ingests]
    for thread in threads:
        thread.start()
    while any(t.is_alive() for t in threads):
        if stop.is_set():
            halt.set()
        for thread in threads:
            thread.join(timeout=0.1)
    if errors:
        raise errors[0]
    return results

"""Ingest over RTSP: a camera served on loopback is read, dropped mid-way and restored.

The camera is GStreamer's RTSP server (H.264, 10 fps, 640x360) run by the system python3;
``scripts/test-deps.sh`` installs it. Without it these tests fail, saying so.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from openlfr.messages.models import Frame
from openlfr.pipeline.ingest import Backoff, CameraIngest, IngestCounters, StreamSource
from openlfr.pipeline.stage import Outgoing
from openlfr.testing.rtsp_server import RtspServer, RtspServerError
from openlfr.vision.images import decode_image

pytestmark = pytest.mark.integration

logger = logging.getLogger(__name__)

#: How long the camera is off the network.
OUTAGE_S = 3.0
FPS = 10
WIDTH, HEIGHT = 640, 360


@pytest.fixture
def rtsp_camera() -> Iterator[RtspServer]:
    """The test camera on 127.0.0.1, not started; stopped after the test."""
    camera = RtspServer(fps=FPS, width=WIDTH, height=HEIGHT, codec="h264")
    try:
        camera.check()
    except RtspServerError as exc:
        pytest.fail(str(exc))  # not a skip: CI must install the packages, not pass without them
    yield camera
    camera.stop()


@pytest.fixture
def rtsp_over_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV's FFmpeg backend reads this process-wide variable at each open. Over TCP a camera
    # that goes away is an end of stream at once; over UDP it would be a read timeout.
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")


def _wait_for(condition: Callable[[], bool], *, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.usefixtures("rtsp_over_tcp")
def test_rtsp_ingest_reconnects_after_the_camera_drops_and_the_gap_shows_in_capture_time(
    rtsp_camera: RtspServer,
) -> None:
    rtsp_camera.start()
    frames: list[Frame] = []  # appended by the ingest thread, read here (list.append is atomic)

    def publish(out: Outgoing) -> None:
        frames.append(out.message)

    # Fast, fixed backoff so the camera's return is noticed within half a second.
    source = StreamSource(
        rtsp_camera.url, backoff=Backoff(initial_s=0.1, max_s=0.5, jitter=0.0), open_timeout_s=5.0, read_timeout_s=2.0
    )
    ingest = CameraIngest("cam-rtsp", source, publish=publish, sample_fps=2 * FPS, max_frame_px=None)
    stop = threading.Event()
    results: list[IngestCounters] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(ingest.run(stop))
        except BaseException as exc:  # raised below, in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="ingest-cam-rtsp", daemon=True)
    thread.start()
    try:
        # Opening takes ~3 s: FFmpeg probes the stream before the first frame comes out.
        _wait_for(lambda: len(frames) >= 10 or not thread.is_alive(), timeout_s=15, what="frames before the outage")
        rtsp_camera.stop()
        outage_start = rtsp_camera.stopped_at
        time.sleep(OUTAGE_S)
        rtsp_camera.start()
        outage_end = rtsp_camera.ready_at

        def frames_after() -> int:
            return sum(f.capture_ts > outage_end for f in frames)

        _wait_for(lambda: frames_after() >= 10 or not thread.is_alive(), timeout_s=15, what="frames after the outage")
        stop_requested = time.monotonic()
        stop.set()
        thread.join(timeout=10)
        stop_s = time.monotonic() - stop_requested
    finally:
        stop.set()
        thread.join(timeout=10)

    assert not errors, errors
    assert not thread.is_alive() and stop_s < 1.0, f"ingest took {stop_s:.2f}s to stop"
    counters = results[0]
    assert counters.reconnects >= 1 and counters.reconnects == source.reconnects, counters
    assert counters.published == len(frames), counters

    before = [f for f in frames if f.capture_ts < outage_start]
    after = [f for f in frames if f.capture_ts > outage_end]
    assert len(before) >= 10 and len(after) >= 10, (len(before), len(after))
    stamps = [f.capture_ts for f in frames]
    assert stamps == sorted(stamps)
    # The last frame read before the camera came back, and the first one after.
    last_before = max(t for t in stamps if t <= outage_end)
    first_after = min(t for t in stamps if t > outage_end)
    gap = first_after - last_before
    outage = outage_end - outage_start
    logger.info(
        'outage_s="%.2f" gap_s="%.2f" reconnects="%d" read="%d" published="%d" stop_s="%.2f"',
        outage, gap, counters.reconnects, counters.read, counters.published, stop_s,
    )  # fmt: skip
    assert outage >= OUTAGE_S
    assert gap >= outage, f"capture-time gap {gap:.2f}s shorter than the {outage:.2f}s outage"
    # ...and it is the only gap: elsewhere frames come about 1/FPS apart (bursts right after an
    # open are closer). The bound is loose: the reconnect adds backoff plus FFmpeg's probing.
    others = [b - a for a, b in itertools.pairwise(stamps) if (a, b) != (last_before, first_after)]
    assert max(others) < 1.0, max(others)
    assert gap < outage + 6.0, f"reconnect took {gap - outage:.2f}s after the camera was back"

    for frame in (before[-1], after[0], after[-1]):
        assert (frame.width, frame.height) == (WIDTH, HEIGHT)
        assert decode_image(frame.jpeg).shape == (HEIGHT, WIDTH, 3)
    assert len({f.frame_id for f in frames}) == len(frames)

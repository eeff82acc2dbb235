"""Frame sources and the ingest loop on real media: sampling, freshness, reconnects, bad files."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from openlfr.messages.codec import decode, encode
from openlfr.messages.models import Frame
from openlfr.messages.topics import FRAMES
from openlfr.pipeline.ingest import (
    Backoff,
    CameraIngest,
    CameraTarget,
    ImageFolderSource,
    StreamSource,
    VideoFileSource,
    camera_sources,
    parse_camera_specs,
    redact_url,
    run_all,
)
from openlfr.pipeline.ingest_metrics import IngestMetrics
from openlfr.pipeline.stage import Outgoing
from openlfr.vision.images import decode_image

#: Loopback only: port 1 refuses at once, so every attempt fails fast and nothing leaves the host.
UNREACHABLE = "rtsp://127.0.0.1:1/none"


@pytest.fixture(scope="module")
def video(faces_dir: Path) -> Path:
    """1920x1080, 25 fps, 105 frames (4.2 s)."""
    return faces_dir / "facenet_pytorch/examples/video.mp4"


@pytest.fixture()
def metrics() -> tuple[IngestMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    return IngestMetrics(registry), registry


def _frames_total(registry: CollectorRegistry, camera_id: str, outcome: str) -> float:
    labels = {"camera_id": camera_id, "outcome": outcome}
    return registry.get_sample_value("openlfr_ingest_frames_total", labels) or 0.0


def test_video_file_sampled_at_5_fps_publishes_every_sampled_frame_in_order(video: Path, metrics) -> None:
    ingest_metrics, registry = metrics
    sent: list[Outgoing] = []
    source = VideoFileSource(video, realtime=False, start_ts=1_700_000_000.0)
    ingest = CameraIngest("cam-1", source, publish=sent.append, sample_fps=5, jpeg_quality=85, metrics=ingest_metrics)

    counters = ingest.run(threading.Event())

    assert (counters.read, counters.sampled, counters.published, dict(counters.dropped)) == (105, 21, 21, {})
    assert [o.key for o in sent] == ["cam-1"] * 21 and all(o.topic == FRAMES for o in sent)
    frames = [decode(encode(o.message), Frame) for o in sent]
    assert frames == [o.message for o in sent]
    run = frames[0].frame_id.split(":")[1]
    assert [f.frame_id for f in frames] == [f"cam-1:{run}:{i}" for i in range(21)]
    np.testing.assert_allclose([f.capture_ts - 1_700_000_000.0 for f in frames], np.arange(21) * 0.2, atol=1e-6)
    assert len({f.trace_id for f in frames}) == 21
    assert all(f.ingest_ts >= time.time() - 60 for f in frames)
    image = decode_image(frames[10].jpeg)
    assert image.shape == (1080, 1920, 3) and (frames[10].width, frames[10].height) == (1920, 1080)
    assert _frames_total(registry, "cam-1", "read") == 105
    assert _frames_total(registry, "cam-1", "published") == 21


def test_slow_consumer_of_a_live_source_drops_the_oldest_and_stays_fresh(video: Path, metrics) -> None:
    ingest_metrics, registry = metrics
    sent: list[Frame] = []

    def slow_publish(out: Outgoing) -> None:
        sent.append(out.message)
        time.sleep(0.15)  # about 6 frames a second against a 25 fps source

    source = VideoFileSource(video, realtime=True)
    ingest = CameraIngest(
        "cam-slow", source, publish=slow_publish, sample_fps=25, queue_size=2, metrics=ingest_metrics
    )
    stop = threading.Event()
    threading.Timer(1.6, stop.set).start()

    started = time.monotonic()
    counters = ingest.run(stop)

    assert time.monotonic() - started < 2.5
    queue_full = counters.dropped.get("queue_full", 0)
    assert queue_full >= 10, counters
    assert counters.sampled == counters.published + sum(counters.dropped.values())
    # Drop-oldest keeps what is published fresh: never more than the queue plus one publish behind.
    ages = [f.ingest_ts - f.capture_ts for f in sent]
    assert max(ages) < 0.35, ages  # measured 0.03-0.09 s; without dropping the last would be ~1.1 s old
    seqs = [int(f.frame_id.split(":")[2]) for f in sent]
    assert seqs == sorted(seqs) and seqs[-1] - seqs[0] > len(seqs), "dropped frames leave gaps in frame ids"
    dropped = registry.get_sample_value(
        "openlfr_ingest_frames_dropped_total", {"camera_id": "cam-slow", "reason": "queue_full"}
    )
    assert dropped == queue_full


def test_draining_a_live_source_is_refused(video: Path) -> None:
    with pytest.raises(ValueError, match="drain=True on a live source"):
        CameraIngest("cam-1", VideoFileSource(video, realtime=True), publish=lambda o: None, sample_fps=5, drain=True)


def test_large_frames_are_scaled_down_before_encoding(video: Path) -> None:
    sent: list[Outgoing] = []
    ingest = CameraIngest(
        "cam-1", VideoFileSource(video, realtime=False), publish=sent.append, sample_fps=1, max_frame_px=640
    )
    ingest.run(threading.Event())
    assert len(sent) == 5
    frame = sent[0].message
    assert (frame.width, frame.height) == (640, 360)
    assert decode_image(frame.jpeg).shape == (360, 640, 3)


def test_looping_file_keeps_capture_time_growing(video: Path) -> None:
    stop = threading.Event()
    stamps = []
    for _, capture_ts in VideoFileSource(video, loop=True, realtime=False, start_ts=1000.0).frames(stop):
        stamps.append(capture_ts)
        if len(stamps) == 130:
            stop.set()
    np.testing.assert_allclose(np.diff(stamps), 0.04, atol=1e-9)


def test_unreachable_stream_reconnects_with_capped_backoff_and_stops_promptly() -> None:
    backoff = Backoff(initial_s=0.05, max_s=0.2, factor=2.0, jitter=0.0)
    source = StreamSource(UNREACHABLE, backoff=backoff, open_timeout_s=2.0)
    stop = threading.Event()
    events: list[float] = []

    def on_event(event: str) -> None:
        assert event == "reconnect"
        events.append(time.monotonic())
        if len(events) == 6:
            stop.set()

    start = time.monotonic()
    assert list(source.frames(stop, on_event=on_event)) == []
    assert time.monotonic() - start < 2.0
    assert source.reconnects == 6
    gaps = np.diff([start, *events])
    # Waits of 0.05, 0.1, 0.2, then capped at 0.2, plus a refused connect (a few ms) and scheduling.
    expected = np.array([0.05, 0.1, 0.2, 0.2, 0.2, 0.2])
    assert np.all(gaps >= expected - 0.005) and np.all(gaps <= expected + 0.08), gaps


def test_ingest_of_an_unreachable_stream_counts_reconnects_and_stops_when_told(metrics) -> None:
    ingest_metrics, registry = metrics
    source = StreamSource(UNREACHABLE, backoff=Backoff(initial_s=0.02, max_s=0.05, jitter=0.0), open_timeout_s=2.0)
    ingest = CameraIngest("cam-down", source, publish=lambda o: None, sample_fps=5, metrics=ingest_metrics)
    stop = threading.Event()
    done: list = []
    thread = threading.Thread(target=lambda: done.append(ingest.run(stop)))
    thread.start()
    time.sleep(0.5)
    stopped_at = time.monotonic()
    stop.set()
    thread.join(timeout=5)

    assert not thread.is_alive() and time.monotonic() - stopped_at < 0.5
    counters = done[0]
    assert counters.reconnects >= 5 and (counters.read, counters.published) == (0, 0)
    reconnects = registry.get_sample_value("openlfr_ingest_reconnects_total", {"camera_id": "cam-down"})
    assert reconnects == counters.reconnects


def test_image_folder_skips_and_counts_a_corrupt_file(faces_dir: Path, tmp_path: Path, metrics) -> None:
    ingest_metrics, registry = metrics
    examples = faces_dir / "face_recognition/examples"
    shutil.copy(examples / "biden.jpg", tmp_path / "00.jpg")
    (tmp_path / "01.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    shutil.copy(examples / "two_people.jpg", tmp_path / "02.jpg")
    shutil.copy(examples / "obama_small.jpg", tmp_path / "03.JPG")
    (tmp_path / "notes.txt").write_text("not an image, not a frame")
    sent: list[Outgoing] = []
    source = ImageFolderSource(tmp_path, fps=2, start_ts=1000.0)
    ingest = CameraIngest("cam-folder", source, publish=sent.append, sample_fps=10, metrics=ingest_metrics)

    counters = ingest.run(threading.Event())

    assert (counters.read, counters.unreadable, counters.published) == (4, 1, 3)
    assert source.unreadable == 1
    assert [o.message.capture_ts for o in sent] == [1000.0, 1001.0, 1001.5]
    assert _frames_total(registry, "cam-folder", "unreadable") == 1


def test_publish_failure_stops_the_camera_and_is_raised(video: Path) -> None:
    def failing(out: Outgoing) -> None:
        raise ConnectionError("broker gone")

    ingest = CameraIngest("cam-1", VideoFileSource(video, realtime=False), publish=failing, sample_fps=5)
    with pytest.raises(ConnectionError, match="broker gone"):
        ingest.run(threading.Event())
    counters = ingest.counters()
    assert counters.published == 0 and counters.sampled < 21


def test_missing_video_file_is_raised_from_run(tmp_path: Path) -> None:
    source = VideoFileSource(tmp_path / "nope.mp4", realtime=False)
    ingest = CameraIngest("cam-1", source, publish=lambda out: None, sample_fps=5)
    with pytest.raises(ValueError, match="cannot open as a video"):
        ingest.run(threading.Event())


def test_run_all_runs_cameras_side_by_side(video: Path, faces_dir: Path) -> None:
    sent: list[Outgoing] = []
    lock = threading.Lock()

    def publish(out: Outgoing) -> None:
        with lock:
            sent.append(out)

    spec = f"cam-a={video};cam-b={faces_dir / 'face_recognition/examples'}"
    ingests = [
        CameraIngest(camera_id, source, publish=publish, sample_fps=2)
        for camera_id, source in camera_sources(spec, realtime_files=False, folder_fps=1.0)
    ]
    results = run_all(ingests, threading.Event())
    assert results["cam-a"].published == 9
    assert results["cam-b"].published == 9  # the 9 images of the folder
    assert sorted({o.key for o in sent}) == ["cam-a", "cam-b"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cam-1=rtsp://10.0.0.5/stream", [CameraTarget("cam-1", "rtsp://10.0.0.5/stream")]),
        (
            " cam-1 = rtsp://u:p@h/s?channel=1&subtype=0 ;cam-2=/tmp/v.mp4;\n cam-3=0 ;",
            [
                CameraTarget("cam-1", "rtsp://u:p@h/s?channel=1&subtype=0"),
                CameraTarget("cam-2", "/tmp/v.mp4"),
                CameraTarget("cam-3", "0"),
            ],
        ),
    ],
)
def test_parse_camera_specs(text: str, expected: list[CameraTarget]) -> None:
    assert parse_camera_specs(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no camera given"),
        (" ; ", "no camera given"),
        ("rtsp://host/stream", "expected camera_id=target"),
        ("=rtsp://host/stream", "expected camera_id=target"),
        ("cam 1=rtsp://host/s", "camera id 'cam 1'"),
        ("cam-1=", "cam-1: empty target"),
        ("cam-1=0;cam-1=1", "cam-1: given twice"),
    ],
)
def test_parse_camera_specs_errors(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_camera_specs(text)


def test_camera_sources_picks_the_source_by_target(video: Path, tmp_path: Path) -> None:
    sources = dict(camera_sources(f"a=rtsp://u:secret@cam/1;b=2;c={video};d={tmp_path}", realtime_files=False))
    assert isinstance(sources["a"], StreamSource) and "secret" not in sources["a"].description
    assert isinstance(sources["b"], StreamSource) and sources["b"].url == 2
    assert isinstance(sources["c"], VideoFileSource) and not sources["c"].live
    assert isinstance(sources["d"], ImageFolderSource)
    with pytest.raises(ValueError, match="camera e: .*no such file"):
        camera_sources(f"e={tmp_path / 'missing.mp4'}")
    with pytest.raises(ValueError, match="camera f: .*unsupported scheme 'ftp'"):
        camera_sources("f=ftp://host/x")


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("rtsp://admin:hunter2@10.0.0.5:554/s?x=1", "rtsp://admin:***@10.0.0.5:554/s?x=1"),
        ("rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"),
        ("rtsp://admin@10.0.0.5/s", "rtsp://admin@10.0.0.5/s"),
        ("/path/video.mp4", "/path/video.mp4"),
    ],
)
def test_redact_url(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted

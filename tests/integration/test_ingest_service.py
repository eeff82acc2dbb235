"""The ingest service as its own process: a video file to the frames topic, then exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from openlfr.subprocesses import free_port
from openlfr.kafka.replay import read_topic
from openlfr.messages.models import Frame
from openlfr.testing.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

VIDEO = "facenet_pytorch/examples/video.mp4"  # 4.2 s, 25 fps, 1080p


def _ingest(broker: KafkaBroker, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "openlfr.cli", "service", "ingest"],
        env={**os.environ, "OPENLFR_BOOTSTRAP": broker.bootstrap, "OPENLFR_HTTP_HOST": "127.0.0.1",
             "OPENLFR_HTTP_PORT": str(free_port()), **env},
        capture_output=True, text=True, timeout=180, check=False,
    )


def test_ingest_service_publishes_sampled_frames_of_a_file(kafka_broker: KafkaBroker, faces_dir: Path) -> None:
    prefix = f"ing-{uuid.uuid4().hex[:8]}."
    proc = _ingest(kafka_broker, OPENLFR_TOPIC_PREFIX=prefix, OPENLFR_CAMERAS=f"door-1={faces_dir / VIDEO}",
                   OPENLFR_SAMPLE_FPS="5", OPENLFR_FILE_MODE="batch", OPENLFR_MAX_FRAME_PX="1280")
    assert proc.returncode == 0, proc.stderr
    frames = read_topic(kafka_broker.bootstrap, prefix + "openlfr.frames.v1", Frame)
    assert len(frames) == 21  # 105 frames at 25 fps sampled at 5 fps
    assert {f.camera_id for f in frames} == {"door-1"}
    assert all(f.width == 1280 and f.height == 720 and f.jpeg[:2] == b"\xff\xd8" for f in frames)
    times = [f.capture_ts for f in frames]
    assert times == sorted(times) and len({f.frame_id for f in frames}) == 21


def test_ingest_service_refuses_bad_settings_naming_them(kafka_broker: KafkaBroker) -> None:
    proc = _ingest(kafka_broker, OPENLFR_CAMERAS="no-equals-sign", OPENLFR_SAMPLE_FPS="-1")
    assert proc.returncode == 2
    assert "OPENLFR_CAMERAS" in proc.stderr and "OPENLFR_SAMPLE_FPS" in proc.stderr

"""The ingest service loop: cameras -> frames topic, with health, metrics and SIGTERM.

Shared by ``services/ingest/main.py`` and ``openlfr run --bus kafka`` (which feeds a running
set of services from one video or stream).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import Field, field_validator

from openlfr.kafka.admin import ensure_topics
from openlfr.kafka.runner import Publisher
from openlfr.messages.topics import FRAMES
from openlfr.pipeline.ingest import CameraIngest, IngestCounters, camera_sources, parse_camera_specs, run_all
from openlfr.pipeline.ingest_metrics import IngestMetrics
from openlfr.pipeline.stage import Outgoing
from openlfr.service.settings import ServiceSettings

logger = logging.getLogger(__name__)


class IngestServiceSettings(ServiceSettings):
    """Kafka settings plus the cameras (``OPENLFR_CAMERAS="cam-1=rtsp://...;cam-2=/v.mp4"``)."""

    cameras: str
    sample_fps: float = Field(default=5.0, gt=0, le=60)
    jpeg_quality: int = Field(default=85, ge=1, le=100)
    queue_size: int = Field(default=2, ge=1, le=100)
    max_frame_px: int = Field(default=1920, ge=64, le=8192)
    #: Video files: paced at their frame rate like a camera (``realtime``), or read as fast as
    #: the broker takes them with every sampled frame kept (``batch``).
    file_mode: Literal["realtime", "batch"] = "realtime"
    loop_files: bool = False

    @field_validator("cameras")
    @classmethod
    def _cameras(cls, value: str) -> str:
        parse_camera_specs(value)  # raises ValueError naming the bad part
        return value


def run_ingest(
    settings: IngestServiceSettings,
    stop: threading.Event,
    *,
    registry: CollectorRegistry | None = None,
    on_publish: Callable[[Outgoing], None] | None = None,
) -> dict[str, IngestCounters]:
    """Publish every camera's sampled frames until ``stop`` is set or every source has ended."""
    registry = REGISTRY if registry is None else registry
    topic = settings.topic_name(FRAMES)
    if settings.create_topics:
        ensure_topics(settings.bootstrap, {topic: FRAMES.partitions}, retention_ms=FRAMES.retention_ms,
                      timeout_s=settings.startup_timeout_s)
    publisher = Publisher(
        bootstrap=settings.bootstrap, topic_names={FRAMES: topic}, registry=registry,
        delivery_timeout_s=settings.flush_timeout_s,
    )
    metrics = IngestMetrics(registry=registry)

    def publish(out: Outgoing) -> None:
        if publisher.publish(out) and on_publish is not None:
            on_publish(out)
        publisher.poll()

    realtime = settings.file_mode == "realtime"
    ingests = [
        CameraIngest(
            camera_id, source, publish=publish, sample_fps=settings.sample_fps, jpeg_quality=settings.jpeg_quality,
            queue_size=settings.queue_size, max_frame_px=settings.max_frame_px, metrics=metrics,
            drain=None if realtime else not source.live,
        )
        for camera_id, source in camera_sources(settings.cameras, realtime_files=realtime, loop_files=settings.loop_files)
    ]
    try:
        return run_all(ingests, stop)
    finally:
        left = publisher.flush(settings.flush_timeout_s)
        if left:
            logger.error('ingest stopped with undelivered frames count="%d"', left)

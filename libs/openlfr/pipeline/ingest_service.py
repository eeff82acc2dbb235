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
from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from openlfr.kafka.admin import ensure_topics
from openlfr.kafka.runner import Publisher
from openlfr.messages.topics import FRAMES
from openlfr.pipeline.deployment_watch import DeploymentWatcher
from openlfr.pipeline.ingest import CameraIngest, IngestCounters, camera_sources, parse_camera_specs, run_all
from openlfr.pipeline.ingest_metrics import IngestMetrics
from openlfr.pipeline.stage import Outgoing
from openlfr.registry.client import RegistryClient
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
    #: The registry API (the match service); when set, frames are published only for cameras
    #: an active deployment covers at their capture time (the rest dropped as ``no_deployment``).
    deployments_url: AnyHttpUrl | None = None
    #: Token (role ``service`` or ``viewer``) for ``deployments_url``.
    deployments_token: SecretStr | None = None
    deployments_poll_s: float = Field(default=5.0, gt=0, le=3600)
    #: Without an answer from the registry for this long, no camera is published (fail closed).
    deployments_stale_s: float = Field(default=60.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _deployments(self) -> IngestServiceSettings:
        if self.deployments_url is not None and self.deployments_token is None:
            raise ValueError("OPENLFR_DEPLOYMENTS_TOKEN is required when OPENLFR_DEPLOYMENTS_URL is set")
        if self.deployments_stale_s < self.deployments_poll_s:
            raise ValueError("OPENLFR_DEPLOYMENTS_STALE_S must be >= OPENLFR_DEPLOYMENTS_POLL_S")
        return self

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
    kafka = settings.kafka_connection()
    if settings.create_topics:
        ensure_topics(kafka, {topic: FRAMES.partitions}, retention_ms=FRAMES.retention_ms,
                      timeout_s=settings.startup_timeout_s)
    publisher = Publisher(
        bootstrap=kafka, topic_names={FRAMES: topic}, registry=registry,
        delivery_timeout_s=settings.flush_timeout_s,
    )
    metrics = IngestMetrics(registry=registry)
    watcher = _watcher(settings)

    def publish(out: Outgoing) -> None:
        message = out.message
        if watcher is not None and not watcher.covers(message.camera_id, message.capture_ts):
            metrics.dropped(message.camera_id, "no_deployment")
            return
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
        if watcher is not None:
            watcher.close()
        left = publisher.flush(settings.flush_timeout_s)
        if left:
            logger.error('ingest stopped with undelivered frames count="%d"', left)


def _watcher(settings: IngestServiceSettings) -> DeploymentWatcher | None:
    """The deployment watcher, started, when a registry URL is set."""
    if settings.deployments_url is None or settings.deployments_token is None:
        return None
    client = RegistryClient(str(settings.deployments_url), settings.deployments_token.get_secret_value())
    watcher = DeploymentWatcher.from_registry(
        client, poll_s=settings.deployments_poll_s, stale_after_s=settings.deployments_stale_s
    )
    watcher.start()
    return watcher

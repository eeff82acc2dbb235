"""Prometheus metrics of the ingest loop (``openlfr.pipeline.ingest``).

Every label is a bounded set: the configured camera ids, and the outcomes and drop reasons
named here. The ingest loop calls :class:`IngestMetrics` as frames move; a service exposes the
registry on ``/metrics``.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

#: Where a frame got to: ``read`` from the source, ``sampled`` to meet ``sample_fps``,
#: ``published`` to the frames topic, ``dropped`` (see ``DropReason``), or ``unreadable``
#: (a file of an image folder that did not decode).
Outcome = Literal["read", "sampled", "published", "dropped", "unreadable"]

#: Why a sampled frame was dropped: the bounded queue was full and it was the oldest
#: (``queue_full``), or ingest stopped while it was still queued (``stopped``).
DropReason = Literal["queue_full", "stopped", "no_deployment"]

#: Capture-to-publish latency buckets (seconds): a healthy camera publishes well under 100 ms.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class IngestMetrics:
    """The ingest counters of one process, registered once (one instance per registry)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        """Register the metrics.

        Args:
            registry: where to register; tests pass a fresh ``CollectorRegistry()`` so that
                several instances can live in one process.
        """
        self.frames_total = Counter(
            "openlfr_ingest_frames_total",
            "Frames by how far they got: read, sampled, published, dropped, unreadable.",
            ["camera_id", "outcome"],
            registry=registry,
        )
        self.frames_dropped_total = Counter(
            "openlfr_ingest_frames_dropped_total",
            "Sampled frames dropped before publishing, by reason (queue_full: oldest of a full queue).",
            ["camera_id", "reason"],
            registry=registry,
        )
        self.reconnects_total = Counter(
            "openlfr_ingest_reconnects_total",
            "Attempts to reopen a stream after it failed or ended.",
            ["camera_id"],
            registry=registry,
        )
        self.latency_seconds = Histogram(
            "openlfr_ingest_latency_seconds",
            "Capture time to the publish call, per published frame.",
            ["camera_id"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def frame(self, camera_id: str, outcome: Outcome, n: int = 1) -> None:
        """Count ``n`` frames of a camera with an outcome."""
        self.frames_total.labels(camera_id=camera_id, outcome=outcome).inc(n)

    def dropped(self, camera_id: str, reason: DropReason, n: int = 1) -> None:
        """Count dropped frames (also counted as outcome ``dropped``)."""
        self.frames_dropped_total.labels(camera_id=camera_id, reason=reason).inc(n)
        self.frames_total.labels(camera_id=camera_id, outcome="dropped").inc(n)

    def reconnect(self, camera_id: str) -> None:
        """Count one reconnect attempt."""
        self.reconnects_total.labels(camera_id=camera_id).inc()

    def published(self, camera_id: str, latency_s: float) -> None:
        """Count a published frame and its capture-to-publish latency."""
        self.frames_total.labels(camera_id=camera_id, outcome="published").inc()
        self.latency_seconds.labels(camera_id=camera_id).observe(max(latency_s, 0.0))

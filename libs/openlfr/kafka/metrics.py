"""The Kafka loop's and the publisher's Prometheus metrics, one set per registry.

Labels are only stage, topic, partition (bounded by the topic), outcome and reason.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from openlfr.messages.models import Message
from openlfr.prom import metrics_for

__all__ = ["PublisherMetrics", "StageMetrics", "capture_ts_of", "metrics_for"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300)


class StageMetrics:
    """The runner's metrics in one registry (one set per registry, shared by its runners)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages_in = Counter(
            "openlfr_stage_messages_in_total",
            "Messages consumed, valid or not (a batch read again after a retry counts again).",
            ["stage", "topic"], registry=registry,
        )
        self.messages_out = Counter(
            "openlfr_stage_messages_out_total", "Outputs whose delivery was acknowledged.",
            ["stage", "topic"], registry=registry,
        )
        self.dead_lettered = Counter(
            "openlfr_stage_messages_dead_lettered_total",
            "Inputs sent to the dead-letter topic (decode, rejected, handler_error, delivery).",
            ["stage", "reason"], registry=registry,
        )
        self.failed = Counter(
            "openlfr_stage_messages_failed_total",
            "Messages that failed: delivery (not acknowledged, retried) or handler_error.",
            ["stage", "reason"], registry=registry,
        )
        self.dropped = Counter(
            "openlfr_stage_messages_dropped_total", "Inputs the stage dropped on purpose.",
            ["stage", "reason"], registry=registry,
        )
        self.retries = Counter(
            "openlfr_stage_backend_retries_total",
            "Batches retried after backend_unavailable or a delivery failure.",
            ["stage", "reason"], registry=registry,
        )
        self.batches = Counter(
            "openlfr_stage_batches_total", "Batches by outcome (ok, retry, handler_error).",
            ["stage", "outcome"], registry=registry,
        )
        self.commits = Counter(
            "openlfr_stage_commits_total", "Offset commits by outcome (ok, failed).",
            ["stage", "outcome"], registry=registry,
        )
        self.batch_size = Histogram(
            "openlfr_stage_batch_size_messages", "Messages per consumed batch.",
            ["stage"], buckets=_BATCH_BUCKETS, registry=registry,
        )
        self.handle_seconds = Histogram(
            "openlfr_stage_handle_seconds", "Time in Stage.handle per batch.",
            ["stage"], buckets=_SECONDS_BUCKETS, registry=registry,
        )
        self.latency = Histogram(
            "openlfr_stage_latency_seconds",
            "From the frame's capture_ts to the acknowledged publication of an output.",
            ["stage"], buckets=_LATENCY_BUCKETS, registry=registry,
        )
        self.progress_age = Gauge(
            "openlfr_stage_progress_age_seconds",
            "Seconds since the stage last finished a batch, while input is waiting for it "
            "(a batch being retried, or lag); 0 while it keeps up or has nothing to do.",
            ["stage"], registry=registry,
        )
        self.stalled = Gauge(
            "openlfr_stage_stalled",
            "1 while the stage has made no progress for OPENLFR_STALL_AFTER_S with input "
            "waiting (its /readyz says not ready), else 0.",
            ["stage"], registry=registry,
        )
        self.lag = Gauge(
            "openlfr_stage_consumer_lag_messages",
            "High watermark minus the consumer's position, per assigned partition.",
            ["stage", "topic", "partition"], registry=registry,
        )


class PublisherMetrics:
    """The publisher's metrics in one registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "openlfr_publisher_messages_total",
            "Published messages by outcome (delivered, failed, dropped_queue_full).",
            ["topic", "outcome"], registry=registry,
        )
        self.latency = Histogram(
            "openlfr_publisher_latency_seconds",
            "From the message's capture_ts to its acknowledged publication.",
            ["topic"], buckets=_LATENCY_BUCKETS, registry=registry,
        )


def capture_ts_of(message: object) -> float | None:
    """The capture time of a pipeline message (None for others)."""
    return message.capture_ts if isinstance(message, Message) else None

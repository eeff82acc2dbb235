"""Topic names, keys and partitioning. Every topic is keyed by camera id, so one camera's
messages stay in order on one partition and a stage's replicas split cameras between them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic's default name, partition count and retention."""

    name: str
    partitions: int
    retention_ms: int
    doc: str


HOUR_MS = 3_600_000

FRAMES = TopicSpec("openlfr.frames.v1", 6, HOUR_MS, "ingest -> detect: one JPEG frame per message")
FACES = TopicSpec("openlfr.faces.v1", 6, HOUR_MS, "detect -> embed: the faces of one frame with chips")
EMBEDDINGS = TopicSpec("openlfr.embeddings.v1", 6, HOUR_MS, "embed -> match: faces of one frame with vectors")
MATCHES = TopicSpec("openlfr.matches.v1", 3, 7 * 24 * HOUR_MS, "match -> alert: one per track decision")
ALERTS = TopicSpec("openlfr.alerts.v1", 3, 30 * 24 * HOUR_MS, "alert -> subscribers: deduplicated alerts")
DEADLETTER = TopicSpec("openlfr.deadletter.v1", 1, 7 * 24 * HOUR_MS, "any stage: messages that failed validation")
AUDIT_CHECKPOINTS = TopicSpec(
    "openlfr.audit-checkpoints.v1", 1, 400 * 24 * HOUR_MS,
    "match, alert -> auditors: the head (hash, record count) of each audit log, kept outside the log",
)

ALL_TOPICS = (FRAMES, FACES, EMBEDDINGS, MATCHES, ALERTS, DEADLETTER, AUDIT_CHECKPOINTS)

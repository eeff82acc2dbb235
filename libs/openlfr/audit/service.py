"""The audit log as a service runs it: anchored to the checkpoint topic at start, publishing its
head while it runs. The match and alert services build theirs with :func:`open_service_audit`."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from openlfr.audit.checkpoint import CheckpointPublisher, read_checkpoints
from openlfr.audit.exceptions import AuditLogError
from openlfr.audit.log import AuditLog, Head
from openlfr.audit.settings import AuditSettings
from openlfr.kafka.admin import ensure_topics
from openlfr.messages.topics import AUDIT_CHECKPOINTS
from openlfr.service.settings import EXIT_BAD_SETTINGS, ServiceSettings

logger = logging.getLogger(__name__)


@dataclass
class ServiceAudit:
    """A service's audit log and the publisher of its head."""

    log: AuditLog
    publisher: CheckpointPublisher
    log_id: str
    topic: str

    def close(self) -> None:
        """Publish the last head and stop."""
        self.publisher.close()


def open_service_audit(path: Path, settings: ServiceSettings, audit_settings: AuditSettings) -> ServiceAudit:
    """The log at ``path``, checked against every head the checkpoint topic holds for it, and a
    publisher of its head.

    A log that does not hold its checkpointed heads (cut, rewritten, deleted) or whose chain is
    broken is refused: the service starts, but every audited request gets 503 and
    ``openlfr_audit_log_intact`` is 0 until it is restarted on a repaired or new log.

    Raises:
        SystemExit: (2) no log id can be made from the file name (``OPENLFR_AUDIT_LOG_ID``).
        KafkaAdminError: the topic cannot be created or read in time.
    """
    try:
        log_id = audit_settings.id_of(path)
    except ValueError as exc:
        logger.error("bad setting %s", exc)
        raise SystemExit(EXIT_BAD_SETTINGS) from exc
    topic = settings.topic_name(AUDIT_CHECKPOINTS)
    kafka = settings.kafka_connection()
    if settings.create_topics:
        ensure_topics(kafka, {topic: AUDIT_CHECKPOINTS.partitions},
                      retention_ms=audit_settings.checkpoint_retention_ms,
                      replication_factor=settings.replication_factor, timeout_s=settings.startup_timeout_s)
    checkpoints = read_checkpoints(kafka, topic, log_id, timeout_s=settings.startup_timeout_s)
    heads = [cp.head() for cp in checkpoints]
    log = AuditLog(path, key=audit_settings.key())
    published: Head | None = max(heads, key=lambda h: h.count) if heads else None
    try:
        log.anchor(heads)
    except ValueError as exc:
        # Two checkpoints disagree: two logs share the id, or someone wrote to the topic. The latest
        # still anchors the log's end; `openlfr audit verify --against-topic` reports the conflict.
        logger.error('audit checkpoints conflict log_id="%s" topic="%s" error="%s"', log_id, topic, exc)
        log.anchor([heads[-1]])
    try:
        head = log.check()
    except AuditLogError as exc:
        # Logged and counted by the log; the service runs, its audited requests get 503.
        logger.error('audit log refused at start log_id="%s" path="%s" error="%s"', log_id, path, exc)
    else:
        logger.info('audit log checked log_id="%s" path="%s" records="%d" checkpoints="%d" anchored_at="%s"',
                    log_id, path, head.count, len(heads), published.count if published else 0)
    publisher = CheckpointPublisher(
        log, bootstrap=kafka, topic=topic, log_id=log_id,
        every_records=audit_settings.checkpoint_every_records, interval_s=audit_settings.checkpoint_interval_s,
        published=published, timeout_s=audit_settings.checkpoint_timeout_s,
    )
    return ServiceAudit(log=log, publisher=publisher, log_id=log_id, topic=topic)

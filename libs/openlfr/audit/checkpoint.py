"""The audit log's head anchored outside the log: checkpoint records on a Kafka topic.

The service that writes a log publishes its head (record count, last hash, the log's id) to the
checkpoint topic (``openlfr.audit-checkpoints.v1``, keyed by log id, its own retention) every
``every_records`` records or ``interval_s`` seconds, whichever comes first, and once more when
it stops. ``openlfr audit verify --against-topic`` reads them back and checks that the file
holds each at its count; a service reads them at start and refuses to continue a log that does
not (:meth:`openlfr.audit.log.AuditLog.anchor`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from pydantic import BaseModel, ConfigDict, Field

from openlfr.audit import metrics
from openlfr.audit.log import AuditLog, AuditRecord, Head
from openlfr.kafka.replay import read_topic
from openlfr.kafka.security import Bootstrap, client_config
from openlfr.messages.codec import encode

logger = logging.getLogger(__name__)

#: A log's id: what its checkpoints are keyed by (unique per log file across a deployment).
LOG_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"


class AuditCheckpoint(BaseModel):
    """One head of one audit log, as published to the checkpoint topic."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(default="audit_checkpoint", pattern="^audit_checkpoint$")
    v: int = Field(default=1, ge=1, le=1)
    log_id: str = Field(pattern=LOG_ID_PATTERN)
    count: int = Field(ge=1, description="records in the log up to and including the head")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$", description="hash of record seq count-1")
    ts: float = Field(allow_inf_nan=False, description="epoch seconds when it was published")
    writer: str = Field(min_length=1, max_length=255, description="host:pid of the publishing process")

    def head(self) -> Head:
        """The head this checkpoint vouches for."""
        return Head(count=self.count, hash=self.hash)


def read_checkpoints(bootstrap: Bootstrap, topic: str, log_id: str, *, timeout_s: float = 30.0) -> list[AuditCheckpoint]:
    """Every checkpoint of ``log_id`` on ``topic``, in publication order.

    Raises:
        BrokerUnavailableError: the topic cannot be read to its end in time.
    """
    return [cp for cp in read_topic(bootstrap, topic, AuditCheckpoint, timeout_s=timeout_s) if cp.log_id == log_id]


class CheckpointPublisher:
    """Publishes a log's head every ``every_records`` appends or ``interval_s`` seconds (only
    when it moved), from a thread of its own, and a last time on :meth:`close`.

    A failed publication is counted (``openlfr_audit_checkpoints_total{outcome="failed"}``),
    logged, and retried on the next tick; appends never wait for the broker.

    Args:
        log: the log whose appends in this process move the head.
        bootstrap: the brokers.
        topic: the checkpoint topic.
        log_id: the log's id (the record key).
        every_records: publish after this many appends.
        interval_s: and at least this often while the head moved.
        published: the head the topic already holds for this log (None: none yet).
        timeout_s: longest wait for the broker's acknowledgement of one checkpoint.
    """

    def __init__(
        self,
        log: AuditLog,
        *,
        bootstrap: Bootstrap,
        topic: str,
        log_id: str,
        every_records: int,
        interval_s: float,
        published: Head | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if every_records < 1 or interval_s <= 0 or timeout_s <= 0:
            raise ValueError("every_records >= 1, interval_s > 0 and timeout_s > 0 expected")
        self.log = log
        self.topic = topic
        self.log_id = log_id
        self.every_records = every_records
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self._writer = f"{socket.gethostname()}:{os.getpid()}"[:255]
        self._producer = Producer({**client_config(bootstrap), "acks": "all", "enable.idempotence": True,
                                   "linger.ms": 0})
        self._cond = threading.Condition()
        self._latest: Head | None = log.head()
        self._published = published
        self._pending = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"audit-checkpoints-{log_id}", daemon=True)
        log.add_listener(self._on_append)
        self._update_gauge()
        self._thread.start()

    @property
    def published(self) -> Head | None:
        """The last head the broker acknowledged."""
        with self._cond:
            return self._published

    def _on_append(self, record: AuditRecord) -> None:
        with self._cond:
            head = Head(count=record.seq + 1, hash=record.hash)
            if self._latest is None or head.count > self._latest.count:
                self._latest = head
            self._pending += 1
            self._update_gauge()
            if self._pending >= self.every_records:
                self._cond.notify()

    def _update_gauge(self) -> None:
        latest, published = self._latest, self._published
        behind = 0 if latest is None else latest.count - (0 if published is None else published.count)
        metrics.UNANCHORED.set(max(behind, 0))

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stopping and self._pending < self.every_records:
                    self._cond.wait(self.interval_s)
                if self._stopping:
                    return
                head = self._due()
            if head is not None:
                self._publish(head)

    def _due(self) -> Head | None:
        """The head to publish now, if it moved since the last one published (lock held)."""
        latest = self._latest
        if latest is None or latest.count == 0 or latest == self._published:
            self._pending = 0
            return None
        self._pending = 0
        return latest

    def _publish(self, head: Head) -> bool:
        checkpoint = AuditCheckpoint(log_id=self.log_id, count=head.count, hash=head.hash, ts=time.time(),
                                     writer=self._writer)
        errors: list[KafkaError] = []

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        try:
            self._producer.produce(self.topic, key=self.log_id.encode(), value=encode(checkpoint),
                                   on_delivery=delivered)
            left = self._producer.flush(self.timeout_s)
        except (BufferError, KafkaException) as exc:
            errors.append(KafkaError(KafkaError._FAIL, str(exc)))
            left = 0
        if errors or left:
            reason = errors[0] if errors else f"not acknowledged within {self.timeout_s}s"
            metrics.CHECKPOINTS.labels("failed").inc()
            logger.warning('audit checkpoint not published log_id="%s" count="%d" topic="%s" error="%s"',
                           self.log_id, head.count, self.topic, reason)
            return False  # the head has not moved for the publisher: tried again on the next tick
        with self._cond:
            if self._published is None or head.count > self._published.count:
                self._published = head
            self._update_gauge()
        metrics.CHECKPOINTS.labels("published").inc()
        logger.info('audit checkpoint published log_id="%s" count="%d" hash="%s"', self.log_id, head.count,
                    head.hash)
        return True

    def close(self) -> None:
        """Stop the thread and publish the last head if it moved (waits up to ``timeout_s``)."""
        self.log.remove_listener(self._on_append)
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=self.timeout_s + self.interval_s)
        with self._cond:
            head = self._due()
        if head is not None:
            self._publish(head)
        self._producer.flush(self.timeout_s)

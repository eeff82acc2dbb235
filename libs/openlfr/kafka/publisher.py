"""The producer-only ``Publisher`` of ``ingest``: same settings as the stages, never blocking."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, Producer
from confluent_kafka import Message as KafkaMessage
from prometheus_client import CollectorRegistry

from openlfr.kafka.clients import LIBRDKAFKA_LOGGER, PRODUCER_DEFAULTS, err_name
from openlfr.kafka.metrics import PublisherMetrics, capture_ts_of, metrics_for
from openlfr.kafka.security import Bootstrap, client_config
from openlfr.messages.codec import encode, headers_for
from openlfr.messages.topics import TopicSpec
from openlfr.pipeline.stage import Outgoing

logger = logging.getLogger(__name__)


class Publisher:
    """A producer for ``ingest``: same settings as the stages, and it never blocks on a full
    queue: a message that finds librdkafka's bounded queue full is dropped and counted, because
    a backlog of stale video is worse than a gap.
    """

    def __init__(
        self,
        *,
        bootstrap: Bootstrap,
        topic_names: Mapping[TopicSpec, str] | None = None,
        max_queued_messages: int = 1000,
        max_queued_kbytes: int = 65536,
        delivery_timeout_s: float = 30.0,
        registry: CollectorRegistry | None = None,
        producer_config: Mapping[str, Any] | None = None,
        client_id: str = "openlfr-ingest",
    ) -> None:
        """Make the producer.

        Args:
            bootstrap: ``host:port[,host:port...]`` of the brokers, or a
                :class:`~openlfr.kafka.security.KafkaConnection` (TLS, SASL).
            topic_names: The actual name of a topic, by spec (``spec.name`` when absent).
            max_queued_messages: librdkafka's queue bound in messages.
            max_queued_kbytes: librdkafka's queue bound in KiB.
            delivery_timeout_s: A message not acknowledged by then is reported failed.
            registry: Where the metrics go (prometheus_client's default if None).
            producer_config: Further librdkafka settings (override the defaults).
            client_id: The client id the broker sees.
        """
        if max_queued_messages < 1:
            raise ValueError(f"max_queued_messages={max_queued_messages}, expected >= 1")
        if max_queued_kbytes < 1:
            raise ValueError(f"max_queued_kbytes={max_queued_kbytes}, expected >= 1")
        if delivery_timeout_s <= 0:
            raise ValueError(f"delivery_timeout_s={delivery_timeout_s}, expected > 0")
        self._topic_names = dict(topic_names or {})
        self.metrics: PublisherMetrics = metrics_for(PublisherMetrics, registry)
        config: dict[str, Any] = {
            **client_config(bootstrap),
            **PRODUCER_DEFAULTS,
            "queue.buffering.max.messages": max_queued_messages,
            "queue.buffering.max.kbytes": max_queued_kbytes,
            "delivery.timeout.ms": int(delivery_timeout_s * 1000),
            "client.id": client_id,
            "logger": LIBRDKAFKA_LOGGER,
        }
        config.update(producer_config or {})
        self._producer = Producer(config)
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def topic_name(self, spec: TopicSpec) -> str:
        """The actual name of a topic."""
        return self._topic_names.get(spec, spec.name)

    def publish(self, outgoing: Outgoing) -> bool:
        """Queue one message; False if the local queue was full and it was dropped."""
        topic = self.topic_name(outgoing.topic)
        capture_ts = capture_ts_of(outgoing.message)

        def report(error: KafkaError | None, message: KafkaMessage) -> None:
            if error is not None:
                with self._lock:
                    self.failed += 1
                self.metrics.messages.labels(topic, "failed").inc()
                logger.warning('publish failed topic="%s" key="%s" error="%s"', topic,
                               outgoing.key, err_name(error))
                return
            with self._lock:
                self.delivered += 1
            self.metrics.messages.labels(topic, "delivered").inc()
            if capture_ts is not None:
                self.metrics.latency.labels(topic).observe(time.time() - capture_ts)

        try:
            self._producer.produce(
                topic,
                value=encode(outgoing.message),
                key=outgoing.key.encode("utf-8"),
                headers=headers_for(outgoing.message),
                on_delivery=report,
            )
        except BufferError:
            with self._lock:
                self.dropped += 1
            self.metrics.messages.labels(topic, "dropped_queue_full").inc()
            logger.debug(
                'publish dropped topic="%s" key="%s" reason="queue_full"', topic, outgoing.key
            )
            self._producer.poll(0)
            return False
        self._producer.poll(0)  # serve delivery reports as we go
        return True

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports; the number served."""
        return self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued message's report; the number still unacknowledged."""
        return self._producer.flush(timeout_s)

    def __len__(self) -> int:
        """Messages queued and not yet acknowledged."""
        return len(self._producer)

"""What a stage's loop and readiness probe read from the broker besides its messages: the lag
of its partitions and whether the broker answers for its input topic."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from openlfr.kafka.clients import LIBRDKAFKA_LOGGER
from openlfr.kafka.security import Bootstrap, client_config

logger = logging.getLogger(__name__)


def read_lag(
    consumer: Consumer, topic: str, partitions: Sequence[int], committed: Mapping[int, int]
) -> dict[int, int]:
    """Per partition, the high watermark minus the consumer's position (or, before anything is
    fetched, the committed offset); partitions whose numbers are not known yet are left out."""
    if not partitions:
        return {}
    try:
        positions = consumer.position([TopicPartition(topic, p) for p in sorted(partitions)])
    except KafkaException as exc:
        logger.debug('position failed topic="%s" error="%s"', topic, exc)
        return {}
    lags: dict[int, int] = {}
    for tp in positions:
        try:
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0:
                _, high = consumer.get_watermark_offsets(tp, timeout=0.5, cached=False)
        except KafkaException as exc:
            logger.debug('watermarks failed topic="%s" error="%s"', topic, exc)
            continue
        position = tp.offset
        if position == OFFSET_INVALID or position < 0:
            position = committed.get(tp.partition, -1)
        if high >= 0 and position >= 0:
            lags[tp.partition] = max(high - position, 0)
    return lags


class BrokerProbe:
    """Whether the broker answers a metadata request for a topic, cached briefly so readiness
    probes do not flood the broker. A client of its own: a metadata request on the consumer's
    handle from the HTTP thread waits behind the consumer's own calls, for tens of seconds."""

    def __init__(self, bootstrap: Bootstrap, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self._client: AdminClient | None = None
        self._last: tuple[float, bool, str] = (-float("inf"), False, "not checked yet")

    def check(self, *, timeout_s: float = 1.0, cache_s: float = 2.0) -> tuple[bool, str]:
        """(ok, reason), at most ``cache_s`` old."""
        checked, ok, reason = self._last
        if time.monotonic() - checked < cache_s:
            return ok, reason
        if self._client is None:
            self._client = AdminClient({**client_config(self.bootstrap), "logger": LIBRDKAFKA_LOGGER})
        try:
            metadata = self._client.list_topics(topic=self.topic, timeout=timeout_s)
            found = metadata.topics.get(self.topic)
            if not metadata.brokers:
                ok, reason = False, "no broker in metadata"
            elif found is None or found.error is not None:
                error = found.error if found is not None else "not in metadata"
                ok, reason = False, f'topic="{self.topic}" unavailable: {error}'
            else:
                ok, reason = True, "ok"
        except (KafkaException, RuntimeError) as exc:
            ok, reason = False, f"no answer from {self.bootstrap}: {exc}"
        self._last = (time.monotonic(), ok, reason)
        return ok, reason

"""Retention that holds, on the real broker with a scaled clock: a topic of 3 s retention made by
``ensure_topics`` (the services' topic set-up) loses a record once it is older than its
retention plus one segment, although records keep arriving (a camera that never stops).

Issue 11, failure 4: topics got ``retention.ms`` only, with the broker's 7-day ``segment.ms``
and 1 GiB ``segment.bytes``; a partition that keeps receiving records never closes its segment,
and Kafka deletes only closed segments whose newest record is past retention, so nothing was
deleted. The test broker checks retention every second (``log.retention.check.interval.ms``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from openlfr.kafka.admin import ensure_topics, retention_config
from openlfr.testing.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

#: 1 h scaled to 3 s: the segment is a tenth of it.
RETENTION_MS = 3000
#: 10x the retention, the growth measured in the issue: today's topics still held the record.
WAIT_S = 10 * RETENTION_MS / 1000


def _low_watermark(consumer: Consumer, topic: str) -> int:
    return consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10, cached=False)[0]


def test_a_record_older_than_retention_plus_one_segment_is_deleted_while_traffic_continues(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str],
) -> None:
    topic = unique_topic("frames")
    ensure_topics(kafka_broker.bootstrap, {topic: 1}, retention_ms=RETENTION_MS)
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    described = admin.describe_configs([resource])[resource].result(timeout=10)
    wanted = retention_config(RETENTION_MS)
    assert {k: described[k].value for k in wanted} == wanted
    assert int(wanted["segment.ms"]) == RETENTION_MS // 10

    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 0})
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": topic})
    try:
        producer.produce(topic, key=b"cam-1", value=b"passer-by")
        assert producer.flush(10) == 0
        written = time.monotonic()
        sent = 1
        deleted_after_s: float | None = None
        while time.monotonic() - written < WAIT_S:
            producer.produce(topic, key=b"cam-1", value=b"later frame %d" % sent)
            producer.poll(0)
            sent += 1
            if _low_watermark(consumer, topic) > 0:
                deleted_after_s = time.monotonic() - written
                break
            time.sleep(0.1)
        assert producer.flush(10) == 0
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    finally:
        consumer.close()

    assert deleted_after_s is not None, (
        f"the first record is still there {WAIT_S:.0f}s after it was written "
        f"(retention {RETENTION_MS} ms); offsets {low}..{high}"
    )
    assert 0 < low < high, "the newer records are kept"
    segment_s = int(wanted["segment.ms"]) / 1000
    print(
        f"retention_s={RETENTION_MS / 1000} segment_s={segment_s} check_interval_s=1 "
        f"first_record_deleted_after_s={deleted_after_s:.1f} "
        f"bound_s={RETENTION_MS / 1000 + segment_s + 1:.1f} records_sent={sent}"
    )

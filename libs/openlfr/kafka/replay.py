"""Reading a topic back from its start to its current end (state restore at start-up)."""

from __future__ import annotations

import logging
import time
import uuid
from typing import TypeVar

from confluent_kafka import Consumer, TopicPartition
from pydantic import BaseModel

from openlfr.kafka.admin import BrokerUnavailableError
from openlfr.kafka.clients import LIBRDKAFKA_LOGGER
from openlfr.kafka.security import Bootstrap, client_config
from openlfr.messages.codec import DecodeError, decode

logger = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

#: Replays read partitions they assign themselves and commit nothing; the group id is only a name
#: (librdkafka wants one), unique per replay (``openlfr.kafka.acls`` grants the prefix).
REPLAY_GROUP_PREFIX = "openlfr-replay-"


def read_topic(bootstrap: Bootstrap, topic: str, model: type[M], *, timeout_s: float = 60.0) -> list[M]:
    """Every valid ``model`` on ``topic`` up to the end it had when called (invalid ones are
    logged and skipped: they were dead-lettered when first published, if ever).

    Raises:
        BrokerUnavailableError: the topic's metadata or its end offsets cannot be had in time.
    """
    consumer = Consumer({
        **client_config(bootstrap),
        "group.id": f"{REPLAY_GROUP_PREFIX}{uuid.uuid4().hex[:12]}",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "logger": LIBRDKAFKA_LOGGER,
    })
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            return []
        ends: dict[int, int] = {}
        starts: list[TopicPartition] = []
        for partition in info.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                ends[partition] = high
                starts.append(TopicPartition(topic, partition, low))
        if not starts:
            return []
        consumer.assign(starts)
        out: list[M] = []
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                if msg.error() is not None:
                    continue
                partition, offset = msg.partition(), msg.offset()
                if partition in ends and offset < ends[partition]:
                    try:
                        out.append(decode(msg.value(), model))
                    except DecodeError as exc:
                        logger.warning('replay skipped topic="%s" offset="%d" reason="%s"', topic, offset, exc)
                if partition in ends and offset >= ends[partition] - 1:
                    del ends[partition]
        if ends:
            raise BrokerUnavailableError(f"replay of {topic} did not reach the end within {timeout_s}s: {ends}")
        return out
    finally:
        consumer.close()


def group_caught_up(bootstrap: Bootstrap, group: str, topic: str, *, timeout_s: float = 10.0) -> bool:
    """Whether ``group`` has committed every partition of ``topic`` up to its current end.

    The runner commits an input only after its outputs are acknowledged, so a group caught up
    with its input has published everything it will for what the topic held when asked. Only
    reads the group's offsets: it never joins the group.
    """
    consumer = Consumer({**client_config(bootstrap), "group.id": group, "enable.auto.commit": False,
                         "logger": LIBRDKAFKA_LOGGER})
    try:
        info = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if info is None or info.error is not None:
            return False
        partitions = [TopicPartition(topic, p) for p in info.partitions]
        committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=timeout_s)}
        for tp in partitions:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
            if high > low and committed.get(tp.partition, -1) < high:
                return False
        return True
    finally:
        consumer.close()

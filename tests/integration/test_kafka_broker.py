"""The real Kafka broker of the test tier, with confluent-kafka and openlfr.kafka.admin.

The session broker comes from ``tests/integration/conftest.py``; the tests that stop a broker or
break one start their own in ``tmp_path``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from openlfr.kafka.admin import (
    BrokerUnavailableError,
    TopicMismatchError,
    ensure_topics,
    wait_for_broker,
)
from openlfr.testing.kafka_broker import KafkaBroker, KafkaBrokerError

pytestmark = pytest.mark.integration

KEYS = [f"cam-{i}" for i in range(10)]
MESSAGES = 100


def _consumer(bootstrap: str, group: str) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
        }
    )


def _produce(bootstrap: str, topic: str, records: list[tuple[str, str]]) -> list[Message]:
    """Send (key, value) records, wait for every acknowledgement, return the delivered ones."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    delivered: list[Message] = []
    errors: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            errors.append(error)
        else:
            delivered.append(message)

    for key, value in records:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    remaining = producer.flush(30)
    assert remaining == 0, f"{remaining} messages not acknowledged within 30 s"
    assert not errors, errors
    return delivered


def _consume_and_commit(consumer: Consumer, *, expected: int, timeout_s: float) -> list[Message]:
    """Consume until ``expected`` messages came, committing after each handled batch."""
    received: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(received) < expected and time.monotonic() < deadline:
        batch = consumer.consume(num_messages=50, timeout=0.5)
        for message in batch:
            assert message.error() is None, message.error()
        received.extend(batch)  # the "handling" of this test
        if batch:
            consumer.commit(asynchronous=False)
    return received


def _wait_for_assignment(consumer: Consumer, timeout_s: float) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = consumer.poll(0.2)
        assert message is None, "no message was expected before the assignment was checked"
        if consumer.assignment():
            return consumer.assignment()
    pytest.fail(f"the consumer had no partitions assigned after {timeout_s} s")


def test_produce_consume_commit_keeps_per_key_order_and_restarts_after_commit(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str]
) -> None:
    topic = unique_topic("frames")
    group = unique_topic("group")
    assert ensure_topics(kafka_broker.bootstrap, {topic: 3}) == [topic]

    # Message i is the (i // 10)-th of key i % 10: "cam-3:0", "cam-3:1", ...
    keys = [KEYS[i % len(KEYS)] for i in range(MESSAGES)]
    records = [(key, f"{key}:{i // len(KEYS)}") for i, key in enumerate(keys)]
    delivered = _produce(kafka_broker.bootstrap, topic, records)
    assert len(delivered) == MESSAGES
    assert {m.partition() for m in delivered} == {0, 1, 2}, "10 keys should cover 3 partitions"

    consumer = _consumer(kafka_broker.bootstrap, group)
    consumer.subscribe([topic])
    try:
        received = _consume_and_commit(consumer, expected=MESSAGES, timeout_s=30)
    finally:
        consumer.close()
    assert len(received) == MESSAGES

    sequences: dict[str, list[int]] = defaultdict(list)
    partitions: dict[str, set[int]] = defaultdict(set)
    for message in received:
        raw_key, raw_value, partition = message.key(), message.value(), message.partition()
        assert raw_key is not None and raw_value is not None and partition is not None
        key = raw_key.decode()
        value_key, sequence = raw_value.decode().split(":")
        assert value_key == key
        sequences[key].append(int(sequence))
        partitions[key].add(partition)
    assert sorted(sequences) == sorted(KEYS)
    for key in KEYS:
        assert sequences[key] == list(range(MESSAGES // len(KEYS))), key
        assert len(partitions[key]) == 1, f"{key} spread over partitions {partitions[key]}"

    # A restarted member of the same group starts after the committed offsets: nothing old.
    restarted = _consumer(kafka_broker.bootstrap, group)
    restarted.subscribe([topic])
    try:
        assigned = _wait_for_assignment(restarted, timeout_s=20)
        committed = restarted.committed(assigned, timeout=10)
        assert sum(tp.offset for tp in committed) == MESSAGES
        assert restarted.consume(num_messages=10, timeout=2.0) == []
        # ...but it does read what comes next, so the silence above is not a dead consumer.
        _produce(kafka_broker.bootstrap, topic, [("cam-0", "cam-0:10")])
        fresh = _consume_and_commit(restarted, expected=1, timeout_s=15)
    finally:
        restarted.close()
    assert [(m.key(), m.value()) for m in fresh] == [(b"cam-0", b"cam-0:10")]


def test_ensure_topics_is_idempotent(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str]
) -> None:
    frames, alerts = unique_topic("frames"), unique_topic("alerts")
    wanted = {frames: 3, alerts: 1}

    assert ensure_topics(kafka_broker.bootstrap, wanted, retention_ms=60_000) == sorted(wanted)
    assert ensure_topics(kafka_broker.bootstrap, wanted, retention_ms=60_000) == []
    added = unique_topic("added")
    assert ensure_topics(kafka_broker.bootstrap, {frames: 3, added: 2}) == [added]

    metadata = wait_for_broker(kafka_broker.bootstrap, timeout_s=10)
    assert {name: len(metadata.topics[name].partitions) for name in wanted} == wanted
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap})
    resource = ConfigResource(ResourceType.TOPIC, frames)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["retention.ms"].value == "60000"

    with pytest.raises(TopicMismatchError, match="has 3 partitions, expected 6"):
        ensure_topics(kafka_broker.bootstrap, {frames: 6})


@pytest.mark.parametrize(
    ("topics", "options", "message"),
    [
        ({"bad name": 1}, {}, "not a legal Kafka topic name"),
        ({"..": 1}, {}, "not a legal Kafka topic name"),
        ({"ok": 0}, {}, "partitions=0"),
        ({"ok": 1}, {"retention_ms": 0}, "retention_ms=0"),
        ({"ok": 1}, {"replication_factor": 0}, "replication_factor=0"),
        ({"ok": 1}, {"timeout_s": 0}, "timeout_s=0"),
    ],
)
def test_ensure_topics_refuses_bad_input_before_any_request(
    topics: dict[str, int], options: dict[str, int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        ensure_topics("127.0.0.1:1", topics, **options)


def test_wait_for_broker_raises_within_its_timeout_once_the_broker_stopped(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    broker = KafkaBroker(work_dir=tmp_path, libs_dir=kafka_broker.libs_dir)
    with broker:
        assert broker.startup_s is not None and broker.startup_s < 30
        wait_for_broker(broker.bootstrap, timeout_s=10)
    assert not broker.is_alive()

    started = time.monotonic()
    with pytest.raises(BrokerUnavailableError, match=broker.bootstrap):
        wait_for_broker(broker.bootstrap, timeout_s=2.0)
    assert 1.9 <= time.monotonic() - started < 4.0


def test_broker_that_dies_at_start_raises_with_its_log(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        broker = KafkaBroker(work_dir=tmp_path, libs_dir=kafka_broker.libs_dir, port=port)
        with pytest.raises(KafkaBrokerError, match=r"(?s)exited with code .*log tail"):
            broker.start()
    assert not broker.is_alive()
    assert "Address already in use" in broker.log_tail(200)


def test_cli_prints_the_bootstrap_address_and_stops_on_sigterm(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    command = [
        sys.executable,
        "-m",
        "openlfr.testing.kafka_broker",
        "--work-dir",
        str(tmp_path),
        "--libs-dir",
        str(kafka_broker.libs_dir),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        bootstrap = process.stdout.readline().strip()
        assert bootstrap.startswith("127.0.0.1:"), process.stderr.read() if process.stderr else ""
        wait_for_broker(bootstrap, timeout_s=10)
        process.terminate()
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "data" / "meta.properties").is_file()
    assert "Kafka Server started" in (tmp_path / "broker.log").read_text()

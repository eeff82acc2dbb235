"""The Kafka loop against the real broker: outputs, dead letters, retries, holds, crashes, stops.

In-process tests run ``StageRunner`` in a thread with the echo stage
(``openlfr.testing.echo_stage``); the crash and stop tests run the echo stage as a service in a
subprocess (``python -m openlfr.testing.echo_stage``) and kill it. The echo stage tags each
output with the input's partition and offset, so the outputs alone say what was processed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from prometheus_client import CollectorRegistry
from prometheus_client import Counter as PromCounter

from openlfr import paths
from openlfr.subprocesses import free_port
from openlfr.kafka.admin import ensure_topics
from openlfr.kafka.runner import Backoff, Publisher, StageRunner
from openlfr.messages.codec import decode, encode
from openlfr.messages.models import DeadLetter, Frame
from openlfr.messages.topics import DEADLETTER, FACES, FRAMES, TopicSpec
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing
from openlfr.service.http import make_health_app, run_http_in_thread
from openlfr.testing.echo_stage import ECHO_OUT, EchoStage
from openlfr.testing.kafka_broker import KafkaBroker

pytestmark = pytest.mark.integration

CAMERAS = [f"cam-{i}" for i in range(10)]
JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"


# -- helpers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Topics:
    frames: str
    out: str
    dlq: str
    group: str

    def names(self) -> dict[TopicSpec, str]:
        return {FRAMES: self.frames, ECHO_OUT: self.out, DEADLETTER: self.dlq}

    def env(self) -> dict[str, str]:
        """``OPENLFR_TOPICS`` for a service."""
        return {spec.name: name for spec, name in self.names().items()}


def _topics(
    broker: KafkaBroker, unique_topic: Callable[[str], str], *, frames_partitions: int = 3
) -> Topics:
    topics = Topics(
        frames=unique_topic("frames"), out=unique_topic("out"), dlq=unique_topic("dlq"),
        group=unique_topic("group"),
    )
    ensure_topics(
        broker.bootstrap,
        {topics.frames: frames_partitions, topics.out: ECHO_OUT.partitions, topics.dlq: 1},
    )
    return topics


def _frame(frame_id: str, camera: str, **extra: object) -> Frame:
    now = time.time()
    return Frame(
        camera_id=camera, frame_id=frame_id, capture_ts=now, trace_id=uuid.uuid4().hex,
        width=4, height=4, jpeg=JPEG, ingest_ts=now, **extra,
    )


def _good(n: int, prefix: str = "f") -> list[tuple[str, bytes]]:
    return [(CAMERAS[i % len(CAMERAS)], encode(_frame(f"{prefix}-{i}", CAMERAS[i % len(CAMERAS)])))
            for i in range(n)]


def _produce(
    bootstrap: str, topic: str, records: Sequence[tuple[str | None, bytes | None]]
) -> list[tuple[int, int]]:
    """Send (key, value) records in order; their (partition, offset), all acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    where: dict[int, tuple[int, int]] = {}
    errors: list[KafkaError] = []
    for i, (key, value) in enumerate(records):
        def report(error: KafkaError | None, message: KafkaMessage, i: int = i) -> None:
            if error is not None:
                errors.append(error)
            else:
                where[i] = (message.partition(), message.offset())

        producer.produce(topic, key=key, value=value, on_delivery=report)
    assert producer.flush(30) == 0 and not errors, errors
    return [where[i] for i in range(len(records))]


class Reader:
    """Reads a whole topic from the beginning without a group (assign, no commits)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        })
        partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.messages: list[KafkaMessage] = []
        self.closed = False

    def read(self, *, until: int, timeout_s: float) -> list[KafkaMessage]:
        """Read until ``until`` messages in all came, or the time is up."""
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < until and time.monotonic() < deadline:
            for message in self.consumer.consume(num_messages=500, timeout=0.2):
                if message.error() is None:
                    self.messages.append(message)
        return self.messages

    def read_all(self, timeout_s: float = 15) -> list[KafkaMessage]:
        """Everything up to the topic's present end."""
        return self.read(until=sum(_high_watermarks(self.consumer, self.topic).values()),
                         timeout_s=timeout_s)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.consumer.close()


def _high_watermarks(consumer: Consumer, topic: str) -> dict[int, int]:
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in partitions}


def _committed(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets of ``topic`` (partitions without a commit left out)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found if tp.offset >= 0}


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """High watermarks of the non-empty partitions of ``topic``."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "watermarks"})
    try:
        return {p: high for p, high in _high_watermarks(consumer, topic).items() if high > 0}
    finally:
        consumer.close()


def _source(output: KafkaMessage) -> tuple[str, int, int]:
    """(input frame id, input partition, input offset) of an echo output."""
    frame = decode(output.value(), Frame)
    frame_id, where = frame.frame_id.rsplit("@", 1)
    partition, offset = where.split(".")
    return frame_id, int(partition), int(offset)


@pytest.fixture
def reader(kafka_broker: KafkaBroker) -> Iterator[Callable[[str], Reader]]:
    """Opens readers of topics; closes them after the test whatever happened."""
    opened: list[Reader] = []

    def open_reader(topic: str) -> Reader:
        opened.append(Reader(kafka_broker.bootstrap, topic))
        return opened[-1]

    yield open_reader
    for one in opened:
        one.close()


@pytest.fixture
def run_in_thread() -> Iterator[Callable[[StageRunner], threading.Thread]]:
    """Starts runners in threads; stops and joins them after the test whatever happened."""
    started: list[tuple[StageRunner, threading.Thread]] = []

    def start(runner: StageRunner) -> threading.Thread:
        thread = threading.Thread(target=runner.run, name=f"runner-{runner.group_id}", daemon=True)
        thread.start()
        started.append((runner, thread))
        return thread

    yield start
    for runner, thread in started:
        runner.request_stop()
        thread.join(20)


def _runner(
    stage: EchoStage, broker: KafkaBroker, topics: Topics, **options: object
) -> StageRunner:
    options.setdefault("registry", CollectorRegistry())
    options.setdefault("poll_timeout_s", 0.2)
    options.setdefault("topic_names", topics.names())
    return StageRunner(
        stage, bootstrap=broker.bootstrap, group_id=topics.group, session_timeout_s=6, **options,
    )


def _stop(runner: StageRunner, thread: threading.Thread) -> float:
    started = time.monotonic()
    runner.request_stop()
    thread.join(15)
    assert not thread.is_alive(), "the runner did not stop within 15 s"
    return time.monotonic() - started


def _sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


# -- in-process -------------------------------------------------------------------------------


def test_every_input_gives_exactly_one_output_and_offsets_are_committed(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader],
) -> None:
    topics = _topics(kafka_broker, unique_topic)
    records = _good(60)
    _produce(kafka_broker.bootstrap, topics.frames, records)
    stage = EchoStage()
    registry = CollectorRegistry()
    runner = _runner(
        stage, kafka_broker, topics, batch_size=16, registry=registry, lag_interval_s=0
    )
    thread = run_in_thread(runner)

    output = reader(topics.out)
    outputs = output.read(until=60, timeout_s=30)
    assert len(outputs) == 60
    assert runner.assigned_partitions() == frozenset({0, 1, 2})
    lags: list[float | None] = []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lags = [registry.get_sample_value(
            "openlfr_stage_consumer_lag_messages",
            {"stage": "echo", "topic": topics.frames, "partition": str(p)},
        ) for p in range(3)]
        if lags == [0, 0, 0]:
            break
        time.sleep(0.1)
    assert lags == [0, 0, 0]
    stop_s = _stop(runner, thread)
    outputs = output.read_all()

    assert len(outputs) == 60, "a second output of some input"
    assert sorted(_source(m)[0] for m in outputs) == sorted(f"F-{i}" for i in range(60))
    for message in outputs:
        frame = decode(message.value(), Frame)
        headers = dict(message.headers())
        assert message.key() == frame.camera_id.encode() == headers["camera_id"]
        assert headers["trace_id"] == frame.trace_id.encode()
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == _end_offsets(
        kafka_broker.bootstrap, topics.frames
    )
    assert stage.closed and stop_s < 5
    assert _sample(registry, "openlfr_stage_messages_in_total",
                   stage="echo", topic=topics.frames) == 60
    assert _sample(registry, "openlfr_stage_messages_out_total",
                   stage="echo", topic=topics.out) == 60
    assert _sample(registry, "openlfr_stage_latency_seconds_count", stage="echo") == 60
    assert _sample(registry, "openlfr_stage_batch_size_messages_sum", stage="echo") == 60


def test_malformed_and_rejected_inputs_go_to_the_dead_letter_topic_and_good_ones_flow(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader],
) -> None:
    topics = _topics(kafka_broker, unique_topic)
    extra_field = json.loads(encode(_frame("x-1", "cam-1")))
    extra_field["who"] = "someone"
    bad = [
        ("cam-1", b"not json", "invalid Frame"),
        ("cam-2", b"", "empty value"),
        (None, None, "empty value"),
        ("cam-3", b'{"v": 1, "kind": "frame"}', "camera_id: Field required"),
        ("cam-4", json.dumps(extra_field).encode(), "who: Extra inputs are not permitted"),
        ("cam-5", encode(_frame("reject-1", "cam-5")), "rejected by echo: reject-1"),
    ]
    good = _good(8)
    records = [*good[:4], *[(k, v) for k, v, _ in bad], *good[4:]]
    where = _produce(kafka_broker.bootstrap, topics.frames, records)
    stage = EchoStage()
    registry = CollectorRegistry()
    thread = run_in_thread(runner := _runner(stage, kafka_broker, topics, batch_size=64,
                                             registry=registry))

    dlq = reader(topics.dlq)
    letters = [decode(m.value(), DeadLetter) for m in dlq.read(until=len(bad), timeout_s=30)]
    out = reader(topics.out)
    outputs = out.read(until=len(good), timeout_s=30)
    _stop(runner, thread)
    dlq.close()
    out.close()

    assert sorted(_source(m)[0] for m in outputs) == sorted(f"F-{i}" for i in range(8))
    assert len(letters) == len(bad)
    by_origin = {(letter.partition, letter.offset): letter for letter in letters}
    for (key, value, reason), origin in zip(bad, where[4:10], strict=True):
        letter = by_origin[origin]
        assert reason in letter.reason
        assert (letter.stage, letter.topic) == ("echo", topics.frames)
        # Frames carry faces: the dead letter keeps a reference to the value, never its bytes.
        assert (letter.payload, letter.value) == ("omitted", b"")
        assert letter.value_bytes == len(value or b"")
        assert letter.value_sha256 == hashlib.sha256(value or b"").hexdigest()
        assert letter.key == (key.encode() if key else None)
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == _end_offsets(
        kafka_broker.bootstrap, topics.frames
    )
    assert _sample(registry, "openlfr_stage_messages_dead_lettered_total", stage="echo",
                   reason="decode") == 5
    assert _sample(registry, "openlfr_stage_messages_dead_lettered_total", stage="echo",
                   reason="rejected") == 1


def test_handler_crash_dead_letters_the_batch_commits_and_the_stage_stays_up(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader],
) -> None:
    topics = _topics(kafka_broker, unique_topic, frames_partitions=1)
    records = [*_good(3, "a"), ("cam-1", encode(_frame("boom-1", "cam-1"))), *_good(3, "b")]
    _produce(kafka_broker.bootstrap, topics.frames, records)
    registry = CollectorRegistry()
    runner = _runner(EchoStage(), kafka_broker, topics, batch_size=1, registry=registry)
    thread = run_in_thread(runner)

    dlq = reader(topics.dlq)
    letters = [decode(m.value(), DeadLetter) for m in dlq.read(until=1, timeout_s=30)]
    out = reader(topics.out)
    outputs = out.read(until=6, timeout_s=30)
    _stop(runner, thread)
    dlq.close()
    out.close()

    assert [(x.offset, x.reason) for x in letters] == [
        (3, "handler error: RuntimeError: boom in frame boom-1")
    ]
    assert sorted(_source(m)[0] for m in outputs) == ["A-0", "A-1", "A-2", "B-0", "B-1", "B-2"]
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == {0: 7}
    assert _sample(registry, "openlfr_stage_messages_failed_total", stage="echo",
                   reason="handler_error") == 1
    assert _sample(registry, "openlfr_stage_batches_total", stage="echo", outcome="ok") == 6


class _ProbingEcho(EchoStage):
    """Echo that, each time its backend is down, looks at what the group has committed."""

    def __init__(self, probe: Callable[[], dict[int, int]], **options: object) -> None:
        super().__init__(**options)
        self.probe = probe
        self.committed_while_down: list[dict[int, int]] = []
        self.first_offsets: list[dict[int, int]] = []

    def handle(self, batch: Sequence[Incoming[Frame]], *, now: float) -> BatchResult:
        firsts: dict[int, int] = {}
        for incoming in batch:
            firsts.setdefault(incoming.partition, incoming.offset)
        self.first_offsets.append(firsts)
        if self.failures < self.fail_first:
            self.committed_while_down.append(self.probe())
        return super().handle(batch, now=now)


def test_backend_unavailable_is_retried_without_loss_and_without_commits_meanwhile(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader],
) -> None:
    topics = _topics(kafka_broker, unique_topic)
    _produce(kafka_broker.bootstrap, topics.frames, _good(30))
    stage = _ProbingEcho(
        lambda: _committed(kafka_broker.bootstrap, topics.group, topics.frames), fail_first=3
    )
    registry = CollectorRegistry()
    runner = _runner(stage, kafka_broker, topics, batch_size=100, registry=registry,
                     backoff=Backoff(initial_s=0.1, max_s=0.3))
    thread = run_in_thread(runner)

    out = reader(topics.out)
    out.read(until=30, timeout_s=30)
    _stop(runner, thread)
    outputs = out.read_all()
    out.close()

    assert stage.failures == 3
    assert stage.committed_while_down == [{}, {}, {}]
    # After each failure, the partitions of the failed batch are read again from its start.
    for k, failed in enumerate(stage.first_offsets[:3]):
        for partition, offset in failed.items():
            later = next(f for f in stage.first_offsets[k + 1 :] if partition in f)
            assert later[partition] == offset, (k, partition, stage.first_offsets)
    assert len(outputs) == 30
    assert Counter(_source(m)[0] for m in outputs) == Counter(f"F-{i}" for i in range(30))
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == _end_offsets(
        kafka_broker.bootstrap, topics.frames
    )
    assert _sample(registry, "openlfr_stage_backend_retries_total", stage="echo",
                   reason="backend_unavailable") == 3


def test_a_stop_during_backoff_returns_at_once_and_commits_nothing(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
) -> None:
    topics = _topics(kafka_broker, unique_topic, frames_partitions=1)
    _produce(kafka_broker.bootstrap, topics.frames, _good(3))
    stage = EchoStage(fail_first=1000)
    runner = _runner(stage, kafka_broker, topics, backoff=Backoff(initial_s=20, max_s=20))
    thread = run_in_thread(runner)
    deadline = time.monotonic() + 20
    while stage.failures == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stage.failures == 1
    assert _stop(runner, thread) < 2
    assert stage.closed
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == {}


def test_failed_deliveries_are_retried_and_nothing_is_committed_until_acknowledged(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader],
) -> None:
    # A real fault: the output topic does not exist yet (the broker creates none on its own),
    # so every delivery times out until the test creates it.
    topics = Topics(frames=unique_topic("frames"), out=unique_topic("out"),
                    dlq=unique_topic("dlq"), group=unique_topic("group"))
    ensure_topics(kafka_broker.bootstrap, {topics.frames: 1, topics.dlq: 1})
    _produce(kafka_broker.bootstrap, topics.frames, _good(5))
    registry = CollectorRegistry()
    runner = _runner(EchoStage(), kafka_broker, topics, batch_size=10, registry=registry,
                     flush_timeout_s=1.0, backoff=Backoff(initial_s=0.1, max_s=0.2))
    thread = run_in_thread(runner)

    deadline = time.monotonic() + 20
    while _sample(registry, "openlfr_stage_backend_retries_total", stage="echo",
                  reason="delivery") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _sample(registry, "openlfr_stage_backend_retries_total", stage="echo",
                   reason="delivery") >= 2
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == {}

    ensure_topics(kafka_broker.bootstrap, {topics.out: ECHO_OUT.partitions})
    out = reader(topics.out)
    outputs = out.read(until=5, timeout_s=30)
    _stop(runner, thread)

    assert {_source(m)[0] for m in outputs} == {f"F-{i}" for i in range(5)}
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == {0: 5}
    assert _sample(registry, "openlfr_stage_messages_failed_total", stage="echo",
                   reason="delivery") >= 10


# -- no single message stalls the stage ----------------------------------------------------------

#: An input topic without faces (unlike frames): its dead letters keep the value's first bytes.
PLAIN_IN = TopicSpec("openlfr.test.echo-in.v1", 3, 3_600_000, "echo input without faces (tests)")


class _PlainEcho(EchoStage):
    """The echo stage reading a topic that carries no faces."""

    input_topic = PLAIN_IN


class _FacesEcho(EchoStage):
    """The echo stage in embed's place: its input is the faces topic (chips)."""

    input_topic = FACES


@pytest.mark.parametrize(
    ("stage_cls", "payload", "kept"),
    [
        pytest.param(EchoStage, "omitted", 0, id="frames-metadata-only"),
        pytest.param(_FacesEcho, "omitted", 0, id="faces-metadata-only"),
        pytest.param(_PlainEcho, "truncated", 4096, id="plain-truncated"),
    ],
)
def test_a_900_kb_undecodable_message_is_dead_lettered_by_reference_and_the_stage_goes_on(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader], stage_cls: type[EchoStage], payload: str, kept: int,
) -> None:
    # Issue 11, failure 2: the whole value in a dead letter (base64, 1.2 MB) was over the broker's
    # 1 MB limit, so the runner retried the batch for ever with its partitions paused.
    topics = _topics(kafka_broker, unique_topic, frames_partitions=1)
    junk = os.urandom(900 * 1024)
    good = _good(5)
    where = _produce(kafka_broker.bootstrap, topics.frames, [*good[:2], ("cam-9", junk), *good[2:]])
    registry = CollectorRegistry()
    names = {**topics.names(), stage_cls.input_topic: topics.frames}
    runner = _runner(stage_cls(), kafka_broker, topics, batch_size=16, registry=registry,
                     topic_names=names, deadletter_payload_bytes=4096,
                     backoff=Backoff(initial_s=0.1, max_s=0.5))
    thread = run_in_thread(runner)

    dlq = reader(topics.dlq)
    letters = [decode(m.value(), DeadLetter) for m in dlq.read(until=1, timeout_s=30)]
    assert len(letters) == 1, "no dead letter: the stage is stuck on the large message"
    deadline = time.monotonic() + 30
    while (_committed(kafka_broker.bootstrap, topics.group, topics.frames).get(0) != 6
           and time.monotonic() < deadline):
        time.sleep(0.2)
    outputs = reader(topics.out).read(until=5, timeout_s=30)
    _stop(runner, thread)

    letter = letters[0]
    assert (letter.v, letter.topic, letter.partition, letter.offset) == (2, topics.frames, *where[2])
    assert letter.key == b"cam-9" and "invalid Frame" in letter.reason
    assert (letter.payload, letter.value) == (payload, junk[:kept])
    assert letter.value_bytes == len(junk)
    assert letter.value_sha256 == hashlib.sha256(junk).hexdigest()
    assert len(dlq.messages[0].value()) < 1_000_000
    assert {_source(m)[0] for m in outputs} == {f"F-{i}" for i in range(5)}
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == {0: 6}
    assert _sample(registry, "openlfr_stage_messages_dead_lettered_total", stage="echo",
                   reason="decode") == 1


def test_an_output_the_broker_refuses_for_good_is_dead_lettered_after_bounded_retries(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader],
) -> None:
    # Issue 11, failure 2 (any permanent delivery failure): the output topic takes records of
    # at most 20 kB; one input's output is 60 kB of incompressible bytes. Before, the runner
    # retried that batch for ever and nothing after it was processed.
    topics = Topics(frames=unique_topic("frames"), out=unique_topic("out"),
                    dlq=unique_topic("dlq"), group=unique_topic("group"))
    ensure_topics(kafka_broker.bootstrap, {topics.frames: 1, topics.dlq: 1})
    ensure_topics(kafka_broker.bootstrap, {topics.out: ECHO_OUT.partitions},
                  config={"max.message.bytes": "20000"})
    big = _frame("big-1", "cam-7").model_copy(update={"jpeg": os.urandom(60_000)})
    good = _good(6)
    where = _produce(kafka_broker.bootstrap, topics.frames,
                     [*good[:3], ("cam-7", encode(big)), *good[3:]])
    registry = CollectorRegistry()
    runner = _runner(EchoStage(), kafka_broker, topics, batch_size=16, registry=registry,
                     delivery_max_retries=2, backoff=Backoff(initial_s=0.05, max_s=0.2))
    thread = run_in_thread(runner)

    dlq = reader(topics.dlq)
    letters = [decode(m.value(), DeadLetter) for m in dlq.read(until=1, timeout_s=30)]
    assert len(letters) == 1, "no dead letter: the stage retries the refused output for ever"
    out = reader(topics.out)
    deadline = time.monotonic() + 30
    while ({_source(m)[0] for m in out.read(until=len(out.messages) + 1, timeout_s=0.5)}
           != {f"F-{i}" for i in range(6)} and time.monotonic() < deadline):
        pass
    while (_committed(kafka_broker.bootstrap, topics.group, topics.frames).get(0) != 7
           and time.monotonic() < deadline):
        time.sleep(0.2)
    _stop(runner, thread)

    letter = letters[0]
    assert (letter.topic, letter.partition, letter.offset) == (topics.frames, *where[3])
    assert letter.reason.startswith("delivery failed after 3 attempts: ")
    assert "MSG_SIZE_TOO_LARGE" in letter.reason and topics.out in letter.reason
    assert (letter.payload, letter.value) == ("omitted", b"")  # a frame: never its image
    assert {_source(m)[0] for m in out.messages} == {f"F-{i}" for i in range(6)}
    assert "BIG-1" not in {_source(m)[0] for m in out.messages}
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == {0: 7}
    assert _sample(registry, "openlfr_stage_messages_dead_lettered_total", stage="echo",
                   reason="delivery") == 1
    # The refused input alone was tried 1 + 2 times, after its batch was read again input by
    # input.
    assert _sample(registry, "openlfr_stage_backend_retries_total", stage="echo",
                   reason="delivery_permanent") == 3


def test_publisher_delivers_and_drops_when_its_queue_is_full(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str],
    reader: Callable[[str], Reader],
) -> None:
    topic = unique_topic("frames")
    ensure_topics(kafka_broker.bootstrap, {topic: 3})
    registry = CollectorRegistry()
    publisher = Publisher(bootstrap=kafka_broker.bootstrap, topic_names={FRAMES: topic},
                          registry=registry)
    frames = [_frame(f"p-{i}", CAMERAS[i % 10]) for i in range(20)]
    assert all(publisher.publish(Outgoing(FRAMES, f.camera_id, f)) for f in frames)
    assert publisher.flush(10) == 0
    assert (publisher.delivered, publisher.failed, publisher.dropped) == (20, 0, 0)
    got = reader(topic).read(until=20, timeout_s=20)
    assert sorted(decode(m.value(), Frame).frame_id for m in got) == sorted(
        f.frame_id for f in frames
    )
    assert _sample(registry, "openlfr_publisher_messages_total",
                   topic=topic, outcome="delivered") == 20

    # No broker answers here, so nothing leaves the two-message queue: the rest is dropped at
    # once, never waited for.
    stuck = Publisher(bootstrap=f"127.0.0.1:{free_port()}", max_queued_messages=2,
                      delivery_timeout_s=1.0, registry=registry)
    started = time.monotonic()
    sent = [stuck.publish(Outgoing(FRAMES, f.camera_id, f)) for f in frames[:5]]
    assert time.monotonic() - started < 1.0
    assert sent == [True, True, False, False, False]
    assert stuck.dropped == 3
    assert _sample(registry, "openlfr_publisher_messages_total", topic=FRAMES.name,
                   outcome="dropped_queue_full") == 3
    assert stuck.flush(5) == 0 and stuck.failed == 2


def test_a_second_replica_takes_partitions_over_without_loss(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader],
) -> None:
    topics = _topics(kafka_broker, unique_topic)
    total = 300
    _produce(kafka_broker.bootstrap, topics.frames, _good(total))
    first, second = EchoStage(delay_s=0.05), EchoStage(delay_s=0.05)
    # Frequent heartbeats: the first replica learns of the rebalance within half a second.
    fast = {"heartbeat.interval.ms": 500}
    runner_a = _runner(first, kafka_broker, topics, batch_size=5, consumer_config=fast)
    thread_a = run_in_thread(runner_a)
    out = reader(topics.out)
    assert len(out.read(until=20, timeout_s=30)) >= 20
    runner_b = _runner(second, kafka_broker, topics, batch_size=5, consumer_config=fast)
    thread_b = run_in_thread(runner_b)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (
        runner_a.assigned_partitions() and runner_b.assigned_partitions()
    ):
        time.sleep(0.05)
    shared = (runner_a.assigned_partitions(), runner_b.assigned_partitions())
    while time.monotonic() < deadline and len({_source(m)[0] for m in out.messages}) < total:
        out.read(until=len(out.messages) + 1, timeout_s=0.5)
    _stop(runner_a, thread_a)
    _stop(runner_b, thread_b)
    outputs = out.read_all()

    assert shared[0] and shared[1] and not shared[0] & shared[1], shared
    assert {_source(m)[0] for m in outputs} == {f"F-{i}" for i in range(total)}
    assert first.seen and second.seen
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == _end_offsets(
        kafka_broker.bootstrap, topics.frames
    )


def test_a_held_offset_is_not_committed_and_a_restart_resumes_from_it(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], run_in_thread,
    reader: Callable[[str], Reader],
) -> None:
    topics = _topics(kafka_broker, unique_topic, frames_partitions=1)
    _produce(kafka_broker.bootstrap, topics.frames, _good(10))
    first = EchoStage(hold_frame_id="f-4")
    runner = _runner(first, kafka_broker, topics, batch_size=3)
    thread = run_in_thread(runner)
    out = reader(topics.out)
    assert len(out.read(until=10, timeout_s=30)) == 10
    _stop(runner, thread)
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == {0: 4}

    second = EchoStage()
    runner = _runner(second, kafka_broker, topics, batch_size=3)
    thread = run_in_thread(runner)
    outputs = out.read(until=16, timeout_s=30)
    _stop(runner, thread)
    out.close()

    assert second.seen[0] == (0, 4)
    assert sorted(_source(m)[2] for m in outputs[10:]) == [4, 5, 6, 7, 8, 9]
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == {0: 10}


def test_health_app_answers_each_check_and_503_while_one_fails() -> None:
    registry = CollectorRegistry()
    stage_ok = {"value": False}
    app = make_health_app(
        ready={
            "broker": lambda: (True, "ok"),
            "stage": lambda: (stage_ok["value"], "ok" if stage_ok["value"] else "triton down"),
            "broken": lambda: (True, "ok") if stage_ok["value"] else 1 / 0,
        },
        registry=registry,
    )
    PromCounter("openlfr_test_things_total", "Things.", registry=registry).inc(3)
    server = run_http_in_thread(app, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert _http(f"{base}/healthz")[0] == 200
        status, body = _http(f"{base}/readyz")
        assert status == 503
        assert json.loads(body) == {
            "ready": False,
            "checks": {
                "broker": {"ok": True, "reason": "ok"},
                "stage": {"ok": False, "reason": "triton down"},
                "broken": {"ok": False, "reason": "check raised ZeroDivisionError: division by zero"},
            },
        }
        stage_ok["value"] = True
        assert _http(f"{base}/readyz")[0] == 200
        status, metrics = _http(f"{base}/metrics")
        assert status == 200 and b"openlfr_test_things_total 3.0" in metrics
    finally:
        server.stop()
    assert not server.is_alive()


# -- as a service, in a subprocess --------------------------------------------------------------


class Service:
    """``python -m openlfr.testing.echo_stage`` with OPENLFR_* settings."""

    def __init__(self, log: Path, **settings: object) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENLFR_")}
        for name, value in settings.items():
            env[f"OPENLFR_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
        self.log = log
        with log.open("ab") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "openlfr.testing.echo_stage"],
                env=env, cwd=paths.REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the service did not exit within {timeout_s} s\n{self.log_tail()}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for service in started:
        service.kill()


def _http(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _service_settings(broker: KafkaBroker, topics: Topics, **extra: object) -> dict[str, object]:
    return {
        "bootstrap": broker.bootstrap, "group_id": topics.group, "topics": topics.env(),
        "session_timeout_s": "6", "poll_timeout_s": "0.2", "http_host": "127.0.0.1",
        "http_port": str(free_port()), "log_level": "INFO", **extra,
    }


def test_service_killed_mid_stream_loses_nothing_after_restart(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], services: list[Service],
    reader: Callable[[str], Reader], tmp_path: Path,
) -> None:
    topics = _topics(kafka_broker, unique_topic, frames_partitions=FRAMES.partitions)
    total = 400
    _produce(kafka_broker.bootstrap, topics.frames, _good(total))
    settings = _service_settings(kafka_broker, topics, batch_size="10", echo_delay_s="0.05")
    services.append(first := Service(tmp_path / "first.log", **settings))
    out = reader(topics.out)
    before = len(out.read(until=100, timeout_s=30))
    assert 100 <= before < total, f"{before} outputs before the kill\n{first.log_tail()}"
    first.kill()

    settings["echo_delay_s"] = "0"
    services.append(second := Service(tmp_path / "second.log", **settings))
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        seen = {_source(m)[0] for m in out.read(until=len(out.messages) + 1, timeout_s=0.5)}
        if len(seen) == total:
            break
    second.process.send_signal(signal.SIGTERM)
    assert second.wait(10) == 0, second.log_tail()
    outputs = out.read_all()
    out.close()

    counts = Counter(_source(m)[0] for m in outputs)
    assert set(counts) == {f"F-{i}" for i in range(total)}, second.log_tail()
    duplicates = sum(counts.values()) - total
    print(f"outputs={sum(counts.values())} inputs={total} replayed_after_sigkill={duplicates}")
    assert _committed(kafka_broker.bootstrap, topics.group, topics.frames) == _end_offsets(
        kafka_broker.bootstrap, topics.frames
    )


def test_service_answers_http_and_sigterm_commits_exactly_what_was_processed(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], services: list[Service],
    reader: Callable[[str], Reader], tmp_path: Path,
) -> None:
    topics = _topics(kafka_broker, unique_topic, frames_partitions=FRAMES.partitions)
    total = 300
    _produce(kafka_broker.bootstrap, topics.frames, _good(total))
    settings = _service_settings(kafka_broker, topics, batch_size="5", echo_delay_s="0.05")
    services.append(service := Service(tmp_path / "service.log", **settings))
    base = f"http://127.0.0.1:{settings['http_port']}"

    out = reader(topics.out)
    out.read(until=50, timeout_s=30)
    assert _http(f"{base}/healthz") == (200, b'{"status":"ok"}'), service.log_tail()
    status, body = _http(f"{base}/readyz")
    ready = json.loads(body)
    assert status == 200 and ready["ready"], ready
    assert set(ready["checks"]) == {"broker", "partitions", "progress", "stage"}
    status, metrics = _http(f"{base}/metrics")
    text = metrics.decode()
    assert status == 200
    assert f'openlfr_stage_messages_in_total{{stage="echo",topic="{topics.frames}"}}' in text
    assert 'openlfr_stage_handle_seconds_count{stage="echo"}' in text
    assert "openlfr_stage_consumer_lag_messages{" in text

    service.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = service.wait(10)
    stop_s = time.monotonic() - started
    assert code == 0, service.log_tail()
    assert stop_s < 5, f"stopping took {stop_s:.1f} s"
    outputs = out.read_all()
    out.close()

    assert 50 <= len(outputs) < total, "the stop should come mid-stream"
    processed: dict[int, int] = {}
    for message in outputs:
        _, partition, offset = _source(message)
        processed[partition] = max(processed.get(partition, 0), offset + 1)
    assert len(outputs) == len({_source(m) for m in outputs}), "an input processed twice"
    committed = _committed(kafka_broker.bootstrap, topics.group, topics.frames)
    assert committed == processed, service.log_tail()
    print(f"sigterm_stop_seconds={stop_s:.2f} processed={len(outputs)}/{total}")


def test_readyz_says_stalled_while_the_stage_cannot_make_progress_and_ready_again_after(
    kafka_broker: KafkaBroker, unique_topic: Callable[[str], str], services: list[Service],
    reader: Callable[[str], Reader], tmp_path: Path,
) -> None:
    # Issue 11, failure 2: while the stage retried one batch for ever, /readyz said ready.
    # Here its backend is down for its first 25 calls (about 5 s of retries) with input waiting.
    topics = _topics(kafka_broker, unique_topic, frames_partitions=FRAMES.partitions)
    _produce(kafka_broker.bootstrap, topics.frames, _good(5))
    settings = _service_settings(
        kafka_broker, topics, echo_fail_first="25", stall_after_s="1",
        backoff_initial_s="0.2", backoff_max_s="0.2",
    )
    services.append(service := Service(tmp_path / "service.log", **settings))
    base = f"http://127.0.0.1:{settings['http_port']}"

    stalled: dict[str, object] | None = None
    deadline = time.monotonic() + 30
    while stalled is None and time.monotonic() < deadline:
        try:
            status, body = _http(f"{base}/readyz")
        except OSError:
            time.sleep(0.1)
            continue
        checks = json.loads(body).get("checks", {})
        if status == 503 and not checks.get("progress", {"ok": True})["ok"]:
            stalled = checks
        time.sleep(0.1)
    assert stalled is not None, f"/readyz never said stalled\n{service.log_tail()}"
    assert stalled["progress"]["reason"].startswith("stalled: no batch finished for ")
    assert "backend_unavailable: echo backend down" in stalled["progress"]["reason"]
    assert stalled["partitions"]["ok"] and stalled["broker"]["ok"]
    metrics = _http(f"{base}/metrics")[1].decode()
    assert 'openlfr_stage_stalled{stage="echo"} 1.0' in metrics

    outputs = reader(topics.out).read(until=5, timeout_s=30)
    assert len(outputs) == 5, service.log_tail()
    deadline = time.monotonic() + 10
    while _http(f"{base}/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, body = _http(f"{base}/readyz")
    assert status == 200, body
    assert json.loads(body)["checks"]["progress"] == {"ok": True, "reason": "ok"}
    metrics = _http(f"{base}/metrics")[1].decode()
    assert 'openlfr_stage_stalled{stage="echo"} 0.0' in metrics
    assert 'openlfr_stage_progress_age_seconds{stage="echo"} 0.0' in metrics


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, "bad setting OPENLFR_BOOTSTRAP: Field required"),
        ({"bootstrap": "127.0.0.1:9092", "batch_size": "0"}, "bad setting OPENLFR_BATCH_SIZE:"),
        ({"bootstrap": "no-port"}, "bad setting OPENLFR_BOOTSTRAP: Value error, expected host"),
        ({"bootstrap": "h:1", "log_level": "LOUD"}, "bad setting OPENLFR_LOG_LEVEL:"),
        ({"bootstrap": "h:1", "delivery_max_retries": "-1"},
         "bad setting OPENLFR_DELIVERY_MAX_RETRIES:"),
        ({"bootstrap": "h:1", "stall_after_s": "0"}, "bad setting OPENLFR_STALL_AFTER_S:"),
        ({"bootstrap": "h:1", "max_message_bytes": "1000"},
         "bad setting OPENLFR_MAX_MESSAGE_BYTES:"),
        ({"bootstrap": "h:1", "deadletter_payload_bytes": "900000"},
         "bad setting OPENLFR_DEADLETTER_PAYLOAD_BYTES: Value error, 900000 does not fit"),
    ],
)
def test_service_with_a_bad_setting_exits_2_naming_it(
    settings: dict[str, str], expected: str, tmp_path: Path
) -> None:
    service = Service(tmp_path / "bad.log", **settings)
    assert service.wait(30) == 2
    assert expected in service.log.read_text(), service.log_tail()

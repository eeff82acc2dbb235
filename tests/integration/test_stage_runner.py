"""The Kafka loop against the real broker: outputs, dead letters, retries, holds, crashes, stops.

In-process tests run ``StageRunner`` in a thread with the echo stage
(``openlfr.testing.echo_stage``); the crash and stop tests (test_stage_runner_service.py) run it
as a service in a subprocess, and test_stage_runner_stalls.py holds those where one message could
stall a stage. This module's helpers and fixtures serve all three. The echo stage tags each
output with the input's partition and offset, so the outputs alone say what was processed.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from prometheus_client import CollectorRegistry

from openlfr.subprocesses import free_port
from openlfr.kafka.admin import ensure_topics
from openlfr.kafka.runner import Backoff, Publisher, StageRunner
from openlfr.messages.codec import decode, encode
from openlfr.messages.models import DeadLetter, Frame
from openlfr.messages.topics import DEADLETTER, FRAMES, TopicSpec
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing
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

"""No single message stalls a stage (the Kafka loop against the real broker): an undecodable
message too large to dead-letter whole is dead-lettered by reference, an output the broker
refuses for good is dead-lettered after bounded retries."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from openlfr.kafka.admin import ensure_topics
from openlfr.kafka.runner import Backoff
from openlfr.messages.codec import decode, encode
from openlfr.messages.models import DeadLetter, Frame
from openlfr.messages.topics import FACES, TopicSpec
from openlfr.testing.echo_stage import ECHO_OUT, EchoStage
from openlfr.testing.kafka_broker import KafkaBroker

from .test_stage_runner import (  # noqa: F401 - fixtures are used by name
    Topics,
    _topics,
    _frame,
    _good,
    _produce,
    Reader,
    _committed,
    _source,
    reader,
    run_in_thread,
    _runner,
    _stop,
    _sample,
)

pytestmark = pytest.mark.integration


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

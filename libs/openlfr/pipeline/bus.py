"""The in-process bus of the embedded mode: the same topics and contracts, no broker.

Every hop encodes and decodes the message exactly as over Kafka, so the embedded mode checks
the same contracts; a value that fails validation is dead-lettered the same way.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Sequence

from openlfr.kafka.deadletter import (
    DEFAULT_DEADLETTER_PAYLOAD_BYTES,
    dead_letter_record,
    keeps_payload,
)
from openlfr.messages.codec import DecodeError, decode, encode, headers_for
from openlfr.messages.models import DeadLetter, Message
from openlfr.messages.topics import ALL_TOPICS, DEADLETTER, TopicSpec
from openlfr.pipeline.stage import Incoming, Outgoing, Stage


class InProcessBus:
    """Topics as bounded in-memory logs with one reader each (the embedded pipeline's stages).

    ``publish`` blocks while a topic holds ``capacity`` unread values: the back-pressure that
    Kafka's consumer lag would show. Ingest, upstream, does its own drop-oldest for live video.
    """

    def __init__(self, *, capacity: int = 64) -> None:
        self.capacity = capacity
        self._logs: dict[str, deque[tuple[str, bytes, list[tuple[str, bytes]]]]] = {}
        self._offsets: dict[str, int] = {}
        self._cond = threading.Condition()
        self.dead_letters: list[DeadLetter] = []

    def publish(self, out: Outgoing, *, block: bool = True) -> None:
        """Append one message (thread-safe). ``block=False`` is for the stages themselves: they
        are also the topics' readers, so waiting for room would wait for ever."""
        value = encode(out.message)
        with self._cond:
            log = self._logs.setdefault(out.topic.name, deque())
            while block and len(log) >= self.capacity and out.topic is not DEADLETTER:
                self._cond.wait(timeout=0.5)
            log.append((out.key, value, headers_for(out.message)))
            self._cond.notify_all()

    def pending(self, topic: TopicSpec) -> int:
        """Unread values on a topic."""
        with self._cond:
            return len(self._logs.get(topic.name, ()))

    def take(self, stage: Stage, *, max_messages: int, timeout_s: float = 0.0) -> list[Incoming]:
        """Up to ``max_messages`` decoded inputs of ``stage``; invalid values are dead-lettered."""
        name = stage.input_topic.name
        deadline = time.monotonic() + timeout_s
        with self._cond:
            log = self._logs.setdefault(name, deque())
            while not log and time.monotonic() < deadline:
                self._cond.wait(timeout=max(deadline - time.monotonic(), 0.0))
            raw = [log.popleft() for _ in range(min(max_messages, len(log)))]
            first = self._offsets.get(name, 0)
            self._offsets[name] = first + len(raw)
            self._cond.notify_all()
        batch: list[Incoming] = []
        for i, (key, value, headers) in enumerate(raw):
            try:
                message = decode(value, stage.input_model)
            except DecodeError as exc:
                self.dead_letter(stage.name, name, first + i, key, value, headers, str(exc))
                continue
            batch.append(Incoming(message=message, partition=0, offset=first + i))
        return batch

    def reject(self, stage: Stage, rejected: Sequence[tuple[Incoming, str]]) -> None:
        """Dead-letter inputs a stage refused."""
        for incoming, reason in rejected:
            message: Message = incoming.message
            self.dead_letter(
                stage.name, stage.input_topic.name, incoming.offset, message.camera_id,
                encode(message), headers_for(message), reason,
            )

    def dead_letter(
        self, stage: str, topic: str, offset: int, key: str, value: bytes,
        headers: list[tuple[str, bytes]], reason: str,
    ) -> None:
        """Record a dead letter (the embedded mode keeps them for its summary): as over Kafka,
        a reference and metadata only for topics that carry faces, else the first bytes."""
        spec = next((s for s in ALL_TOPICS if s.name == topic), None)
        self.dead_letters.append(
            dead_letter_record(
                stage=stage, reason=reason, topic=topic, partition=0, offset=offset,
                key=key, value=value, headers=headers, failed_ts=time.time(),
                payload_max_bytes=(
                    DEFAULT_DEADLETTER_PAYLOAD_BYTES if spec is None or keeps_payload(spec) else 0
                ),
            )
        )

"""What every consuming stage is to the runners (Kafka and in-process).

A stage is a handler of batches: it takes validated input messages and returns the messages
to publish. The runner owns the broker, the dead-letter topic, metrics and offsets; a stage
owns no I/O but its backend (Triton, Qdrant), so it can be tested without a broker.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel

from openlfr.messages.models import Message
from openlfr.messages.topics import TopicSpec

In = TypeVar("In", bound=Message)


@dataclass(frozen=True, slots=True)
class Incoming(Generic[In]):
    """A validated input message and where it came from."""

    message: In
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message to publish: topic, key (the camera id) and the typed value."""

    topic: TopicSpec
    key: str
    message: BaseModel


@dataclass(slots=True)
class BatchResult:
    """What a stage made of a batch.

    Attributes:
        outputs: messages to publish before the batch's offsets are committed.
        dropped: count of inputs deliberately dropped, by reason (e.g. ``stale``).
        hold: per input partition, the lowest offset still needed by the stage's in-memory
            state (e.g. the first frame of an open track). The runner commits no further than
            this, so a restart replays what is needed to rebuild that state.
        rejected: inputs that can never be processed, with the reason: the runner sends them
            to the dead-letter topic and the batch goes on.
    """

    outputs: list[Outgoing] = field(default_factory=list)
    rejected: list[tuple[Incoming, str]] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    hold: dict[int, int] = field(default_factory=dict)


class Stage(abc.ABC, Generic[In]):
    """A consuming stage: ``detect``, ``embed``, ``match`` or ``alert``."""

    #: Stage name, used in metrics labels, consumer group and dead-letter records.
    name: str
    input_topic: TopicSpec
    input_model: type[In]
    #: Topics the stage publishes to (besides dead letters): services create them at start.
    output_topics: tuple[TopicSpec, ...] = ()

    @abc.abstractmethod
    def handle(self, batch: Sequence[Incoming[In]], *, now: float) -> BatchResult:
        """Process one batch; raise ``openlfr.pipeline.exceptions.BackendUnavailable`` when a
        backend is down, so the runner pauses and retries the same batch."""

    def ready(self) -> tuple[bool, str]:
        """Whether the stage's backends answer, with a reason when not (for ``/readyz``)."""
        return True, "ok"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release backends."""

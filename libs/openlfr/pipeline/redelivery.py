"""Outcomes of recently handled inputs, so a batch delivered again gives the same outputs.

The Kafka runner retries a batch whose outputs were not all acknowledged by seeking back to
the batch's first offsets and handing the same inputs to the same stage instance. A stateful
stage has already changed its state for them (a track counted the frame, an alert id was
recorded); handling them again would count twice or suppress the very outputs that were lost.
Such a stage records each input's outcome here and, when an input comes again, returns the
recorded outcome without touching its state.

Only the latest inputs per partition are kept: entries below the first offset of a new batch
on the same partition are forgotten (the runner only ever re-delivers from a batch's first
offset, and it does not move on before the batch is acknowledged).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class Outcome:
    """What one input gave: its outputs, the drops it counted, or why it was rejected."""

    outputs: list[Outgoing] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=dict)
    rejected: str | None = None

    def drop(self, reason: str, count: int = 1) -> None:
        """Count ``count`` drops for ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + count

    def add_to(self, result: BatchResult, incoming: Incoming) -> None:
        """Append this outcome of ``incoming`` to a batch result."""
        if self.rejected is not None:
            result.rejected.append((incoming, self.rejected))
        result.outputs.extend(self.outputs)
        for reason, count in self.dropped.items():
            result.dropped[reason] = result.dropped.get(reason, 0) + count


class RedeliveryCache:
    """Outcomes by (partition, offset) of the latest batch(es) per partition."""

    def __init__(self) -> None:
        self._outcomes: dict[int, dict[int, Outcome]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._outcomes.values())

    def get(self, incoming: Incoming) -> Outcome | None:
        """The recorded outcome of an input handled before, or None."""
        return self._outcomes.get(incoming.partition, {}).get(incoming.offset)

    def put(self, incoming: Incoming, outcome: Outcome) -> None:
        """Record an input's outcome."""
        self._outcomes.setdefault(incoming.partition, {})[incoming.offset] = outcome

    def forget_before(self, batch: Sequence[Incoming]) -> None:
        """Forget, per partition of ``batch``, outcomes below its first offset there."""
        firsts: dict[int, int] = {}
        for incoming in batch:
            firsts[incoming.partition] = min(incoming.offset, firsts.get(incoming.partition, incoming.offset))
        for partition, first in firsts.items():
            kept = self._outcomes.get(partition)
            if kept:
                self._outcomes[partition] = {o: v for o, v in kept.items() if o >= first}

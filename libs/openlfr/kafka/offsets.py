"""The Kafka loop's pure arithmetic: backoff delays and the offsets to commit."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff, bounded: ``min(max_s, initial_s * factor ** attempt)``.

    Attributes:
        initial_s: The first delay (attempt 0).
        max_s: No delay is longer.
        factor: Growth per attempt.
    """

    initial_s: float = 0.2
    max_s: float = 30.0
    factor: float = 2.0

    def __post_init__(self) -> None:
        if self.initial_s <= 0:
            raise ValueError(f"initial_s={self.initial_s}, expected > 0")
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s={self.max_s}, expected >= initial_s={self.initial_s}")
        if self.factor < 1:
            raise ValueError(f"factor={self.factor}, expected >= 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        if attempt < 0:
            raise ValueError(f"attempt={attempt}, expected >= 0")
        # Capped exponent: factor ** attempt overflows a float long before attempts run out.
        exponent = min(attempt, 1024)
        try:
            value = self.initial_s * self.factor**exponent
        except OverflowError:
            return self.max_s
        return min(self.max_s, value)


def next_offsets(offsets: Iterable[tuple[int, int]]) -> dict[int, int]:
    """Per partition, the offset after the highest of ``(partition, offset)`` pairs."""
    result: dict[int, int] = {}
    for partition, offset in offsets:
        if offset < 0:
            raise ValueError(f"partition {partition}: offset={offset}, expected >= 0")
        result[partition] = max(result.get(partition, 0), offset + 1)
    return result


def commit_targets(
    *,
    acked: Mapping[int, int],
    hold: Mapping[int, int],
    committed: Mapping[int, int],
) -> dict[int, int]:
    """The offsets to commit now, per partition.

    Args:
        acked: Per partition, the offset after the last input whose outputs are acknowledged.
        hold: Per partition, the lowest offset the stage still needs (commit no further).
        committed: Per partition, the offset committed (or started from): never go below it.

    Returns:
        Only the partitions whose commit would move forward.
    """
    targets: dict[int, int] = {}
    for partition, after in acked.items():
        target = min(after, hold[partition]) if partition in hold else after
        floor = committed.get(partition)
        if floor is not None and target <= floor:
            continue
        targets[partition] = target
    return targets

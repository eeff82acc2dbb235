"""Whether a stage is making progress: the signal behind ``/readyz``'s ``progress`` check and the
``openlfr_stage_progress_age_seconds`` and ``openlfr_stage_stalled`` gauges.

A stage makes progress when it finishes a batch (outputs acknowledged, offsets committed or held
on purpose). It is *stalled* when input waits for it (a batch is in the handler or being retried,
or the last lag reading was above zero) and no batch has finished for ``stall_after_s``: a
backend or the broker down for that long, a delivery that keeps failing, a handler that hangs.
A stage with nothing to read is idle, not stalled.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Progress:
    """When a stage last moved forward and whether input waits for it; thread-safe (the loop
    writes, the HTTP thread and the metrics scrape read)."""

    def __init__(
        self, *, stall_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Start counting now.

        Args:
            stall_after_s: No progress for this long with input waiting is a stall.
            clock: Monotonic seconds.

        Raises:
            ValueError: ``stall_after_s`` is not positive.
        """
        if stall_after_s <= 0:
            raise ValueError(f"stall_after_s={stall_after_s}, expected > 0")
        self.stall_after_s = stall_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self._in_batch = False
        self._retrying: str | None = None
        self._lag = 0

    def restart(self) -> None:
        """Count from now (the loop starts)."""
        with self._lock:
            self._last = self._clock()
            self._in_batch = False
            self._retrying = None

    def batch_started(self) -> None:
        """A batch went into the stage (input waits until it is finished)."""
        with self._lock:
            self._in_batch = True

    def advanced(self) -> None:
        """A batch finished: its outputs are acknowledged."""
        with self._lock:
            self._last = self._clock()
            self._in_batch = False
            self._retrying = None

    def retrying(self, reason: str) -> None:
        """A batch failed and will be read again: input waits, nothing moved forward."""
        with self._lock:
            self._in_batch = False
            self._retrying = reason

    def lag(self, messages: int) -> None:
        """The latest lag reading over the assigned partitions."""
        with self._lock:
            self._lag = max(messages, 0)

    def age(self) -> float:
        """Seconds since the last progress while input waits; 0 while idle or keeping up."""
        with self._lock:
            if not (self._in_batch or self._retrying is not None or self._lag > 0):
                return 0.0
            return max(self._clock() - self._last, 0.0)

    def stalled(self) -> bool:
        """Whether no progress came for ``stall_after_s`` with input waiting."""
        return self.age() >= self.stall_after_s

    def check(self) -> tuple[bool, str]:
        """For ``/readyz``: ok, or why the stage cannot make progress."""
        age = self.age()
        if age < self.stall_after_s:
            return True, "ok"
        with self._lock:
            retrying, lag = self._retrying, self._lag
        if retrying is not None:
            waiting = f"a batch is retried ({retrying})"
        elif lag:
            waiting = f"{lag} messages wait"
        else:
            waiting = "a batch is in the handler"
        return False, f"stalled: no batch finished for {age:.0f}s while {waiting}"

"""401s written to the audit log, rate-limited so that a flood of bad tokens cannot fill the disk.

Within each window (a minute by default) at most ``per_source`` refusals per source address and
``overall`` in all get a record each (``access.unauthenticated``: source, method and path, and
whether a token was missing or unknown; never the token). The rest are counted, and one summary
record per window says how many were suppressed and from how many sources (the busiest named),
written when the window ends. At most about ``overall + 1`` records per window, whatever comes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from openlfr.audit import metrics
from openlfr.audit.exceptions import AuditLogError
from openlfr.audit.log import AuditLog

logger = logging.getLogger(__name__)

Reason = Literal["missing token", "unknown token"]

#: The actor of these records: nobody was authenticated.
ANONYMOUS = "anonymous"
_MAX_TARGET_CHARS = 200
_TOP_SOURCES = 5


class UnauthenticatedAudit:
    """Audits 401s at most ``per_source`` per source and ``overall`` in all per ``window_s``.

    Args:
        audit: the log.
        per_source: records per source address per window.
        overall: records per window, all sources together.
        window_s: the window.
        max_sources: distinct sources counted per window (more are counted together as "other").
        clock: monotonic seconds (a test's own clock); the summary timer runs on real time.
    """

    def __init__(
        self,
        audit: AuditLog,
        *,
        per_source: int = 10,
        overall: int = 60,
        window_s: float = 60.0,
        max_sources: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_source < 0 or overall < 0 or window_s <= 0 or max_sources < 1:
            raise ValueError("per_source >= 0, overall >= 0, window_s > 0 and max_sources >= 1 expected")
        self.audit = audit
        self.per_source = per_source
        self.overall = overall
        self.window_s = window_s
        self.max_sources = max_sources
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._window_wall = time.time()
        self._recorded: dict[str, int] = {}
        self._recorded_total = 0
        self._suppressed: dict[str, int] = {}
        self._suppressed_total = 0
        self._timer: threading.Timer | None = None

    def record(self, *, source: str, method: str, path: str, reason: Reason) -> None:
        """One 401: a record if within the limits, else counted for the window's summary.

        Never raises for the audit log: a 401 stays a 401 when the log cannot be written
        (counted as ``unaudited``, logged).
        """
        source = source or "unknown"
        summary = None
        with self._lock:
            summary = self._roll(self._clock())
            count = self._recorded.get(source, 0)
            audited = count < self.per_source and self._recorded_total < self.overall
            if audited:
                self._recorded[source] = count + 1
                self._recorded_total += 1
            else:
                key = source if source in self._suppressed or len(self._suppressed) < self.max_sources else "other"
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                self._suppressed_total += 1
                self._arm_timer()
        if summary is not None:
            self._write_summary(*summary)
        if not audited:
            metrics.UNAUTHENTICATED.labels("suppressed").inc()
            return
        target = f"{method} {path}"[:_MAX_TARGET_CHARS]
        self._write(target, {"source": source, "reason": reason}, outcome="audited")

    def flush(self) -> None:
        """Write the summary of a window that has ended (called by the timer, or by a test)."""
        with self._lock:
            summary = self._roll(self._clock())
        if summary is not None:
            self._write_summary(*summary)

    def close(self) -> None:
        """Cancel the timer and write what the current window suppressed so far."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            summary = self._take(self._clock())
        if summary is not None:
            self._write_summary(*summary)

    def _roll(self, now: float) -> tuple[float, float, int, dict[str, int]] | None:
        """Start a new window if this one has ended; its summary if it suppressed any (lock held)."""
        if now - self._window_start < self.window_s:
            return None
        return self._take(now)

    def _take(self, now: float) -> tuple[float, float, int, dict[str, int]] | None:
        summary = None
        if self._suppressed_total:
            summary = (self._window_wall, now - self._window_start, self._suppressed_total, self._suppressed)
        self._window_start, self._window_wall = now, time.time()
        self._recorded, self._recorded_total = {}, 0
        self._suppressed, self._suppressed_total = {}, 0
        self._timer = None
        return summary

    def _arm_timer(self) -> None:
        """Have the summary written when the window ends, even if no 401 comes after (lock held)."""
        if self._timer is None:
            delay = max(self._window_start + self.window_s - self._clock(), 0.0) + 0.01
            self._timer = threading.Timer(delay, self.flush)
            self._timer.daemon = True
            self._timer.start()

    def _write_summary(self, started: float, length_s: float, total: int, by_source: dict[str, int]) -> None:
        top = sorted(by_source.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_SOURCES]
        details = {
            "suppressed": total,
            "sources": len(by_source),
            "top_sources": [[source, n] for source, n in top],
            "window_start": started,
            "window_s": round(length_s, 3),
            "limits": {"per_source": self.per_source, "overall": self.overall, "window_s": self.window_s},
        }
        logger.warning('api 401s over the audit rate limit suppressed="%d" sources="%d"', total, len(by_source))
        self._write("401 summary", details, outcome=None)

    def _write(self, target: str, details: dict, *, outcome: Literal["audited"] | None) -> None:
        try:
            self.audit.append(actor=ANONYMOUS, action="access.unauthenticated", target=target, details=details)
        except AuditLogError as exc:
            metrics.UNAUTHENTICATED.labels("unaudited").inc()
            logger.error('api 401 not audited target="%s" error="%s"', target, exc)
            return
        if outcome is not None:
            metrics.UNAUTHENTICATED.labels(outcome).inc()

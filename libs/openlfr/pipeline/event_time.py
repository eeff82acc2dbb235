"""Event time that a wrong clock or a forged message cannot hijack.

Stages order and expire their state by capture time (``capture_ts``), which comes from the
ingest host's clock, or from whoever wrote the message. A capture time from the future cannot be
true: trusted, it moves event-time state (the alert stage's dedup watermark, the match stage's
tracker) so far ahead that every real message looks stale. A stage therefore refuses an input
whose capture time is more than ``max_skew_s`` ahead of its own clock: the runner dead-letters it
with the reason (how far ahead, and the setting), and it is counted per camera and stage in
``openlfr_capture_time_ahead_total``; the alert rule ``OpenLFRCameraClockAhead`` fires on it.
Before that, ``openlfr_capture_time_ahead_seconds`` shows per camera how far ahead of the stage's
clock its latest capture time was (0 when behind, as it normally is by the pipeline's latency),
and ``OpenLFRCameraClockDrifting`` warns while a camera runs ahead but is still accepted.

Refused rather than clamped: a clamped time would put a false capture time on an alert that a
reviewer reads as fact, and the dead letter keeps the original for inspection. The skew is
``OPENLFR_MAX_CLOCK_SKEW_S`` (``ServiceSettings.max_clock_skew_s``, default 300 s): far above the
drift of NTP-synchronised hosts, far below a day. Runs that replay files faster than real time
(``openlfr run`` on a file) turn the check off (``max_skew_s=None``), as they turn off freshness.
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge

from openlfr.prom import metrics_for

logger = logging.getLogger(__name__)

#: The setting that bounds how far ahead of a stage's clock a capture time may be.
MAX_CLOCK_SKEW_SETTING = "OPENLFR_MAX_CLOCK_SKEW_S"
#: Its default, in seconds.
DEFAULT_MAX_CLOCK_SKEW_S = 300.0


class _AheadMetrics:
    """``openlfr_capture_time_ahead_total`` and ``openlfr_capture_time_ahead_seconds``, one per
    Prometheus registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            "openlfr_capture_time_ahead_total",
            f"Inputs refused (dead-lettered) because their capture time was more than {MAX_CLOCK_SKEW_SETTING} "
            "ahead of the stage's clock, per stage and camera: a camera or ingest host clock running fast, "
            "or forged messages.",
            ["stage", "camera_id"],
            registry=registry,
        )
        self.ahead = Gauge(
            "openlfr_capture_time_ahead_seconds",
            "How far ahead of the stage's clock the latest capture time of each camera was, in seconds (0 when "
            f"behind it): a clock drifting fast shows here before inputs pass {MAX_CLOCK_SKEW_SETTING} and are "
            "refused.",
            ["stage", "camera_id"],
            registry=registry,
        )


class FutureGuard:
    """Refuses capture times more than ``max_skew_s`` ahead of the stage's clock, and counts them.

    Args:
        stage: the stage's name (the metric's ``stage`` label).
        max_skew_s: how far ahead a capture time may be; None turns the check off.
        registry: where the counter is registered.
    """

    def __init__(self, *, stage: str, max_skew_s: float | None, registry: CollectorRegistry | None = None) -> None:
        if max_skew_s is not None and not 0.0 < max_skew_s <= 86400.0:
            raise ValueError(f"FutureGuard.max_skew_s: expected 0 < seconds <= 86400 or None, got {max_skew_s}")
        self.stage = stage
        self.max_skew_s = max_skew_s
        metrics = metrics_for(_AheadMetrics, registry)
        self._counter = metrics.counter
        self._ahead = metrics.ahead

    def limit(self, now: float) -> float | None:
        """The latest capture time accepted at ``now`` (None: no limit)."""
        return None if self.max_skew_s is None else now + self.max_skew_s

    def refuse(self, *, camera_id: str, capture_ts: float, now: float) -> str | None:
        """The reason to refuse a capture time ``now``, counted and logged; None when it is acceptable."""
        limit = self.limit(now)
        if limit is None:
            return None
        self._ahead.labels(self.stage, camera_id).set(max(0.0, capture_ts - now))
        if capture_ts <= limit:
            return None
        self._counter.labels(self.stage, camera_id).inc()
        ahead = capture_ts - now
        logger.warning(
            'capture time ahead of the clock stage="%s" camera_id="%s" ahead_s="%.1f" max_skew_s="%g"',
            self.stage, camera_id, ahead, self.max_skew_s,
        )
        return (
            f"capture_ts {capture_ts:.3f} is {ahead:.1f} s ahead of the {self.stage} stage's clock "
            f"(more than {MAX_CLOCK_SKEW_SETTING}={self.max_skew_s:g}): camera {camera_id}'s clock, or its "
            "ingest host's, is fast, or the message is forged"
        )

"""FutureGuard: capture times ahead of a stage's clock are shown per camera, and refused past the skew."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from openlfr.pipeline.event_time import FutureGuard


def _ahead(registry: CollectorRegistry, camera: str) -> float | None:
    return registry.get_sample_value("openlfr_capture_time_ahead_seconds", {"stage": "match", "camera_id": camera})


def test_a_drifting_clock_shows_before_it_is_refused() -> None:
    registry = CollectorRegistry()
    guard = FutureGuard(stage="match", max_skew_s=300.0, registry=registry)
    now = 1_000_000.0
    # Behind the clock (the pipeline's latency): 0, accepted.
    assert guard.refuse(camera_id="cam-ok", capture_ts=now - 2.5, now=now) is None
    assert _ahead(registry, "cam-ok") == 0.0
    # A minute and a half fast: shown, still accepted, nothing counted as refused.
    assert guard.refuse(camera_id="cam-fast", capture_ts=now + 90.0, now=now) is None
    assert _ahead(registry, "cam-fast") == pytest.approx(90.0)
    assert registry.get_sample_value("openlfr_capture_time_ahead_total",
                                     {"stage": "match", "camera_id": "cam-fast"}) is None
    # Past the skew: refused with the reason, counted, and the gauge says how far.
    reason = guard.refuse(camera_id="cam-fast", capture_ts=now + 400.0, now=now)
    assert reason is not None and "400.0 s ahead" in reason and "OPENLFR_MAX_CLOCK_SKEW_S=300" in reason
    assert _ahead(registry, "cam-fast") == pytest.approx(400.0)
    assert registry.get_sample_value("openlfr_capture_time_ahead_total",
                                     {"stage": "match", "camera_id": "cam-fast"}) == 1.0
    # The clock fixed: back to 0.
    assert guard.refuse(camera_id="cam-fast", capture_ts=now - 1.0, now=now) is None
    assert _ahead(registry, "cam-fast") == 0.0


def test_without_a_skew_nothing_is_checked_or_shown() -> None:
    """Replays faster than real time (openlfr run on a file) turn the check off."""
    registry = CollectorRegistry()
    guard = FutureGuard(stage="match", max_skew_s=None, registry=registry)
    assert guard.refuse(camera_id="cam-1", capture_ts=9e9, now=1.0) is None
    assert _ahead(registry, "cam-1") is None

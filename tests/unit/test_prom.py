"""One metrics set per registry: a new registry never gets the metrics of a collected one."""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry

from openlfr.kafka.metrics import PublisherMetrics, StageMetrics
from openlfr.pipeline.alert import _RefusedMetrics
from openlfr.pipeline.detect import _CropMetrics
from openlfr.pipeline.event_time import _AheadMetrics
from openlfr.pipeline.match_metrics import MatchMetrics
from openlfr.prom import metrics_for


def test_the_same_registry_gets_the_same_set() -> None:
    registry = CollectorRegistry()
    assert metrics_for(MatchMetrics, registry) is metrics_for(MatchMetrics, registry)
    assert metrics_for(StageMetrics, registry) is not metrics_for(PublisherMetrics, registry)


def test_a_registry_made_after_another_was_collected_counts_into_itself() -> None:
    """CPython hands a new registry the address of a collected one; each must still see its own
    counts (MatchMetrics keyed by id(registry) lost the near-miss count of a later test)."""
    for _ in range(30):
        registry = CollectorRegistry()
        metrics_for(MatchMetrics, registry).near_miss_tracks.labels("dep-1").inc()
        metrics_for(_CropMetrics, registry).crops.labels("run").inc()
        metrics_for(_RefusedMetrics, registry).counter.labels("bad_signature").inc()
        metrics_for(_AheadMetrics, registry).counter.labels("match", "cam-1").inc()
        assert registry.get_sample_value("openlfr_match_near_miss_tracks_total", {"deployment": "dep-1"}) == 1
        assert registry.get_sample_value("openlfr_detect_crops_total", {"kind": "run"}) == 1
        assert registry.get_sample_value("openlfr_alert_matches_refused_total", {"reason": "bad_signature"}) == 1
        assert registry.get_sample_value(
            "openlfr_capture_time_ahead_total", {"stage": "match", "camera_id": "cam-1"}
        ) == 1
        del registry
        gc.collect()

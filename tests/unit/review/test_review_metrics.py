"""Per-deployment figures: read from the store's tallies, so exact, and the same after a restart."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from openlfr.messages.models import Alert
from openlfr.review.events import EventHub
from openlfr.review.metrics import register_review_metrics
from openlfr.review.service import ReviewService
from openlfr.review.store import ReviewStore
from openlfr.review.testing import make_alert


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def _review_all(store: ReviewStore, alerts: list[Alert]) -> None:
    # dep-a: one confirmed, two rejected (one at each step), one awaiting the second review.
    a = alerts
    store.review(a[0].alert_id, reviewer="alice", decision="confirm")
    store.review(a[0].alert_id, reviewer="bob", decision="confirm")
    store.review(a[1].alert_id, reviewer="alice", decision="reject", reason="different person")
    store.review(a[2].alert_id, reviewer="alice", decision="confirm")
    store.review(a[2].alert_id, reviewer="bob", decision="reject", reason="the ears differ")
    store.review(a[3].alert_id, reviewer="alice", decision="confirm")


def test_metrics_per_deployment_and_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite3"
    alerts = [make_alert(track=f"a{i}", deployment="dep-a") for i in range(5)]
    alerts.append(make_alert(track="b0", deployment="dep-b"))
    alerts.append(make_alert(track="n0", deployment=None))
    store = ReviewStore(path)
    hub = EventHub()
    registry = CollectorRegistry()
    register_review_metrics(store, hub, registry=registry)
    assert _value(registry, "openlfr_deployment_alerts_total", deployment="dep-a") is None

    service = ReviewService(store, hub)
    for a in alerts:
        service.on_alert(a)
    service.on_alert(alerts[0])  # a replay counts nothing
    _review_all(store, alerts)

    def check(reg: CollectorRegistry) -> None:
        assert _value(reg, "openlfr_deployment_alerts_total", deployment="dep-a") == 5
        assert _value(reg, "openlfr_deployment_alerts_total", deployment="dep-b") == 1
        assert _value(reg, "openlfr_deployment_alerts_total", deployment="(none)") == 1
        assert _value(reg, "openlfr_deployment_adjudications_total", deployment="dep-a", outcome="confirmed") == 1
        assert _value(reg, "openlfr_deployment_adjudications_total", deployment="dep-a", outcome="rejected") == 2
        assert _value(reg, "openlfr_deployment_alert_precision", deployment="dep-a") == pytest.approx(1 / 3)
        assert _value(reg, "openlfr_deployment_alerts_unadjudicated", deployment="dep-a", stage="first") == 1
        assert _value(reg, "openlfr_deployment_alerts_unadjudicated", deployment="dep-a", stage="second") == 1
        assert _value(reg, "openlfr_deployment_adjudications_total", deployment="dep-b", outcome="rejected") == 0
        assert _value(reg, "openlfr_deployment_alert_precision", deployment="dep-b") is None  # nothing adjudicated

    check(registry)
    store.purge(now=alerts[0].capture_ts + 400 * 86400)  # every record gone: the figures stay
    assert store.list_alerts().records == ()
    check(registry)
    store.close()

    again = ReviewStore(path)  # a restarted service
    fresh = CollectorRegistry()
    register_review_metrics(again, registry=fresh)
    check(fresh)
    text = generate_latest(fresh).decode()
    assert 'openlfr_deployment_alerts_total{deployment="dep-a"} 5.0' in text
    assert "openlfr_review_stream" not in text  # no hub given
    again.close()


def test_stream_metrics_and_duplicate_registration(tmp_path: Path) -> None:
    store = ReviewStore(":memory:")
    hub = EventHub(queue_size=1)
    registry = CollectorRegistry()
    collector = register_review_metrics(store, hub, registry=registry)
    sub = hub.subscribe()
    hub.publish("alert", {})
    hub.publish("alert", {})
    assert _value(registry, "openlfr_review_stream_subscribers") == 1
    assert _value(registry, "openlfr_review_stream_events_dropped_total") == 1
    sub.close()
    assert _value(registry, "openlfr_review_stream_subscribers") == 0
    with pytest.raises(ValueError):
        register_review_metrics(store, hub, registry=registry)
    registry.unregister(collector)
    register_review_metrics(store, hub, registry=registry)
    store.close()

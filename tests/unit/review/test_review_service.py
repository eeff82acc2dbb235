"""The glue the alert stage calls, and the review settings."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from openlfr.review.events import EventHub
from openlfr.review.registry_client import HttpRegistryClient
from openlfr.review.service import ReviewService
from openlfr.review.settings import ReviewSettings
from openlfr.review.store import ReviewStore
from openlfr.review.testing import make_alert


def test_on_alert_stores_and_publishes_once() -> None:
    store, hub = ReviewStore(":memory:"), EventHub()
    service = ReviewService(store, hub)
    sub = hub.subscribe()
    alert = make_alert()
    assert service.on_alert(alert) is True
    assert service.on_alert(alert) is False
    event = sub.get(timeout=0)
    assert event.kind == "alert" and event.data["alert_id"] == alert.alert_id
    assert event.data["status"] == "pending" and event.data["probe_url"].endswith("/probe.jpg")
    assert sub.get(timeout=0) is None
    assert store.get(alert.alert_id).subject_id == "subject-1"
    store.close()


def test_on_alerts_backfills_and_counts_the_new(tmp_path: Path) -> None:
    store, hub = ReviewStore(tmp_path / "r.sqlite3"), EventHub()
    service = ReviewService(store, hub)
    alerts = [make_alert(track=f"t{i}") for i in range(4)]
    service.on_alert(alerts[0])
    assert service.on_alerts(alerts) == 3
    assert store.tallies("dep-1").alerts == 4
    store.close()


def test_on_alert_from_the_loop_thread_while_http_threads_read(tmp_path: Path) -> None:
    store, hub = ReviewStore(tmp_path / "r.sqlite3"), EventHub(queue_size=1000)
    service = ReviewService(store, hub)
    sub = hub.subscribe()
    alerts = [make_alert(track=f"t{i}") for i in range(100)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                store.list_alerts(limit=20)
                store.all_tallies()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
                return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for r in readers:
        r.start()
    loop = threading.Thread(target=service.on_alerts, args=(alerts,))
    loop.start()
    loop.join(30)
    stop.set()
    for r in readers:
        r.join(30)
    assert errors == []
    assert sub.pending() == 100 and store.tallies("dep-1").alerts == 100
    store.close()


def test_review_publishes_the_step_and_the_alert() -> None:
    store, hub = ReviewStore(":memory:"), EventHub()
    service = ReviewService(store, hub)
    alert = make_alert()
    service.on_alert(alert)
    sub = hub.subscribe()
    outcome = service.review(alert.alert_id, reviewer="alice", decision="reject", reason="not him")
    assert outcome.record.status == "rejected"
    event = sub.get(timeout=0)
    assert event.kind == "review"
    assert event.data["step"] == {"step": 1, "reviewer": "alice", "decision": "reject", "reason": "not him",
                                  "ts": outcome.step.ts}
    assert (event.data["previous_status"], event.data["alert"]["status"]) == ("pending", "rejected")
    store.close()


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENLFR_REVIEW_DB_PATH", str(tmp_path / "review.sqlite3"))
    monkeypatch.setenv("OPENLFR_REVIEW_CROP_RETENTION_S", "86400")
    monkeypatch.setenv("OPENLFR_REVIEW_RECORD_RETENTION_S", "172800")
    monkeypatch.setenv("OPENLFR_REVIEW_REGISTRY_URL", "http://registry:8080")
    monkeypatch.setenv("OPENLFR_REVIEW_REGISTRY_TOKEN", "alert-service-token-0123456789")
    settings = ReviewSettings()
    assert (settings.crop_retention_s, settings.record_retention_s, settings.purge_interval_s) == (
        86400, 172800, 3600
    )
    assert "alert-service-token" not in repr(settings)
    client = settings.registry_client()
    assert isinstance(client, HttpRegistryClient) and client.base_url == "http://registry:8080"


def test_settings_defaults_and_no_registry(tmp_path: Path) -> None:
    settings = ReviewSettings(db_path=tmp_path / "r.sqlite3")
    assert settings.registry_client() is None
    assert settings.crop_retention_s == 31 * 86400 and settings.record_retention_s == 365 * 86400


@pytest.mark.parametrize(
    "values, match",
    [
        ({}, "db_path"),
        ({"crop_retention_s": 100, "record_retention_s": 50}, "OPENLFR_REVIEW_RECORD_RETENTION_S"),
        ({"registry_url": "http://registry:8080"}, "OPENLFR_REVIEW_REGISTRY_TOKEN"),
        ({"registry_url": "not a url", "registry_token": "x" * 20}, "registry_url"),
        ({"purge_interval_s": 0}, "purge_interval_s"),
    ],
)
def test_bad_settings_name_the_setting(values: dict, match: str, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENLFR_REVIEW_DB_PATH", raising=False)
    if match != "db_path":
        values = {"db_path": tmp_path / "r.sqlite3", **values}
    with pytest.raises(ValidationError, match=match):
        ReviewSettings(**values)

"""Retention: crops go after the crop period, records after the record period, tallies stay."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from openlfr.audit.log import AuditLog
from openlfr.review.exceptions import AlertNotFound
from openlfr.review.retention import RetentionWorker
from openlfr.review.store import ReviewStore, Tallies
from openlfr.review.testing import make_alert

T0 = 1_800_000_000.0
CROP_S = 3600.0
RECORD_S = 4 * 3600.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> ReviewStore:
    s = ReviewStore(tmp_path / "review.sqlite3", clock=clock, crop_retention_s=CROP_S, record_retention_s=RECORD_S)
    yield s
    s.close()


def test_purge_deletes_crops_then_records_and_keeps_tallies(store: ReviewStore, clock: Clock) -> None:
    old = make_alert(track="old", capture_ts=T0)
    new = make_alert(track="new", capture_ts=T0 + 2 * 3600)
    for a in (old, new):
        store.add_alert(a)
    store.review(old.alert_id, reviewer="alice", decision="confirm")
    store.review(old.alert_id, reviewer="bob", decision="confirm")
    store.review(new.alert_id, reviewer="alice", decision="reject", reason="not them")
    tallies = Tallies("dep-1", alerts=2, confirmed=1, rejected=1)
    assert store.tallies("dep-1") == tallies

    # Just inside the crop period: nothing goes.
    result = store.purge(now=T0 + CROP_S - 1)
    assert (result.crops, result.records) == (0, 0)
    assert store.chips(old.alert_id).probe == old.probe_chip_jpeg

    # Past the crop period of the old alert only.
    result = store.purge(now=T0 + CROP_S + 1)
    assert (result.crops, result.records) == (1, 0)
    assert result.crop_cutoff_ts == T0 + 1
    chips = store.chips(old.alert_id)
    assert (chips.probe, chips.reference, chips.scene, chips.crops_purged_ts) == (None, None, None, T0 + CROP_S + 1)
    record = store.get(old.alert_id)
    assert (record.has_probe, record.has_reference, record.has_scene, record.status) == (False, False, False, "confirmed")
    assert len(record.reviews) == 2
    assert store.chips(new.alert_id).probe == new.probe_chip_jpeg
    assert store.chips(new.alert_id).scene == new.scene_jpeg is not None and store.get(new.alert_id).has_scene
    assert store.purge(now=T0 + CROP_S + 2).crops == 0  # already done: not counted again

    # Past the record period of the old alert: its record and review steps go; tallies stay.
    result = store.purge(now=T0 + RECORD_S + 1)
    assert (result.crops, result.records) == (1, 1)
    with pytest.raises(AlertNotFound):
        store.get(old.alert_id)
    assert store._conn.execute("SELECT COUNT(*) FROM reviews WHERE alert_id = ?", (old.alert_id,)).fetchone() == (0,)
    assert store.get(new.alert_id).crops_purged_ts == T0 + RECORD_S + 1
    assert store.tallies("dep-1") == tallies

    result = store.purge(now=T0 + 2 * 3600 + RECORD_S + 1)
    assert result.records == 1 and store.list_alerts().records == ()
    assert store.tallies("dep-1") == tallies


def test_purged_crops_are_not_left_in_the_file(store: ReviewStore, tmp_path: Path) -> None:
    alert = make_alert(capture_ts=T0)
    assert alert.scene_jpeg is not None
    markers = {"probe": alert.probe_chip_jpeg[-64:], "scene": alert.scene_jpeg[-64:]}
    store.add_alert(alert)
    for marker in markers.values():
        assert any(marker in f.read_bytes() for f in tmp_path.glob("review.sqlite3*"))
    store.purge(now=T0 + CROP_S + 1)
    for f in tmp_path.glob("review.sqlite3*"):
        for which, marker in markers.items():
            assert marker not in f.read_bytes(), f"{which} crop bytes still in {f.name}"


def test_a_scene_crop_arriving_past_the_crop_retention_is_not_kept(store: ReviewStore, clock: Clock) -> None:
    late = make_alert(track="late", capture_ts=T0 - CROP_S - 10)
    assert store.add_alert(late)
    assert store.chips(late.alert_id).scene is None and not store.get(late.alert_id).has_scene


def test_a_version_1_store_gains_the_scene_column_and_keeps_its_alerts(tmp_path: Path, clock: Clock) -> None:
    import sqlite3

    from openlfr.review import store as store_module

    path = tmp_path / "v1.sqlite3"
    conn = sqlite3.connect(path)
    conn.executescript(store_module._SCHEMA.replace("    crops_purged_ts     REAL,\n    scene_jpeg          BLOB\n",
                                                    "    crops_purged_ts     REAL\n"))
    conn.execute("PRAGMA user_version=1")
    conn.commit()
    assert "scene_jpeg" not in {row[1] for row in conn.execute("PRAGMA table_info(alerts)")}
    conn.close()
    with ReviewStore(path, clock=clock, crop_retention_s=CROP_S, record_retention_s=RECORD_S) as upgraded:
        alert = make_alert(capture_ts=T0)
        assert upgraded.add_alert(alert) and upgraded.chips(alert.alert_id).scene == alert.scene_jpeg
        assert upgraded._conn.execute("PRAGMA user_version").fetchone() == (2,)


def test_a_replayed_alert_after_its_record_was_purged_is_not_counted_again(store: ReviewStore, clock: Clock) -> None:
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    clock.now = T0 + RECORD_S + 10
    store.purge()
    assert store.add_alert(alert) is False
    assert store.tallies("dep-1").alerts == 1


def test_worker_purges_on_its_interval_audits_and_stops(tmp_path: Path) -> None:
    clock = Clock(T0)
    store = ReviewStore(tmp_path / "r.sqlite3", clock=clock, crop_retention_s=CROP_S, record_retention_s=RECORD_S)
    audit = AuditLog(tmp_path / "audit.jsonl")
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    worker = RetentionWorker(store, interval_s=0.05, audit=audit)
    try:
        deadline = time.monotonic() + 5
        while worker.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert worker.runs >= 2 and worker.check() == (True, "ok")
        assert store.get(alert.alert_id).has_probe  # nothing old enough yet
        assert list(audit.records()) == []  # empty purges are not audited

        clock.now = T0 + CROP_S + 5
        deadline = time.monotonic() + 5
        while store.get(alert.alert_id).has_probe and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not store.get(alert.alert_id).has_probe
        deadline = time.monotonic() + 5
        while not list(audit.records()) and time.monotonic() < deadline:
            time.sleep(0.01)
        (record,) = list(audit.records())
        assert (record.action, record.actor) == ("alert.purge", "openlfr-review-retention")
        assert (record.details["crops"], record.details["records"]) == (1, 0)
    finally:
        worker.close()
    assert not worker.is_alive()
    runs = worker.runs
    time.sleep(0.15)
    assert worker.runs == runs
    assert audit.verify().ok
    store.close()


def test_worker_reports_a_failed_purge_and_recovers(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite3")
    worker = RetentionWorker(store, interval_s=3600)
    try:
        deadline = time.monotonic() + 5
        while worker.runs < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        store._conn.execute("DROP TABLE alerts")  # a fault that cannot be caused otherwise
        assert worker.run_once() is None
        ok, reason = worker.check()
        assert not ok and "no such table" in reason and worker.failures == 1
    finally:
        worker.close()
    assert not worker.is_alive()
    store.close()


def test_worker_refuses_a_bad_interval() -> None:
    with ReviewStore(":memory:") as store, pytest.raises(ValueError, match="interval_s"):
        RetentionWorker(store, interval_s=0)

"""The review store: idempotent alerts, the two-person state machine, tallies, queries."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from openlfr.review.exceptions import AlertNotFound, InvalidCursor, InvalidReview, ReviewConflict
from openlfr.review.store import MAX_REASON_CHARS, NO_DEPLOYMENT, ReviewStore, Tallies
from openlfr.review.testing import make_alert

T0 = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = T0 + 10) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> ReviewStore:
    s = ReviewStore(":memory:", clock=clock, crop_retention_s=3600, record_retention_s=7200)
    yield s
    s.close()


def test_add_alert_is_idempotent_and_keeps_fields_and_crops(store: ReviewStore) -> None:
    alert = make_alert(capture_ts=T0)
    assert store.add_alert(alert) is True
    assert store.add_alert(alert) is False
    record = store.get(alert.alert_id)
    assert (record.status, record.next_step, record.reviews, record.final) == ("pending", 1, (), False)
    assert (record.camera_id, record.subject_id, record.deployment_id, record.capture_ts) == (
        "cam-1", "subject-1", "dep-1", T0
    )
    assert (record.score, record.margin, record.threshold, record.embedder_model) == (
        alert.score, alert.margin, alert.threshold, alert.embedder_model
    )
    assert (record.received_ts, record.alert_ts, record.track_id) == (T0 + 10, alert.alert_ts, "t1")
    chips = store.chips(alert.alert_id)
    assert (chips.probe, chips.reference) == (alert.probe_chip_jpeg, alert.reference_chip_jpeg)
    assert record.has_probe and record.has_reference and record.had_reference
    assert store.tallies("dep-1") == Tallies("dep-1", alerts=1)


def test_alert_without_deployment_or_reference(store: ReviewStore) -> None:
    alert = make_alert(capture_ts=T0, deployment=None, reference=False)
    store.add_alert(alert)
    record = store.get(alert.alert_id)
    assert (record.deployment_id, record.has_reference, record.had_reference) == (None, False, False)
    assert store.chips(alert.alert_id).reference is None
    assert store.tallies(None) == Tallies(NO_DEPLOYMENT, alerts=1)
    assert store.tallies("dep-1") is None


def _do(store: ReviewStore, alert_id: str, steps: list[tuple[str, str, str | None]]) -> None:
    for reviewer, decision, reason in steps:
        store.review(alert_id, reviewer=reviewer, decision=decision, reason=reason)


# (steps before, the step tried) -> (status after, tallies after: confirmed, rejected, awaiting) or the error.
TRANSITIONS = {
    "first confirm": ([], ("alice", "confirm", None), "awaiting_second", (0, 0, 1)),
    "first confirm with a note": ([], ("alice", "confirm", "clear likeness"), "awaiting_second", (0, 0, 1)),
    "first reject": ([], ("alice", "reject", "not him"), "rejected", (0, 1, 0)),
    "second confirm by another": ([("alice", "confirm", None)], ("bob", "confirm", None), "confirmed", (1, 0, 0)),
    "second reject by another": ([("alice", "confirm", None)], ("bob", "reject", "no"), "rejected", (0, 1, 0)),
    "second confirm by the same": ([("alice", "confirm", None)], ("alice", "confirm", None), "same_reviewer", None),
    "second reject by the same": ([("alice", "confirm", None)], ("alice", "reject", "oops"), "same_reviewer", None),
    "review after confirmed": (
        [("alice", "confirm", None), ("bob", "confirm", None)], ("carol", "reject", "late"), "final", None
    ),
    "review after rejected": ([("alice", "reject", "no")], ("bob", "confirm", None), "final", None),
}


@pytest.mark.parametrize("before, attempt, expected, tallies", TRANSITIONS.values(), ids=TRANSITIONS.keys())
def test_review_state_machine(
    store: ReviewStore,
    before: list[tuple[str, str, str | None]],
    attempt: tuple[str, str, str | None],
    expected: str,
    tallies: tuple[int, int, int] | None,
) -> None:
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    _do(store, alert.alert_id, before)
    prior = store.get(alert.alert_id)
    reviewer, decision, reason = attempt
    if tallies is None:
        with pytest.raises(ReviewConflict) as err:
            store.review(alert.alert_id, reviewer=reviewer, decision=decision, reason=reason)
        assert err.value.reason == expected
        assert store.get(alert.alert_id) == prior  # nothing changed
        return
    outcome = store.review(alert.alert_id, reviewer=reviewer, decision=decision, reason=reason)
    assert outcome.record.status == expected
    assert outcome.previous_status == prior.status
    assert outcome.step.step == len(before) + 1
    assert (outcome.step.reviewer, outcome.step.decision, outcome.step.reason) == attempt
    assert outcome.record.reviews[-1] == outcome.step
    assert store.get(alert.alert_id) == outcome.record
    t = store.tallies("dep-1")
    assert (t.confirmed, t.rejected, t.awaiting_second) == tallies
    assert t.alerts == 1


def test_same_person_message_says_so(store: ReviewStore) -> None:
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    store.review(alert.alert_id, reviewer="alice", decision="confirm")
    with pytest.raises(ReviewConflict, match="already made the first review"):
        store.review(alert.alert_id, reviewer="alice", decision="confirm")


@pytest.mark.parametrize(
    "decision, reason, match",
    [
        ("reject", None, "needs a reason"),
        ("reject", "   ", "needs a reason"),
        ("reject", "x" * (MAX_REASON_CHARS + 1), "at most"),
        ("confirm", "x" * (MAX_REASON_CHARS + 1), "at most"),
        ("approve", None, "decision"),
    ],
)
def test_invalid_reviews_are_refused(store: ReviewStore, decision: str, reason: str | None, match: str) -> None:
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    with pytest.raises(InvalidReview, match=match):
        store.review(alert.alert_id, reviewer="alice", decision=decision, reason=reason)
    assert store.get(alert.alert_id).status == "pending"


def test_blank_reviewer_is_refused(store: ReviewStore) -> None:
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    with pytest.raises(InvalidReview, match="reviewer"):
        store.review(alert.alert_id, reviewer=" ", decision="confirm")


def test_reason_is_stripped_and_a_blank_note_is_none(store: ReviewStore) -> None:
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    assert store.review(alert.alert_id, reviewer="alice", decision="confirm", reason="  ").step.reason is None
    assert store.review(alert.alert_id, reviewer="bob", decision="reject", reason=" no ").step.reason == "no"


def test_unknown_alert(store: ReviewStore) -> None:
    with pytest.raises(AlertNotFound, match="never received"):
        store.get("0" * 32)
    with pytest.raises(AlertNotFound):
        store.chips("0" * 32)
    with pytest.raises(AlertNotFound):
        store.review("0" * 32, reviewer="alice", decision="confirm")


def test_expected_step_must_match(store: ReviewStore) -> None:
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    with pytest.raises(ReviewConflict) as err:
        store.review(alert.alert_id, reviewer="alice", decision="confirm", expected_step=2)
    assert err.value.reason == "stale_step"
    store.review(alert.alert_id, reviewer="alice", decision="confirm", expected_step=1)
    with pytest.raises(ReviewConflict, match="changed since you loaded it"):
        store.review(alert.alert_id, reviewer="bob", decision="confirm", expected_step=1)
    assert store.review(alert.alert_id, reviewer="bob", decision="confirm", expected_step=2).record.status == (
        "confirmed"
    )


def test_a_failing_before_commit_rolls_the_review_back(store: ReviewStore) -> None:
    alert = make_alert(capture_ts=T0)
    store.add_alert(alert)
    seen = []

    def refuse(outcome) -> None:  # noqa: ANN001
        seen.append(outcome.record.status)
        raise OSError("audit disk full")

    with pytest.raises(OSError, match="audit disk full"):
        store.review(alert.alert_id, reviewer="alice", decision="confirm", before_commit=refuse)
    assert seen == ["awaiting_second"]
    assert store.get(alert.alert_id).status == "pending" and store.get(alert.alert_id).reviews == ()
    assert store.tallies("dep-1") == Tallies("dep-1", alerts=1)


def test_precision_and_shares() -> None:
    assert Tallies("d", alerts=3).precision is None
    assert Tallies("d", alerts=3).false_alert_share is None
    t = Tallies("d", alerts=50, confirmed=8, rejected=34, awaiting_second=3)
    assert (t.adjudicated, t.unadjudicated, t.pending) == (42, 8, 5)
    assert t.precision == pytest.approx(8 / 42)
    assert t.false_alert_share == pytest.approx(34 / 42)


def test_tallies_across_deployments(store: ReviewStore) -> None:
    for i in range(3):
        store.add_alert(make_alert(track=f"a{i}", capture_ts=T0 + i, deployment="dep-a"))
    store.add_alert(make_alert(track="b0", capture_ts=T0, deployment="dep-b"))
    ids = [r.alert_id for r in store.list_alerts(deployment_id="dep-a").records]
    store.review(ids[0], reviewer="alice", decision="confirm")
    store.review(ids[0], reviewer="bob", decision="confirm")
    store.review(ids[1], reviewer="alice", decision="reject", reason="wrong")
    store.review(ids[2], reviewer="alice", decision="confirm")
    assert store.all_tallies() == [
        Tallies("dep-a", alerts=3, confirmed=1, rejected=1, awaiting_second=1),
        Tallies("dep-b", alerts=1),
    ]
    assert store.tallies("dep-a").precision == 0.5


def test_list_filters_order_and_cursor(store: ReviewStore) -> None:
    alerts = [
        make_alert(track=f"t{i}", camera="cam-1" if i % 2 else "cam-2", capture_ts=T0 - 100 + i,
                   deployment="dep-a" if i < 5 else "dep-b")
        for i in range(9)
    ]
    for a in alerts:
        store.add_alert(a)
    newest_first = [a.alert_id for a in reversed(alerts)]
    assert [r.alert_id for r in store.list_alerts().records] == newest_first

    got, cursor, pages = [], None, 0
    while True:
        page = store.list_alerts(limit=4, cursor=cursor)
        got += [r.alert_id for r in page.records]
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert got == newest_first and pages == 3

    assert {r.camera_id for r in store.list_alerts(camera_id="cam-1").records} == {"cam-1"}
    assert len(store.list_alerts(deployment_id="dep-b").records) == 4
    window = store.list_alerts(since=T0 - 98, until=T0 - 95).records
    assert [r.capture_ts for r in window] == [T0 - 96, T0 - 97, T0 - 98]
    store.review(alerts[3].alert_id, reviewer="alice", decision="confirm")
    assert [r.alert_id for r in store.list_alerts(status="awaiting_second").records] == [alerts[3].alert_id]
    assert len(store.list_alerts(status="pending").records) == 8
    assert store.list_alerts(status="confirmed").records == ()


def test_equal_capture_times_page_without_loss(store: ReviewStore) -> None:
    alerts = [make_alert(track=f"same{i}", capture_ts=T0) for i in range(5)]
    for a in alerts:
        store.add_alert(a)
    first = store.list_alerts(limit=2)
    rest = store.list_alerts(limit=10, cursor=first.next_cursor)
    ids = [r.alert_id for r in first.records + rest.records]
    assert sorted(ids) == sorted(a.alert_id for a in alerts) and len(set(ids)) == 5


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"limit": 0}, ValueError),
        ({"limit": 501}, ValueError),
        ({"status": "open"}, ValueError),
        ({"since": 5.0, "until": 5.0}, ValueError),
        ({"cursor": "not-a-cursor!"}, InvalidCursor),
        ({"cursor": "bm90aGluZw"}, InvalidCursor),
    ],
)
def test_list_refuses_bad_arguments(store: ReviewStore, kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        store.list_alerts(**kwargs)


def test_an_alert_older_than_the_record_retention_is_not_kept(store: ReviewStore, clock: Clock) -> None:
    alert = make_alert(capture_ts=clock.now - 7201)
    assert store.add_alert(alert) is False
    with pytest.raises(AlertNotFound):
        store.get(alert.alert_id)
    assert store.tallies("dep-1") is None


def test_an_alert_older_than_the_crop_retention_is_kept_without_crops(store: ReviewStore, clock: Clock) -> None:
    alert = make_alert(capture_ts=clock.now - 3601)
    assert store.add_alert(alert) is True
    record = store.get(alert.alert_id)
    assert (record.has_probe, record.has_reference, record.crops_purged_ts) == (False, False, clock.now)
    assert store.chips(alert.alert_id).probe is None
    with pytest.raises(ReviewConflict) as err:
        store.review(alert.alert_id, reviewer="alice", decision="confirm")
    assert err.value.reason == "crops_purged"
    assert store.review(alert.alert_id, reviewer="alice", decision="reject", reason="no image").record.status == (
        "rejected"
    )


def test_records_and_tallies_survive_reopening(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "sub" / "review.sqlite3"
    alert = make_alert(capture_ts=T0)
    with ReviewStore(path, clock=clock) as first:
        first.add_alert(alert)
        first.review(alert.alert_id, reviewer="alice", decision="confirm", reason="likely")
    with ReviewStore(path, clock=clock) as again:
        assert again.add_alert(alert) is False
        record = again.get(alert.alert_id)
        assert record.status == "awaiting_second" and record.reviews[0].reason == "likely"
        assert again.tallies("dep-1") == Tallies("dep-1", alerts=1, awaiting_second=1)
        assert again._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "review.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version=99")
    conn.close()
    with pytest.raises(ValueError, match="newer"):
        ReviewStore(path)


@pytest.mark.parametrize("crop, record", [(0, 10), (10, 5), (float("nan"), 10)])
def test_bad_retention_periods(crop: float, record: float) -> None:
    with pytest.raises(ValueError, match="retention"):
        ReviewStore(":memory:", crop_retention_s=crop, record_retention_s=record)


def test_concurrent_adds_and_reviews_from_threads(tmp_path: Path, clock: Clock) -> None:
    store = ReviewStore(tmp_path / "review.sqlite3", clock=clock)
    alerts = [make_alert(track=f"c{i}", capture_ts=T0 + i) for i in range(40)]
    errors: list[BaseException] = []

    def add(chunk) -> None:  # noqa: ANN001
        try:
            for a in chunk:
                store.add_alert(a)
                store.add_alert(a)  # a replay at the same time
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(alerts[i::4],)) for i in range(4)]
    threads += [threading.Thread(target=add, args=(alerts[::-1],))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert store.tallies("dep-1").alerts == 40

    def confirm(reviewer: str) -> None:
        for a in alerts:
            try:
                store.review(a.alert_id, reviewer=reviewer, decision="confirm")
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

    reviewers = [threading.Thread(target=confirm, args=(name,)) for name in ("alice", "bob")]
    for t in reviewers:
        t.start()
    for t in reviewers:
        t.join(30)
    assert errors == []
    # Whichever reviewer came first made step 1, the other step 2: every alert is confirmed.
    assert store.tallies("dep-1") == Tallies("dep-1", alerts=40, confirmed=40)
    assert {store.get(a.alert_id).status for a in alerts} == {"confirmed"}
    for a in alerts:
        reviewers_of = [s.reviewer for s in store.get(a.alert_id).reviews]
        assert len(set(reviewers_of)) == len(reviewers_of)  # never the same person twice
    store.close()

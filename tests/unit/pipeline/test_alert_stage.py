"""The alert stage: deterministic ids, dedup by id, cooldown in event time, restore after restart."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from openlfr.messages.models import Alert, Match
from openlfr.messages.topics import ALERTS
from openlfr.pipeline.alert import AlertSettings, AlertStage, DedupState, alert_id_for
from openlfr.pipeline.stage import Incoming

T0 = 1_700_000_000.0
NOW = T0 + 5.0


def _match(track: str, subject: str = "subject-1", *, camera: str = "cam-1", ts: float = T0) -> Match:
    return Match(
        camera_id=camera,
        frame_id=f"{track}-f",
        capture_ts=ts,
        trace_id="trace-0001",
        track_id=track,
        subject_id=subject,
        watchlist_id="wl",
        score=0.8,
        margin=0.1,
        votes=3,
        track_frames=5,
        threshold=0.705,
        first_seen_ts=ts - 1.0,
        probe_chip_jpeg=b"\xff\xd8\xff\xe0fake",
        reference_image_id="ref-1",
        embedder_model="dlib_resnet_v1",
    )


_OFFSETS = itertools.count()


def _batch(*matches: Match) -> list[Incoming[Match]]:
    """The matches at the next offsets of partition 0, as the runner delivers them."""
    return [Incoming(message=m, partition=0, offset=next(_OFFSETS)) for m in matches]


def _stage(cooldown_s: float = 60.0, id_retention_s: float = 3600.0) -> AlertStage:
    return AlertStage(AlertSettings(cooldown_s=cooldown_s, id_retention_s=id_retention_s))


def test_alert_id_is_deterministic_sha256_prefix() -> None:
    expected = hashlib.sha256(b"cam-1|cam-1:f1:0|subject-1").hexdigest()[:32]
    assert alert_id_for(camera_id="cam-1", track_id="cam-1:f1:0", subject_id="subject-1") == expected
    assert alert_id_for(camera_id="cam-1", track_id="cam-1:f1:0", subject_id="subject-2") != expected


def test_a_match_becomes_an_alert_carrying_its_fields() -> None:
    stage = _stage()
    result = stage.handle(_batch(_match("cam-1:f1:0")), now=NOW)
    assert result.dropped == {} and len(result.outputs) == 1
    out = result.outputs[0]
    assert out.topic is ALERTS and out.key == "cam-1"
    alert = out.message
    assert isinstance(alert, Alert)
    assert alert.alert_id == alert_id_for(camera_id="cam-1", track_id="cam-1:f1:0", subject_id="subject-1")
    assert (alert.capture_ts, alert.alert_ts, alert.status, alert.score) == (T0, NOW, "pending", 0.8)
    assert alert.probe_chip_jpeg == b"\xff\xd8\xff\xe0fake"


# (track, subject, camera, seconds after T0) in arrival order -> alerted or the drop reason.
CASES = {
    "same track and subject twice": (
        [("t1", "s1", "cam-1", 0), ("t1", "s1", "cam-1", 0)],
        ["alert", "duplicate"],
    ),
    "second track of one person within the cooldown": (
        [("t1", "s1", "cam-1", 0), ("t2", "s1", "cam-1", 59)],
        ["alert", "cooldown"],
    ),
    "second track after the cooldown": (
        [("t1", "s1", "cam-1", 0), ("t2", "s1", "cam-1", 60)],
        ["alert", "alert"],
    ),
    "same person on another camera": (
        [("t1", "s1", "cam-1", 0), ("t2", "s1", "cam-2", 1)],
        ["alert", "alert"],
    ),
    "another person on the same track": (
        [("t1", "s1", "cam-1", 0), ("t1", "s2", "cam-1", 0)],
        ["alert", "alert"],
    ),
    "a late match inside the cooldown window before the last alert": (
        [("t2", "s1", "cam-1", 100), ("t1", "s1", "cam-1", 50)],
        ["alert", "cooldown"],
    ),
    "a match older than the id retention cannot be proven new": (
        [("t2", "s1", "cam-1", 7200), ("t1", "s9", "cam-1", 0)],
        ["alert", "stale"],
    ),
}


@pytest.mark.parametrize(("events", "expected"), CASES.values(), ids=CASES.keys())
def test_dedup_in_event_time(events, expected) -> None:
    stage = _stage(cooldown_s=60.0, id_retention_s=3600.0)
    outcomes = []
    for track, subject, camera, dt in events:
        result = stage.handle(_batch(_match(track, subject, camera=camera, ts=T0 + dt)), now=NOW)
        outcomes.append("alert" if result.outputs else next(iter(result.dropped)))
    assert outcomes == expected


def test_dedup_within_one_batch_and_counts() -> None:
    stage = _stage()
    result = stage.handle(_batch(_match("t1"), _match("t1"), _match("t2", ts=T0 + 1), _match("t3", "s2")), now=NOW)
    assert len(result.outputs) == 2
    assert result.dropped == {"duplicate": 1, "cooldown": 1}


def test_cooldown_uses_event_time_not_wall_time() -> None:
    stage = _stage(cooldown_s=60.0)
    stage.handle(_batch(_match("t1", ts=T0)), now=NOW)
    # Processed an hour later (a backlog), but captured 10 s after the first: still suppressed.
    result = stage.handle(_batch(_match("t2", ts=T0 + 10)), now=NOW + 3600)
    assert result.dropped == {"cooldown": 1}


def test_restart_restored_from_published_alerts_never_alerts_twice() -> None:
    matches = [_match("t1", "s1", ts=T0), _match("t2", "s2", ts=T0 + 1), _match("t3", "s1", ts=T0 + 200)]
    first = _stage(cooldown_s=60.0)
    published = [o.message for o in first.handle(_batch(*matches), now=NOW).outputs]
    assert len(published) == 3

    # The service restarts: it replays the alerts topic into a fresh stage, then the matches
    # topic from the last committed offset (here: all of it again, plus a new second track).
    restarted = _stage(cooldown_s=60.0)
    assert restarted.restore(reversed(published)) == 3
    replay = restarted.handle(_batch(*matches, _match("t4", "s1", ts=T0 + 210)), now=NOW + 10)
    assert replay.outputs == []
    assert replay.dropped == {"duplicate": 3, "cooldown": 1}

    # Without the restore, the replay would alert again.
    naive = _stage(cooldown_s=60.0)
    assert len(naive.handle(_batch(*matches), now=NOW + 10).outputs) == 3


def test_a_batch_delivered_again_gives_the_same_alerts() -> None:
    stage = _stage()
    batch = _batch(_match("t1"), _match("t1"), _match("t2", "s2"))
    first = stage.handle(batch, now=NOW)
    assert len(first.outputs) == 2 and first.dropped == {"duplicate": 1}
    # Produce failed; the runner seeks back and hands over the same inputs: the same alerts come
    # out again (not suppressed as duplicates of themselves), with the same alert_ts.
    again = stage.handle(batch, now=NOW + 3)
    assert again.outputs == first.outputs and again.dropped == first.dropped
    # Once the runner has moved on, the same matches at new offsets are duplicates.
    later = stage.handle(_batch(_match("t1"), _match("t2", "s2")), now=NOW + 4)
    assert later.outputs == [] and later.dropped == {"duplicate": 2}


def test_state_is_bounded_in_event_time() -> None:
    state = DedupState(cooldown_s=60.0, retention_s=600.0)
    for i in range(100):
        ts = T0 + i * 30.0
        state.record(alert_id=f"{i:032x}", subject_id=f"s{i}", camera_id="cam-1", event_ts=ts)
        state.prune()
    # Watermark T0 + 2970: ids within 600 s (21 of them), pairs within 60 s (3).
    assert state.watermark == T0 + 2970.0
    assert len(state) == 21 and state.pairs == 3
    assert state.check(alert_id=f"{99:032x}", subject_id="s99", camera_id="cam-1", event_ts=T0 + 2970.0) == "duplicate"
    assert state.check(alert_id=f"{0:032x}", subject_id="s0", camera_id="cam-1", event_ts=T0) == "stale"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"cooldown_s": 100.0, "id_retention_s": 50.0}, "id_retention_s"), ({"cooldown_s": -1.0}, "cooldown_s")],
)
def test_bad_settings_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        AlertSettings(**kwargs)

"""The alert stage: deterministic ids, dedup by id, cooldown in event time, restore after restart;
per-camera event time that no future capture time can hijack; signatures and the registry's checks."""

from __future__ import annotations

import hashlib
import itertools

import pytest

from prometheus_client import CollectorRegistry

from openlfr.messages.models import Alert, Match
from openlfr.messages.signing import MatchSigner
from openlfr.messages.topics import ALERTS
from openlfr.pipeline.alert import AlertSettings, AlertStage, DedupState, alert_id_for
from openlfr.pipeline.match_trust import DeploymentFacts, StaticAuthority, SubjectFacts
from openlfr.pipeline.stage import Incoming

T0 = 1_700_000_000.0
NOW = T0 + 5.0
SIGNER = MatchSigner.ephemeral()
DEPLOYMENT = DeploymentFacts(
    deployment_id="dep-1", camera_ids=frozenset({"cam-1", "cam-2", "cam-x", "cam-y"}), start_ts=T0 - 3600,
    end_ts=T0 + 30 * 86400, watchlist_ids=frozenset({"wl"}), threshold=0.705,
)
SUBJECTS = [SubjectFacts(f"s{i}", "wl") for i in range(10)] + [SubjectFacts("subject-1", "wl")]
AUTHORITY = StaticAuthority(deployments=[DEPLOYMENT], subjects=SUBJECTS)


def _match(track: str, subject: str = "subject-1", *, camera: str = "cam-1", ts: float = T0) -> Match:
    return SIGNER.build(
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
        deployment_id="dep-1",
    )


_OFFSETS = itertools.count()


def _batch(*matches: Match) -> list[Incoming[Match]]:
    """The matches at the next offsets of partition 0, as the runner delivers them."""
    return [Incoming(message=m, partition=0, offset=next(_OFFSETS)) for m in matches]


def _stage(
    cooldown_s: float = 60.0, id_retention_s: float = 3600.0, registry: CollectorRegistry | None = None
) -> AlertStage:
    return AlertStage(AlertSettings(cooldown_s=cooldown_s, id_retention_s=id_retention_s), signer=SIGNER,
                      authority=AUTHORITY, registry=registry or CollectorRegistry())


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
    assert alert.scene_jpeg is None and alert.v == 2


def test_the_probes_scene_crop_goes_from_the_match_into_the_alert() -> None:
    scene = b"\xff\xd8\xff\xe0scene"
    match = SIGNER.sign(_match("cam-1:f1:0").model_copy(update={"scene_jpeg": scene}))
    alert = _stage().handle(_batch(match), now=NOW).outputs[0].message
    assert isinstance(alert, Alert) and alert.scene_jpeg == scene


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
        result = stage.handle(_batch(_match(track, subject, camera=camera, ts=T0 + dt)), now=NOW + 7200)
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
    assert restarted.restore(reversed(published), now=NOW + 10) == 3
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
    assert state.watermark("cam-1") == T0 + 2970.0 and state.watermark("cam-2") is None
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


# -- event time per camera: a capture time from the future silences no one ----------------------


def test_a_match_from_the_future_silences_no_camera_nor_after_a_restart() -> None:
    """A match captured 48 h ahead (a camera clock two days fast, or forged) moved the old global
    watermark so far that every later match from every camera was stale, and the alerts topic
    carried that watermark into every restart. Now it is refused, and cameras keep their own time."""
    registry = CollectorRegistry()
    stage = _stage(cooldown_s=60.0, id_retention_s=86400.0, registry=registry)
    future = stage.handle(_batch(_match("tf", "s9", camera="cam-x", ts=NOW + 48 * 3600)), now=NOW)
    assert future.outputs == [] and len(future.rejected) == 1
    reason = future.rejected[0][1]
    assert reason.startswith("clock_ahead: capture_ts") and "172800.0 s ahead" in reason
    assert "OPENLFR_MAX_CLOCK_SKEW_S=300" in reason
    assert registry.get_sample_value(
        "openlfr_capture_time_ahead_total", {"stage": "alert", "camera_id": "cam-x"}) == 1.0
    assert registry.get_sample_value("openlfr_alert_matches_refused_total", {"reason": "clock_ahead"}) == 1.0

    ordinary = stage.handle(
        _batch(_match("t1", "s1", camera="cam-x", ts=NOW), _match("t2", "s2", camera="cam-y", ts=NOW)), now=NOW + 1)
    assert [o.message.camera_id for o in ordinary.outputs] == ["cam-x", "cam-y"]

    restarted = _stage(cooldown_s=60.0, id_retention_s=86400.0)
    restarted.restore([o.message for o in ordinary.outputs], now=NOW + 10)
    after = restarted.handle(
        _batch(_match("t3", "s3", camera="cam-x", ts=NOW + 8), _match("t4", "s4", camera="cam-y", ts=NOW + 8)),
        now=NOW + 10)
    assert [o.message.camera_id for o in after.outputs] == ["cam-x", "cam-y"]


def test_an_alert_published_ahead_of_the_clock_does_not_silence_its_camera_after_a_restart() -> None:
    """Alerts written by a version without the check may carry a capture time days ahead: restored,
    they are remembered by id, but move their camera's watermark only to the clock plus the skew."""
    old_stage = AlertStage(AlertSettings(), signer=SIGNER, authority=AUTHORITY, max_clock_skew_s=None,
                           registry=CollectorRegistry())
    published = [o.message for o in old_stage.handle(_batch(_match("tf", "s9", camera="cam-x", ts=NOW + 48 * 3600)),
                                                     now=NOW).outputs]
    assert len(published) == 1
    restarted = _stage(cooldown_s=60.0, id_retention_s=86400.0)
    restarted.restore(published, now=NOW)
    assert restarted.state.watermark("cam-x") == NOW + 300.0
    again = _match("tf", "s9", camera="cam-x", ts=NOW + 48 * 3600)
    after = restarted.handle(_batch(_match("t1", "s1", camera="cam-x", ts=NOW), again), now=NOW + 1)
    assert [o.message.subject_id for o in after.outputs] == ["s1"]
    assert after.dropped == {} and [r.split(":")[0] for _, r in after.rejected] == ["clock_ahead"]


def test_one_cameras_time_does_not_move_anothers() -> None:
    stage = _stage(cooldown_s=60.0, id_retention_s=3600.0)
    # cam-1 is two hours ahead of cam-2 (a backlog on cam-2, or cam-1's clock): both still alert.
    first = stage.handle(_batch(_match("t1", "s1", camera="cam-1", ts=T0 + 7200)), now=T0 + 7205)
    late = stage.handle(_batch(_match("t2", "s2", camera="cam-2", ts=T0)), now=T0 + 7206)
    assert len(first.outputs) == len(late.outputs) == 1
    # On cam-1 itself a match two hours behind its newest cannot be proven new.
    stale = stage.handle(_batch(_match("t3", "s3", camera="cam-1", ts=T0)), now=T0 + 7207)
    assert stale.dropped == {"stale": 1}


# -- trust: the match stage's signature and the registry's checks ---------------------------------


def test_a_match_not_signed_with_the_key_is_refused_and_counted() -> None:
    registry = CollectorRegistry()
    stage = _stage(registry=registry)
    genuine = _match("t1", "s1")
    forged = MatchSigner.ephemeral().sign(genuine)  # another key
    tampered = genuine.model_copy(update={"threshold": 0.1})  # the genuine signature, another record
    result = stage.handle(_batch(forged, tampered), now=NOW)
    assert result.outputs == [] and result.dropped == {}
    assert [r for _, r in result.rejected] == [
        "bad_signature: sig is not the match stage's signature under OPENLFR_MATCH_SIGNING_KEY"] * 2
    assert registry.get_sample_value("openlfr_alert_matches_refused_total", {"reason": "bad_signature"}) == 2.0
    assert len(stage.handle(_batch(genuine), now=NOW).outputs) == 1


def test_a_previous_key_is_accepted_while_matches_signed_with_it_drain() -> None:
    old = MatchSigner.ephemeral()
    rotated = MatchSigner("n" * 16 + "ew-key-0123456789abcdef", previous=[old._key.decode()])  # noqa: SLF001
    stage = AlertStage(AlertSettings(), signer=rotated, authority=AUTHORITY, registry=CollectorRegistry())
    result = stage.handle(_batch(old.sign(_match("t1")), rotated.sign(_match("t2", "s2"))), now=NOW)
    assert len(result.outputs) == 2 and result.rejected == []


def _with(**changes: object) -> Match:
    fields = _match("t1", "s1").model_dump(exclude={"sig", "v", "kind"})
    return SIGNER.build(**{**fields, **changes})


PER_SUBJECT = DeploymentFacts(
    deployment_id="dep-ps", camera_ids=frozenset({"cam-1"}), start_ts=T0 - 3600, end_ts=T0 + 3600,
    watchlist_ids=frozenset({"wl"}), threshold=0.6, norm_threshold=3.0,
)
ENDED = DeploymentFacts(deployment_id="dep-ended", camera_ids=frozenset({"cam-1"}), start_ts=T0 - 3600,
                        end_ts=T0 - 60, watchlist_ids=frozenset({"wl"}), threshold=0.705)
CHECKED = StaticAuthority(deployments=[DEPLOYMENT, PER_SUBJECT, ENDED],
                          subjects=[*SUBJECTS, SubjectFacts("other-list", "wl-2")])

# A signed match that the registry does not back -> the refusal reason (None: it alerts).
TRUST_CASES = {
    "a genuine match": ({}, None),
    "unknown deployment": ({"deployment_id": "dep-nope"}, "unknown_deployment: deployment 'dep-nope' is not"),
    "a camera the deployment does not cover": ({"camera_id": "cam-9"}, "outside_deployment: deployment 'dep-1' "
                                                                        "does not cover camera 'cam-9'"),
    "before the deployment's start": ({"capture_ts": T0 - 7200}, "outside_deployment: capture_ts"),
    "after the deployment ended": ({"deployment_id": "dep-ended"}, "outside_deployment: capture_ts"),
    "a watchlist the deployment does not search": ({"watchlist_id": "wl-2", "subject_id": "other-list"},
                                                   "watchlist_not_deployed: watchlist 'wl-2'"),
    "unknown subject": ({"subject_id": "nobody"}, "unknown_subject: subject 'nobody' is not in the registry"),
    "subject on another watchlist": ({"subject_id": "other-list"}, "subject_not_on_watchlist: subject 'other-list' "
                                                                   "is on watchlist 'wl-2', not 'wl'"),
    "threshold 0.1": ({"threshold": 0.1}, "below_threshold: threshold 0.1 is below the 0.705 of deployment 'dep-1'"),
    "score under its own threshold": ({"score": 0.5}, "below_threshold: score 0.5 is below its threshold 0.705"),
    "per-subject deployment, no normalised score": ({"deployment_id": "dep-ps"}, "below_threshold: deployment "
                                                                                 "'dep-ps' has per-subject"),
    "per-subject deployment, normalised threshold lowered": (
        {"deployment_id": "dep-ps", "normalised_score": 9.0, "normalised_threshold": 1.0},
        "below_threshold: normalised threshold 1 is below the 3 of deployment 'dep-ps'"),
    "per-subject deployment, normalised score under it": (
        {"deployment_id": "dep-ps", "normalised_score": 2.0, "normalised_threshold": 3.0},
        "below_threshold: normalised score 2 is below its threshold 3"),
    "per-subject deployment, a genuine match": (
        {"deployment_id": "dep-ps", "normalised_score": 3.5, "normalised_threshold": 3.0}, None),
}


@pytest.mark.parametrize(("changes", "refusal"), TRUST_CASES.values(), ids=TRUST_CASES.keys())
def test_the_registry_backs_every_alert(changes: dict, refusal: str | None) -> None:
    registry = CollectorRegistry()
    stage = AlertStage(AlertSettings(), signer=SIGNER, authority=CHECKED, registry=registry)
    result = stage.handle(_batch(_with(**changes)), now=NOW)
    if refusal is None:
        assert len(result.outputs) == 1 and result.rejected == []
        return
    assert result.outputs == [] and result.dropped == {} and len(result.rejected) == 1
    assert result.rejected[0][1].startswith(refusal), result.rejected[0][1]
    reason = refusal.split(":")[0]
    assert registry.get_sample_value("openlfr_alert_matches_refused_total", {"reason": reason}) == 1.0

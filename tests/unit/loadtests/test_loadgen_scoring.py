"""Latency percentiles and alert correctness of the load generator."""

from __future__ import annotations

import pytest

from openlfr.testing.loadgen import GroundTruth, ObservedAlert, TruthFace, check_alerts, latency_summary, percentile


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, None),
        ([3.0], 0.99, 3.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0.0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 1.0, 4.0),
        (list(range(1, 101)), 0.95, 95.05),
        (list(range(1, 101)), 0.99, 99.01),
    ],
)
def test_percentile_interpolates_linearly(values: list[float], q: float, expected: float | None) -> None:
    got = percentile(values, q)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_percentile_refuses_a_quantile_outside_0_1() -> None:
    with pytest.raises(ValueError, match="q="):
        percentile([1.0], 1.5)


def test_latency_summary() -> None:
    s = latency_summary([0.1, 0.2, 0.3, 0.4])
    assert s["n"] == 4 and s["max_s"] == 0.4 and s["mean_s"] == pytest.approx(0.25)
    assert s["p50_s"] == pytest.approx(0.25) and s["p99_s"] == pytest.approx(0.397)
    assert latency_summary([])["p99_s"] is None


def _face(walk: str, person: str, enrolled: bool) -> TruthFace:
    return TruthFace(walk, person, enrolled, (0, 0, 10, 10))


def _truth() -> GroundTruth:
    """cam-1: alice (enrolled) 10.0-10.8, a stranger bob 10.0-10.4; cam-2: carol (enrolled) 20.0-20.2
    (3 frames), dave (enrolled) only 2 frames at 30.0-30.2, nobody at 40.0, the stranger eve at 50.0."""
    truth = GroundTruth()
    for i in range(5):
        faces = [_face("w-a", "alice", True)] + ([_face("w-b", "bob", False)] if i < 3 else [])
        truth.add_frame("cam-1", 10.0 + 0.2 * i, faces)
    for i in range(3):
        truth.add_frame("cam-2", 20.0 + 0.1 * i, [_face("w-c", "carol", True)])
    for i in range(2):
        truth.add_frame("cam-2", 30.0 + 0.2 * i, [_face("w-d", "dave", True)])
    truth.add_frame("cam-2", 40.0, [])
    truth.add_frame("cam-2", 50.0, [_face("w-e", "eve", False)])
    return truth


def test_truth_collects_appearances() -> None:
    truth = _truth()
    assert truth.frames == 12 and truth.faces == 14
    alice = truth.appearances[("cam-1", "w-a#0")]
    assert (alice.first_ts, alice.last_ts, alice.frames, alice.enrolled) == (10.0, 10.8, 5, True)


def test_every_expected_alert_once_is_ok() -> None:
    alerts = [ObservedAlert("cam-1", "alice", 10.4), ObservedAlert("cam-2", "carol", 20.1)]
    result = check_alerts(_truth(), alerts, min_frames=3, slack_s=0.05)
    assert result.ok and result.expected == 2 and result.matched == 2 and result.recall == 1.0


def test_missing_duplicate_and_unexpected_are_each_reported() -> None:
    alerts = [
        ObservedAlert("cam-1", "alice", 10.2),
        ObservedAlert("cam-1", "alice", 10.6),  # duplicate: same appearance
        ObservedAlert("cam-2", "carol", 50.0),  # only the stranger eve is on screen
        ObservedAlert("cam-1", "carol", 10.8),  # carol is not on cam-1; alice (enrolled) is
        ObservedAlert("cam-2", "carol", 35.0),  # nobody on screen then
    ]
    result = check_alerts(_truth(), alerts, min_frames=3, slack_s=0.05)
    assert not result.ok
    assert [(a.camera_id, a.person_id) for a in result.missing] == [("cam-2", "carol")]
    assert [(a.person_id, n) for a, n in result.duplicates] == [("alice", 2)]
    assert sorted(u.reason for u in result.unexpected) == ["no_walker", "stranger", "wrong_identity"]
    summary = result.summary()
    assert summary["missing"] == 1 and summary["duplicates"] == 1 and summary["unexpected"] == 3
    assert summary["unexpected_by_reason"] == {"stranger": 1, "wrong_identity": 1, "no_walker": 1}


def test_a_too_short_appearance_is_not_required_but_its_alert_is_not_wrong() -> None:
    alerts = [ObservedAlert("cam-1", "alice", 10.0), ObservedAlert("cam-2", "carol", 20.0),
              ObservedAlert("cam-2", "dave", 30.2)]
    result = check_alerts(_truth(), alerts, min_frames=3, slack_s=0.05)
    assert result.ok and result.expected == 2 and result.extra_ok == 1


def test_passes_of_a_looped_pool_are_separate_appearances() -> None:
    truth = GroundTruth()
    for p in range(2):
        for i in range(3):
            truth.add_frame("cam", 100.0 * (p + 1) + i, [_face("w0", "alice", True)], pass_no=p)
    result = check_alerts(truth, [ObservedAlert("cam", "alice", 101.0)], min_frames=3, slack_s=0.1)
    assert result.expected == 2 and [a.key for a in result.missing] == ["w0#1"]


def test_min_frames_must_be_positive() -> None:
    with pytest.raises(ValueError, match="min_frames"):
        check_alerts(GroundTruth(), [], min_frames=0, slack_s=0.1)


def _two_passes(gap_s: float) -> GroundTruth:
    """alice on cam: frames 0.0-1.0 (w0), then again from 1.0 + gap_s (w1), 3 frames each."""
    truth = GroundTruth()
    for walk, start in (("w0", 0.0), ("w1", 1.0 + gap_s)):
        for i in range(3):
            truth.add_frame("cam", start + 0.5 * i, [_face(walk, "alice", True)])
    return truth


def test_passes_within_the_track_gap_are_one_presence_one_alert_or_two() -> None:
    truth = _two_passes(2.0)  # the tracker may join them (gap == max gap) or not
    one = check_alerts(truth, [ObservedAlert("cam", "alice", 0.5)], min_frames=3, slack_s=0.1, rejoin_gap_s=2.0)
    assert one.ok and one.expected == 1 and one.extra_ok == 0
    two = check_alerts(truth, [ObservedAlert("cam", "alice", 0.5), ObservedAlert("cam", "alice", 3.5)],
                       min_frames=3, slack_s=0.1, rejoin_gap_s=2.0)
    assert two.ok and two.expected == 1 and two.extra_ok == 1
    strict = check_alerts(truth, [ObservedAlert("cam", "alice", 0.5)], min_frames=3, slack_s=0.1)
    assert not strict.ok and [a.key for a in strict.missing] == ["w1#0"]


def test_passes_further_apart_than_the_track_gap_each_must_alert() -> None:
    truth = _two_passes(3.0)
    result = check_alerts(truth, [ObservedAlert("cam", "alice", 0.5)], min_frames=3, slack_s=0.1, rejoin_gap_s=2.0)
    assert not result.ok and result.expected == 2 and [a.key for a in result.missing] == ["w1#0"]


def test_a_presence_still_counts_a_second_alert_on_one_pass_as_duplicate() -> None:
    truth = _two_passes(1.0)
    alerts = [ObservedAlert("cam", "alice", 0.0), ObservedAlert("cam", "alice", 1.0)]
    result = check_alerts(truth, alerts, min_frames=3, slack_s=0.1, rejoin_gap_s=2.0)
    assert not result.ok and [(a.key, n) for a, n in result.duplicates] == [("w0#0", 2)]


def test_short_passes_that_add_up_only_if_joined_are_not_required_nor_wrong() -> None:
    truth = GroundTruth()
    for walk, start in (("w0", 0.0), ("w1", 2.0)):
        for i in range(2):
            truth.add_frame("cam", start + 0.5 * i, [_face(walk, "alice", True)])
    silent = check_alerts(truth, [], min_frames=3, slack_s=0.1, rejoin_gap_s=2.0)
    assert silent.ok and silent.expected == 0
    joined = check_alerts(truth, [ObservedAlert("cam", "alice", 2.0)], min_frames=3, slack_s=0.1, rejoin_gap_s=2.0)
    assert joined.ok and joined.extra_ok == 1


def test_rejoin_gap_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="rejoin_gap_s"):
        check_alerts(GroundTruth(), [], min_frames=1, slack_s=0.1, rejoin_gap_s=-1.0)

"""Track-level rates under the match stage's vote, where votes make the difference."""

from __future__ import annotations

import math

import pytest

from openlfr.evaluation.tracks import track_level

NO = -math.inf  # another identity ranked first
MATED = [
    [0.80, 0.75, 0.60, 0.72],  # 3 votes at 0.7
    [0.90, NO, 0.71, 0.50],  # 2 votes
    [0.65, 0.68],  # 0 votes
]
NONMATED = [
    [0.72, 0.30, 0.40],  # 1 vote: a stray frame
    [0.71, 0.75, 0.73, 0.20],  # 3 votes
    [0.10],  # none
]


@pytest.mark.parametrize(
    ("min_votes", "track_tpir", "track_fpir"),
    [
        (1, 2 / 3, 2 / 3),  # any frame decides: the stray frame alerts too
        (2, 2 / 3, 1 / 3),  # the stray frame no longer does
        (3, 1 / 3, 1 / 3),  # the 2-vote mated track is lost
        (4, 0 / 3, 0 / 3),
    ],
)
def test_votes_trade_true_for_false_alerts(min_votes: int, track_tpir: float, track_fpir: float) -> None:
    r = track_level(MATED, NONMATED, threshold=0.7, min_votes=min_votes)
    assert r.frame_tpir == 5 / 10  # 3 + 2 + 0 voting frames of 10
    assert r.frame_fpir == 4 / 8  # 1 + 3 + 0 of 8
    assert r.track_tpir == pytest.approx(track_tpir)
    assert r.track_fpir == pytest.approx(track_fpir)
    assert (r.n_tracks_mated, r.n_tracks_nonmated, r.n_frames_mated, r.n_frames_nonmated) == (3, 3, 10, 8)
    assert r.track_fpir_upper_bound


def test_votes_count_per_subject_when_subjects_are_given() -> None:
    # The 3-vote non-mated track voted s1, s2, s1: no subject reaches 3 votes, s1 reaches 2.
    subjects = [["s1", "s1", "s1"], ["s1", "s2", "s1", "s1"], ["s3"]]
    at_3 = track_level(MATED, NONMATED, threshold=0.7, min_votes=3, nonmated_subjects=subjects)
    assert at_3.track_fpir == 0.0 and not at_3.track_fpir_upper_bound
    at_2 = track_level(MATED, NONMATED, threshold=0.7, min_votes=2, nonmated_subjects=subjects)
    assert at_2.track_fpir == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("mated", "nonmated", "kwargs", "message"),
    [
        ([], NONMATED, dict(threshold=0.7, min_votes=1), "mated tracks: no tracks"),
        (MATED, [], dict(threshold=0.7, min_votes=1), "non-mated tracks: no tracks"),
        ([[0.8], []], NONMATED, dict(threshold=0.7, min_votes=1), r"mated tracks\[1\]: no scores"),
        (MATED, [[math.nan]], dict(threshold=0.7, min_votes=1), "NaN"),
        (MATED, NONMATED, dict(threshold=0.7, min_votes=0), "min_votes"),
        (MATED, NONMATED, dict(threshold=math.inf, min_votes=1), "threshold"),
        (MATED, NONMATED, dict(threshold=0.7, min_votes=1, nonmated_subjects=[["a"]]), "nonmated_subjects"),
        (
            MATED, NONMATED, dict(threshold=0.7, min_votes=1, nonmated_subjects=[["a"], ["b"], ["c"]]),
            r"nonmated_subjects\[0\]: 1 subjects for 3 frames",
        ),
    ],
)
def test_bad_track_inputs_are_refused(mated, nonmated, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        track_level(mated, nonmated, **kwargs)

"""Track-level identification: what the match stage's vote does to the frame-level rates.

The match stage (``openlfr.pipeline.match``) does not alert on a frame. A frame *votes* for a
subject when that subject is the top hit at or above the deployment's threshold, and a track
matches a subject once ``min_votes`` of its frames have voted for that subject. Requiring
several votes trades some true identifications (short tracks, a mate seen badly) for far fewer
false alerts (one stray frame no longer suffices), and this module measures both sides.

Not modelled here: the stage's margin rule (the runner-up subject must be some distance
behind) and its quality gate, which both remove further votes. Frames of one track are not
independent, so frame-level rates are for comparison, not for confidence intervals.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openlfr.evaluation.metrics import check_scores, check_threshold

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrackResult:
    """Frame- and track-level identification rates at one threshold and vote count.

    Attributes:
        threshold: the score a frame's top hit must reach to vote.
        min_votes: votes for one subject a track needs to match it.
        frame_tpir: share of mated frames whose mate is ranked first at or above the threshold.
        frame_fpir: share of non-mated frames whose top score is at or above the threshold.
        track_tpir: share of mated tracks with at least ``min_votes`` such frames.
        track_fpir: share of non-mated tracks where some subject gets ``min_votes`` votes.
        n_tracks_mated: mated tracks.
        n_tracks_nonmated: non-mated tracks.
        n_frames_mated: frames of the mated tracks.
        n_frames_nonmated: frames of the non-mated tracks.
        track_fpir_upper_bound: True when the subjects of non-mated votes were not given, so
            every vote of a track was counted for one subject: ``track_fpir`` is then an upper
            bound (votes split between subjects may not reach ``min_votes`` for any).
    """

    threshold: float
    min_votes: int
    frame_tpir: float
    frame_fpir: float
    track_tpir: float
    track_fpir: float
    n_tracks_mated: int
    n_tracks_nonmated: int
    n_frames_mated: int
    n_frames_nonmated: int
    track_fpir_upper_bound: bool


def _tracks(sequences: Sequence[Sequence[float]], *, name: str) -> list[np.ndarray]:
    if len(sequences) == 0:
        raise ValueError(f"{name}: no tracks given (empty)")
    tracks = []
    for index, sequence in enumerate(sequences):
        tracks.append(check_scores(sequence, name=f"{name}[{index}]"))
    return tracks


def track_level(
    sequences: Sequence[Sequence[float]],
    nonmated_sequences: Sequence[Sequence[float]],
    *,
    threshold: float,
    min_votes: int,
    nonmated_subjects: Sequence[Sequence[str]] | None = None,
) -> TrackResult:
    """Identification rates per frame and per track under the match stage's vote.

    Args:
        sequences: per mated track, per frame, the mate's score when the mate was ranked first
            and ``-inf`` when another identity was.
        nonmated_sequences: per non-mated track, per frame, the top score.
        threshold: a frame votes when its score is at or above it.
        min_votes: a track matches a subject when at least this many frames vote for it.
        nonmated_subjects: per non-mated track, per frame, the subject ranked first; when given,
            votes count per subject as the stage counts them. Without it every vote of a track
            is counted for one subject (an upper bound of ``track_fpir``).

    Raises:
        ValueError: no tracks, an empty track, NaN or ``+inf`` scores, a non-finite threshold,
            ``min_votes`` below 1, ``nonmated_subjects`` not parallel to ``nonmated_sequences``.
    """
    threshold = check_threshold(threshold)
    if int(min_votes) != min_votes or min_votes < 1:
        raise ValueError(f"min_votes must be a whole number >= 1, got {min_votes!r}")
    mated = _tracks(sequences, name="mated tracks")
    nonmated = _tracks(nonmated_sequences, name="non-mated tracks")
    if nonmated_subjects is not None:
        if len(nonmated_subjects) != len(nonmated):
            raise ValueError(
                f"nonmated_subjects: {len(nonmated_subjects)} tracks for {len(nonmated)} non-mated tracks"
            )
        for index, (subjects, scores) in enumerate(zip(nonmated_subjects, nonmated, strict=True)):
            if len(subjects) != scores.size:
                raise ValueError(
                    f"nonmated_subjects[{index}]: {len(subjects)} subjects for {scores.size} frames"
                )

    mated_votes = [int((track >= threshold).sum()) for track in mated]
    nonmated_votes = [track >= threshold for track in nonmated]
    if nonmated_subjects is None:
        most_votes = [int(votes.sum()) for votes in nonmated_votes]
    else:
        most_votes = []
        for votes, subjects in zip(nonmated_votes, nonmated_subjects, strict=True):
            per_subject = Counter(str(s) for s, v in zip(subjects, votes, strict=True) if v)
            most_votes.append(max(per_subject.values(), default=0))

    n_frames_mated = sum(track.size for track in mated)
    n_frames_nonmated = sum(track.size for track in nonmated)
    return TrackResult(
        threshold=threshold,
        min_votes=int(min_votes),
        frame_tpir=sum(mated_votes) / n_frames_mated,
        frame_fpir=sum(int(v.sum()) for v in nonmated_votes) / n_frames_nonmated,
        track_tpir=sum(v >= min_votes for v in mated_votes) / len(mated),
        track_fpir=sum(v >= min_votes for v in most_votes) / len(nonmated),
        n_tracks_mated=len(mated),
        n_tracks_nonmated=len(nonmated),
        n_frames_mated=n_frames_mated,
        n_frames_nonmated=n_frames_nonmated,
        track_fpir_upper_bound=nonmated_subjects is None,
    )

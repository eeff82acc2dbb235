"""Cohort statistics and the normalised score."""

from __future__ import annotations

import numpy as np
import pytest

from openlfr.cohort.exceptions import CohortError
from openlfr.cohort.norm import MIN_SD, NormStats, ScoreNorm, normalise, normalise_arrays, score_matrix, top_k_for
from openlfr.watchlist.store import distance_to_score


def test_score_matrix_is_the_stores_score() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 8)) * 0.3, rng.normal(size=(4, 8)) * 0.3
    expected = [[distance_to_score(float(np.linalg.norm(x - y))) for y in b] for x in a]
    np.testing.assert_allclose(score_matrix(a, b), expected, atol=1e-6)


@pytest.mark.parametrize(("n", "fraction", "expected"), [(100, 0.1, 10), (20, 0.1, 5), (3000, 0.1, 300), (7, 1.0, 7)])
def test_top_k_for(n: int, fraction: float, expected: int) -> None:
    assert top_k_for(n, fraction) == expected


@pytest.mark.parametrize(("n", "fraction"), [(4, 0.1), (100, 0.0), (100, 1.5)])
def test_top_k_for_refuses(n: int, fraction: float) -> None:
    with pytest.raises(CohortError):
        top_k_for(n, fraction)


def test_statistics_are_of_the_top_k_scores() -> None:
    rng = np.random.default_rng(2)
    cohort = rng.normal(size=(50, 16)).astype(np.float32) * 0.2
    probe = rng.normal(size=16).astype(np.float32) * 0.2
    norm = ScoreNorm(cohort, top_k=7)
    scores = np.sort(score_matrix(probe[None, :], cohort)[0])[::-1][:7]
    stats = norm.stats(probe)
    assert stats.mu == pytest.approx(float(scores.mean()), abs=1e-5)
    assert stats.sd == pytest.approx(max(float(scores.std()), MIN_SD), abs=1e-5)


def test_exclude_self_leaves_out_the_diagonal() -> None:
    rng = np.random.default_rng(3)
    cohort = rng.normal(size=(30, 16)).astype(np.float32) * 0.2
    norm = ScoreNorm(cohort, top_k=5)
    mu_in, _ = norm.stats_arrays(cohort)
    mu_out, _ = norm.stats_arrays(cohort, exclude_self=True)
    # With itself included, the top score of each face is 1.0 (itself): the mean is higher.
    assert (mu_in > mu_out).all()


def test_a_crowded_face_needs_a_higher_raw_score() -> None:
    """Two references: one with many cohort faces near it, one in an empty region. For the same
    probe statistics, the crowded reference's raw score must be higher to reach the same z."""
    rng = np.random.default_rng(4)
    crowded = np.zeros(16, np.float32)
    sparse = np.full(16, 0.5, np.float32)
    cohort = np.concatenate([crowded + rng.normal(size=(20, 16)) * 0.05, sparse + rng.normal(size=(20, 16)) * 0.4])
    norm = ScoreNorm(cohort.astype(np.float32), top_k=10)
    s_crowded, s_sparse = norm.stats(crowded), norm.stats(sparse)
    probe = NormStats(mu=0.5, sd=0.05)
    raw_for_z3 = lambda ref: (3.0 * 2 - (-ref.mu / ref.sd - probe.mu / probe.sd)) / (1 / ref.sd + 1 / probe.sd)  # noqa: E731
    assert raw_for_z3(s_crowded) > raw_for_z3(s_sparse)
    assert normalise(raw_for_z3(s_crowded), s_crowded, probe) == pytest.approx(3.0)


def test_normalise_arrays_matches_normalise() -> None:
    scores = np.array([[0.6, 0.7], [0.8, 0.5]])
    refs = [NormStats(0.55, 0.02), NormStats(0.6, 0.05)]
    probes = [NormStats(0.5, 0.03), NormStats(0.52, 0.04)]
    z = normalise_arrays(scores, np.array([r.mu for r in refs]), np.array([r.sd for r in refs]),
                         np.array([p.mu for p in probes]), np.array([p.sd for p in probes]))
    for i, ref in enumerate(refs):
        for j, probe in enumerate(probes):
            assert z[i, j] == pytest.approx(normalise(scores[i, j], ref, probe))


@pytest.mark.parametrize("bad", [np.zeros((0, 4)), np.full((3, 4), np.nan), np.zeros(4)])
def test_score_norm_refuses_bad_cohorts(bad: np.ndarray) -> None:
    with pytest.raises(CohortError):
        ScoreNorm(bad, top_k=1)


def test_norm_stats_refuses_zero_sd() -> None:
    with pytest.raises(ValueError, match="sd > 0"):
        NormStats(mu=0.5, sd=0.0)

"""Adaptive symmetric score normalisation against a background cohort.

A raw score says how close two faces are; how surprising that closeness is depends on where
the faces sit. Some people's faces lie among many look-alikes in the model's space (this
model's crowding of children's faces and of East Asian faces is measured in docs/accuracy.md),
so a stranger reaches a high raw score against them far more often than against a face in a
sparse region. One global threshold therefore gives some people many more false alerts than
others. Normalising each score by how the two faces score against a cohort of people on no
watchlist removes most of that difference without recording anyone's group.

For a face ``x`` its statistics are the mean ``mu(x)`` and standard deviation ``sd(x)`` of its
``top_k`` highest scores against the *stats* part of the cohort (its nearest look-alikes: the
"adaptive" part, which measured better than the whole cohort, see
``benchmarks/subject_calibration.py``). The normalised score of a reference ``r`` and a probe
``p`` with raw score ``s`` is

    z = ((s - mu(r)) / sd(r) + (s - mu(p)) / sd(p)) / 2

so a pair in a crowded region must be closer, in raw terms, to reach the same ``z``. The
reference's statistics are computed once at enrolment (stored with the reference), the probe's
once per face at query time (``top_k`` of a few thousand dot products: well under a
millisecond), and nothing about the probe is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openlfr.cohort.exceptions import CohortError

#: Share of the stats cohort whose highest scores make a face's statistics.
DEFAULT_TOP_FRACTION = 0.1
#: Fewest highest scores a statistic is taken over.
MIN_TOP_K = 5
#: Floor on a standard deviation, so a degenerate cohort cannot divide by zero.
MIN_SD = 1e-3


def score_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Scores ``1 - euclidean_distance / 2`` (clipped to 0..1) of every row of ``a`` against
    every row of ``b``, float32 (the store's ``distance_to_score`` in array form)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    squared = (a * a).sum(axis=1)[:, None] + (b * b).sum(axis=1)[None, :] - 2.0 * (a @ b.T)
    return np.clip(1.0 - np.sqrt(np.maximum(squared, 0.0)) / 2.0, 0.0, 1.0).astype(np.float32)


def top_k_for(n_stats: int, top_fraction: float = DEFAULT_TOP_FRACTION) -> int:
    """How many of the highest cohort scores make a statistic for a stats cohort of ``n_stats``.

    Raises:
        CohortError: a stats cohort smaller than ``MIN_TOP_K`` or a fraction outside (0, 1].
    """
    if not 0.0 < top_fraction <= 1.0:
        raise CohortError(f"top_fraction must be in (0, 1], got {top_fraction!r}")
    if n_stats < MIN_TOP_K:
        raise CohortError(f"the cohort's stats part has {n_stats} faces; at least {MIN_TOP_K} are needed")
    return min(n_stats, max(MIN_TOP_K, int(round(top_fraction * n_stats))))


@dataclass(frozen=True, slots=True)
class NormStats:
    """A face's statistics against the stats cohort: mean and SD of its ``top_k`` highest scores."""

    mu: float
    sd: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and math.isfinite(self.sd) and self.sd > 0.0):
            raise ValueError(f"NormStats: expected a finite mu and sd > 0, got mu={self.mu!r} sd={self.sd!r}")


class ScoreNorm:
    """Computes cohort statistics of faces and normalised scores (see the module docstring).

    Args:
        stats_vectors: (m, d) vectors of the cohort's stats part.
        top_k: how many of the highest scores make a statistic (``top_k_for``).
        cohort_id: the cohort's id (``Cohort.short_id``), stored with every statistic.
    """

    def __init__(self, stats_vectors: np.ndarray, *, top_k: int, cohort_id: str = "") -> None:
        vectors = np.asarray(stats_vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[0] == 0 or not np.isfinite(vectors).all():
            raise CohortError(f"stats vectors: expected a non-empty finite (m, d) array, got shape {vectors.shape}")
        if not 1 <= top_k <= vectors.shape[0]:
            raise CohortError(f"top_k must be in 1..{vectors.shape[0]}, got {top_k}")
        self.vectors = vectors
        self.top_k = int(top_k)
        self.cohort_id = cohort_id

    @property
    def dim(self) -> int:
        """Length of the vectors this normaliser takes."""
        return int(self.vectors.shape[1])

    def stats_arrays(self, vectors: np.ndarray, *, exclude_self: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sd) arrays of every row of ``vectors`` (n, d).

        Args:
            exclude_self: ``vectors`` are the stats vectors themselves; each row's score with
                itself is left out.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"vectors: expected shape (n, {self.dim}), got {vectors.shape}")
        if vectors.shape[0] == 0:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        scores = score_matrix(vectors, self.vectors)
        k = self.top_k
        if exclude_self:
            np.fill_diagonal(scores, -np.inf)
            k = min(k, scores.shape[1] - 1)
        top = -np.partition(-scores, k - 1, axis=1)[:, :k]
        mu = top.mean(axis=1, dtype=np.float64)
        sd = np.maximum(top.std(axis=1, dtype=np.float64), MIN_SD)
        return mu.astype(np.float32), sd.astype(np.float32)

    def stats(self, vector: np.ndarray) -> NormStats:
        """The statistics of one vector."""
        mu, sd = self.stats_arrays(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        return NormStats(mu=float(mu[0]), sd=float(sd[0]))


def normalise(score: float | np.ndarray, reference: NormStats, probe: NormStats) -> float | np.ndarray:
    """The normalised score of a raw ``score`` between a reference and a probe."""
    return 0.5 * ((score - reference.mu) / reference.sd + (score - probe.mu) / probe.sd)


def normalise_arrays(
    scores: np.ndarray, ref_mu: np.ndarray, ref_sd: np.ndarray, probe_mu: np.ndarray, probe_sd: np.ndarray
) -> np.ndarray:
    """``normalise`` over a (references, probes) score matrix and per-row / per-column stats."""
    return 0.5 * (
        (scores - ref_mu[:, None]) / ref_sd[:, None] + (scores - probe_mu[None, :]) / probe_sd[None, :]
    )

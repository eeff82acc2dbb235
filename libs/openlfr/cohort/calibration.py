"""Impostor and genuine scores of the cohort's held-out part, and thresholds read from them.

Every pair of calibration faces of two different people is an impostor comparison; its raw
score and its normalised score (both faces' statistics taken against the *stats* part only)
are kept, sorted. A threshold for a per-comparison false-match target ``f`` is then the
smallest score that at most ``f`` of them reach, measured when the pairs can resolve ``f``
(``n * f >= 1``) and extrapolated from a model of the upper tail when they cannot
(``openlfr.evaluation.metrics.threshold_at_rate``: a normal and a generalized Pareto fit, the
stricter of the two). Pairs of one person's two images, where there are any, are genuine
comparisons: the share of them below a threshold estimates how many watchlisted people it
would miss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openlfr.cohort.exceptions import CohortError
from openlfr.cohort.norm import ScoreNorm, normalise_arrays, score_matrix
from openlfr.evaluation.metrics import ThresholdEstimate, rate_at_threshold, share_below, threshold_at_rate

#: Most impostor pairs kept (a seeded sample beyond): enough for a tail fit of any target.
MAX_IMPOSTOR_PAIRS = 4_000_000
#: Rows of the pair matrix computed at once (bounds memory on large cohorts).
_BLOCK = 512
#: Fewest impostor pairs a calibration may rest on.
MIN_IMPOSTOR_PAIRS = 300


@dataclass(frozen=True)
class CohortCalibration:
    """Sorted scores of the held-out part's pairs.

    Attributes:
        impostor_z, impostor_raw: normalised and raw scores of pairs of different people.
        genuine_z, genuine_raw: the same for pairs of one person (may be empty).
    """

    impostor_z: np.ndarray
    impostor_raw: np.ndarray
    genuine_z: np.ndarray
    genuine_raw: np.ndarray

    @property
    def n_impostor(self) -> int:
        return int(self.impostor_z.size)

    @property
    def n_genuine(self) -> int:
        return int(self.genuine_z.size)

    def z_threshold(self, per_comparison_fmr: float) -> ThresholdEstimate:
        """The normalised threshold at a per-comparison false-match target."""
        return threshold_at_rate(self.impostor_z, per_comparison_fmr)

    def raw_fmr(self, threshold: float) -> tuple[float, str]:
        """The per-comparison false-match rate of one global raw threshold, and how it was had."""
        return rate_at_threshold(self.impostor_raw, threshold)

    def z_fnmr(self, z_threshold: float) -> float | None:
        """Share of the cohort's genuine pairs below a normalised threshold (None: no genuine pairs)."""
        return float(share_below(self.genuine_z, z_threshold)) if self.genuine_z.size else None

    def raw_fnmr(self, threshold: float) -> float | None:
        """Share of the cohort's genuine pairs below a raw threshold (None: no genuine pairs)."""
        return float(share_below(self.genuine_raw, threshold)) if self.genuine_raw.size else None

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays as the cohort file stores them."""
        return {
            "impostor_z": self.impostor_z.astype(np.float32),
            "impostor_raw": self.impostor_raw.astype(np.float32),
            "genuine_z": self.genuine_z.astype(np.float32),
            "genuine_raw": self.genuine_raw.astype(np.float32),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> CohortCalibration:
        """From the cohort file's arrays (KeyError when one is missing)."""
        return cls(**{k: np.sort(np.asarray(arrays[k], dtype=np.float64)) for k in (
            "impostor_z", "impostor_raw", "genuine_z", "genuine_raw")})


def calibrate_cohort(norm: ScoreNorm, vectors: np.ndarray, people: Sequence[str], *, seed: int = 0) -> CohortCalibration:
    """Score every pair of the held-out faces ``vectors`` (n, d) of ``people`` (one key each).

    Raises:
        CohortError: too few impostor pairs (``MIN_IMPOSTOR_PAIRS``).
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    n = vectors.shape[0]
    keys = np.array(people)
    if keys.shape != (n,):
        raise ValueError(f"people: expected {n} keys, got {keys.shape}")
    mu, sd = norm.stats_arrays(vectors)
    total_pairs = n * (n - 1) // 2
    keep = 1.0 if total_pairs <= MAX_IMPOSTOR_PAIRS else MAX_IMPOSTOR_PAIRS / total_pairs
    rng = np.random.default_rng(seed)
    imp_z: list[np.ndarray] = []
    imp_raw: list[np.ndarray] = []
    gen_z: list[np.ndarray] = []
    gen_raw: list[np.ndarray] = []
    for start in range(0, n, _BLOCK):
        stop = min(n, start + _BLOCK)
        raw = score_matrix(vectors[start:stop], vectors)
        z = normalise_arrays(raw, mu[start:stop], sd[start:stop], mu, sd)
        rows = np.arange(start, stop)[:, None]
        upper = np.arange(n)[None, :] > rows  # each unordered pair once
        same = keys[start:stop, None] == keys[None, :]
        impostor = upper & ~same
        if keep < 1.0:
            impostor &= rng.random(impostor.shape) < keep
        imp_z.append(z[impostor])
        imp_raw.append(raw[impostor])
        genuine = upper & same
        gen_z.append(z[genuine])
        gen_raw.append(raw[genuine])
    calibration = CohortCalibration(
        impostor_z=np.sort(np.concatenate(imp_z).astype(np.float64)),
        impostor_raw=np.sort(np.concatenate(imp_raw).astype(np.float64)),
        genuine_z=np.sort(np.concatenate(gen_z).astype(np.float64)),
        genuine_raw=np.sort(np.concatenate(gen_raw).astype(np.float64)),
    )
    if calibration.n_impostor < MIN_IMPOSTOR_PAIRS:
        raise CohortError(
            f"the cohort's calibration part gives {calibration.n_impostor} impostor pairs; at least "
            f"{MIN_IMPOSTOR_PAIRS} are needed (about {math.ceil(math.sqrt(2 * MIN_IMPOSTOR_PAIRS)) * 2} people)"
        )
    return calibration

"""1:N open-set identification figures, as NIST's FRVT/FRTE identification reports define them.

A *search* is one probe face compared with every template of a gallery (a watchlist). A gallery
identity may have several templates (reference images); its score for a probe is the best of
them, as the store's search returns one hit per subject.

- A *mated* search is of someone enrolled. It succeeds at threshold ``T`` when the mate is
  ranked first and scores at least ``T``: FNIR(T) is the share that do not.
- A *non-mated* search is of someone not enrolled. It raises a (false) alert at ``T`` when its
  top score is at least ``T``: FPIR(T) is the share that do.
- A mate tied with another identity for first place is not counted at rank 1: which one the
  store returns first is then arbitrary, and an accountable figure does not assume luck.

FPIR grows with the gallery: every enrolled identity is one more chance for a stranger to score
high. ``extrapolate_fpir`` gives the usual model of that growth and ``fpir_vs_gallery_size``
checks it on real sub-galleries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from openlfr.evaluation.metrics import (
    check_rate,
    check_threshold,
    empirical_threshold,
    resolvable,
    share_at_or_above,
    share_below,
    threshold_at_rate,
)

logger = logging.getLogger(__name__)

IdentificationMethod = Literal[
    "empirical",
    "per-comparison:empirical",
    "per-comparison:tail-fit:normal",
    "per-comparison:tail-fit:gpd",
    "unresolved",
]


_PER_COMPARISON: dict[str, IdentificationMethod] = {
    "empirical": "per-comparison:empirical",
    "tail-fit:normal": "per-comparison:tail-fit:normal",
    "tail-fit:gpd": "per-comparison:tail-fit:gpd",
}


def similarity_matrix(probes: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Scores of every probe against every gallery template, ``(n, m)``.

    ``score = clip(1 - euclidean_distance / 2, 0, 1)``: the array form of
    ``openlfr.watchlist.store.distance_to_score``, so figures computed here hold for the
    thresholds deployments use.

    Raises:
        ValueError: empty, not 2-D, descriptor lengths differ, or non-finite values.
    """
    p = np.asarray(probes, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    for name, array in (("probes", p), ("gallery", g)):
        if array.ndim != 2:
            raise ValueError(f"{name}: expected shape (n, d), got {array.shape}")
        if array.shape[0] == 0:
            raise ValueError(f"{name}: no descriptors given (empty)")
        if not np.isfinite(array).all():
            raise ValueError(f"{name}: non-finite values (NaN or inf)")
    if p.shape[1] != g.shape[1]:
        raise ValueError(f"descriptor lengths differ: probes {p.shape[1]}, gallery {g.shape[1]}")
    squared = (p * p).sum(axis=1)[:, None] + (g * g).sum(axis=1)[None, :] - 2.0 * (p @ g.T)
    distance = np.sqrt(np.maximum(squared, 0.0))
    return np.clip(1.0 - distance / 2.0, 0.0, 1.0)


def extrapolate_fpir(fmr1: float, gallery_size: int) -> float:
    """Expected FPIR of a gallery of ``gallery_size`` identities: ``1 - (1 - fmr1) ** N``.

    ``fmr1`` is the per-comparison false match rate at the threshold: the chance that one
    stranger scores at or above it against one enrolled identity. The model assumes the N
    comparisons of a search are independent. They are not quite: a face that looks like many
    people (or a poor image that looks like no one) is high or low against the whole gallery at
    once, so measured FPIR usually grows more slowly than the model; ``fpir_vs_gallery_size``
    shows by how much. For small ``fmr1`` it is about ``N * fmr1``.

    Raises:
        ValueError: ``fmr1`` outside [0, 1] or ``gallery_size`` below 1.
    """
    rate = float(fmr1)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"fmr1 must be in [0, 1], got {fmr1!r}")
    if int(gallery_size) != gallery_size or gallery_size < 1:
        raise ValueError(f"gallery_size must be a whole number >= 1, got {gallery_size!r}")
    if rate == 1.0:
        return 1.0
    return float(-math.expm1(int(gallery_size) * math.log1p(-rate)))


def per_comparison_fmr_target(target_fpir: float, gallery_size: int) -> float:
    """The per-comparison FMR ``f1`` whose modelled FPIR is ``target_fpir``:
    ``1 - (1 - target_fpir) ** (1 / N)``, the inverse of ``extrapolate_fpir``."""
    target = check_rate(target_fpir, name="target_fpir")
    if int(gallery_size) != gallery_size or gallery_size < 1:
        raise ValueError(f"gallery_size must be a whole number >= 1, got {gallery_size!r}")
    return float(-math.expm1(math.log1p(-target) / int(gallery_size)))


@dataclass(frozen=True, slots=True)
class IdentificationPoint:
    """An open-set operating point for a target FPIR.

    Attributes:
        target_fpir: the FPIR asked for.
        threshold: the score threshold (NaN when ``method`` is ``"unresolved"``).
        fnir: FNIR at ``threshold``, always measured on the mated searches (NaN when unresolved).
        fpir: FPIR at ``threshold``: measured on the non-mated searches when ``achievable``;
            otherwise the model ``1 - (1 - per_comparison_fmr) ** gallery_size``.
        achievable: whether the non-mated searches can resolve the target
            (``n_nonmated >= 1/target``).
        extrapolated: True when not achievable and the threshold comes instead from the
            per-comparison impostor scores (every non-mated probe-identity pair) through the
            independence model of ``extrapolate_fpir``.
        method: ``"empirical"`` (from the non-mated searches), ``"per-comparison:empirical"``,
            ``"per-comparison:tail-fit:normal"`` / ``"per-comparison:tail-fit:gpd"``
            (extrapolated beyond the largest impostor score by a tail model, see
            ``openlfr.evaluation.metrics.threshold_at_rate``) or ``"unresolved"``.
        per_comparison_fmr: the per-comparison FMR at ``threshold`` (measured, or the tail
            model's for a tail fit; NaN when unresolved).
        fpir_measured: the FPIR measured on the non-mated searches at ``threshold``, whatever
            ``achievable`` says (NaN when unresolved); with few searches it is mostly 0.
    """

    target_fpir: float
    threshold: float
    fnir: float
    fpir: float
    achievable: bool
    extrapolated: bool
    method: IdentificationMethod
    per_comparison_fmr: float
    fpir_measured: float


@dataclass(frozen=True, slots=True)
class OpenSetResult:
    """Open-set identification figures of a set of searches against one gallery.

    Attributes:
        n_mated: searches of enrolled people.
        n_nonmated: searches of people not enrolled.
        gallery_size: enrolled identities (not templates).
        rank1: share of mated searches with the mate ranked first, whatever its score.
        thresholds: ascending scores where FNIR or FPIR changes.
        fnir: FNIR at each threshold.
        fpir: FPIR at each threshold.
        identities: the gallery identities, in the column order of ``nonmated_identity_scores``.
        mated_scores: per mated search, the mate's score when ranked first, else ``-inf``
            (so ``FNIR(T) = share < T``).
        nonmated_top: per non-mated search, the top score.
        nonmated_identity_scores: ``(n_nonmated, gallery_size)`` per-identity (max over
            templates) scores of the non-mated searches, for ``fpir_vs_gallery_size``.
        impostor_scores: every non-mated (probe, identity) score, ascending: the non-mated
            searches against every identity and the mated ones against every identity but the
            mate. The per-comparison impostor distribution (``calibrate`` takes it).
    """

    n_mated: int
    n_nonmated: int
    gallery_size: int
    rank1: float
    thresholds: np.ndarray
    fnir: np.ndarray
    fpir: np.ndarray
    identities: tuple[str, ...]
    mated_scores: np.ndarray
    nonmated_top: np.ndarray
    nonmated_identity_scores: np.ndarray
    impostor_scores: np.ndarray

    def fnir_at(self, threshold: float) -> float:
        """FNIR at any threshold."""
        return float(share_below(np.sort(self.mated_scores), check_threshold(threshold)))

    def fpir_at(self, threshold: float) -> float:
        """FPIR at any threshold, measured on the non-mated searches."""
        return float(share_at_or_above(np.sort(self.nonmated_top), check_threshold(threshold)))

    def fnir_at_fpir(self, target: float) -> IdentificationPoint:
        """FNIR at the smallest threshold whose FPIR is at most ``target``.

        When the non-mated searches cannot resolve ``target`` (fewer than ``1/target``), the
        threshold is instead set so that the per-comparison FMR is
        ``f1 = 1 - (1 - target) ** (1 / gallery_size)`` on ``impostor_scores`` (extrapolated by a
        tail fit when even they cannot resolve ``f1``), and the point says so
        (``achievable=False``, ``extrapolated=True``, ``fpir`` modelled).

        Raises:
            ValueError: ``target`` outside (0, 1).
        """
        target = check_rate(target, name="target fpir")
        sorted_top = np.sort(self.nonmated_top)
        if resolvable(self.n_nonmated, target):
            threshold = empirical_threshold(sorted_top, target)
            fpir = float(share_at_or_above(sorted_top, threshold))
            return IdentificationPoint(
                target_fpir=target,
                threshold=threshold,
                fnir=self.fnir_at(threshold),
                fpir=fpir,
                achievable=True,
                extrapolated=False,
                method="empirical",
                per_comparison_fmr=float(share_at_or_above(self.impostor_scores, threshold)),
                fpir_measured=fpir,
            )
        f1 = per_comparison_fmr_target(target, self.gallery_size)
        estimate = threshold_at_rate(self.impostor_scores, f1)
        if estimate.method == "unresolved":
            logger.warning(
                'fpir target unresolved target="%g" n_nonmated="%d" n_impostor="%d"',
                target, self.n_nonmated, self.impostor_scores.size,
            )
            return IdentificationPoint(
                target_fpir=target, threshold=math.nan, fnir=math.nan, fpir=math.nan, achievable=False,
                extrapolated=False, method="unresolved", per_comparison_fmr=math.nan, fpir_measured=math.nan,
            )
        return IdentificationPoint(
            target_fpir=target,
            threshold=estimate.threshold,
            fnir=self.fnir_at(estimate.threshold),
            fpir=extrapolate_fpir(estimate.rate, self.gallery_size),
            achievable=False,
            extrapolated=True,
            method=_PER_COMPARISON[estimate.method],
            per_comparison_fmr=estimate.rate,
            fpir_measured=float(share_at_or_above(sorted_top, estimate.threshold)),
        )


def _identity_scores(scores: np.ndarray, gallery_ids: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """Per-identity scores (max over each identity's templates), identities sorted."""
    identities, codes = np.unique(np.asarray(list(gallery_ids), dtype=object).astype(str), return_inverse=True)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(identities.size), side="left")
    per_identity = np.maximum.reduceat(scores[:, order], starts, axis=1)
    return tuple(str(i) for i in identities), per_identity


def open_set(
    scores: np.ndarray,
    gallery_ids: Sequence[str],
    probe_ids: Sequence[str],
    *,
    enrolled: set[str],
) -> OpenSetResult:
    """Open-set figures of ``scores`` ``(n_probes, n_gallery_templates)``.

    Args:
        scores: probe-by-template scores (``similarity_matrix``), higher is more similar.
        gallery_ids: the identity of each template (column); an identity may have several.
        probe_ids: the identity of each probe (row).
        enrolled: the enrolled identities: exactly the identities in ``gallery_ids``. A probe
            whose identity is enrolled is a mated search, any other a non-mated one.

    Raises:
        ValueError: empty or mis-shaped input, non-finite scores, ``enrolled`` not the gallery's
            identities, or no mated or no non-mated search.
    """
    matrix = np.asarray(scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"scores: expected shape (n_probes, n_gallery_templates), got {matrix.shape}")
    if matrix.shape[0] == 0:
        raise ValueError("scores: no probes (0 rows)")
    if matrix.shape[1] == 0:
        raise ValueError("scores: no gallery templates (0 columns)")
    if not np.isfinite(matrix).all():
        raise ValueError(f"scores: {int((~np.isfinite(matrix)).sum())} non-finite value(s) (NaN or inf)")
    if len(gallery_ids) != matrix.shape[1]:
        raise ValueError(f"gallery_ids: {len(gallery_ids)} ids for {matrix.shape[1]} template columns")
    if len(probe_ids) != matrix.shape[0]:
        raise ValueError(f"probe_ids: {len(probe_ids)} ids for {matrix.shape[0]} probe rows")
    gallery_set = {str(i) for i in gallery_ids}
    enrolled_set = {str(i) for i in enrolled}
    if enrolled_set != gallery_set:
        missing = sorted(enrolled_set - gallery_set)[:5]
        unlisted = sorted(gallery_set - enrolled_set)[:5]
        raise ValueError(
            "enrolled must be exactly the gallery's identities: "
            f"enrolled without templates {missing}, templates of identities not enrolled {unlisted}"
        )

    identities, per_identity = _identity_scores(matrix, gallery_ids)
    column = {identity: j for j, identity in enumerate(identities)}
    probes = [str(p) for p in probe_ids]
    mated_rows = np.array([r for r, p in enumerate(probes) if p in enrolled_set], dtype=np.intp)
    nonmated_rows = np.array([r for r, p in enumerate(probes) if p not in enrolled_set], dtype=np.intp)
    if mated_rows.size == 0:
        raise ValueError("open_set: no mated searches (no probe identity is enrolled)")
    if nonmated_rows.size == 0:
        raise ValueError("open_set: no non-mated searches (every probe identity is enrolled)")

    mates = np.array([column[probes[r]] for r in mated_rows], dtype=np.intp)
    mated = per_identity[mated_rows]
    mate_score = mated[np.arange(mated_rows.size), mates]
    others = mated.copy()
    others[np.arange(mated_rows.size), mates] = -np.inf
    # Strictly ahead of every other identity: a tie is not a rank-1 identification.
    at_rank1 = mate_score > others.max(axis=1)
    mated_scores = np.where(at_rank1, mate_score, -np.inf)

    nonmated = per_identity[nonmated_rows]
    nonmated_top = nonmated.max(axis=1)
    mated_impostor = others[np.isfinite(others)]  # every identity but the mate
    impostor = np.sort(np.concatenate([nonmated.ravel(), mated_impostor]))

    sorted_hits = np.sort(mated_scores)
    sorted_top = np.sort(nonmated_top)
    thresholds = np.unique(np.concatenate([mated_scores[at_rank1], nonmated_top]))
    return OpenSetResult(
        n_mated=int(mated_rows.size),
        n_nonmated=int(nonmated_rows.size),
        gallery_size=len(identities),
        rank1=float(at_rank1.mean()),
        thresholds=thresholds,
        fnir=np.asarray(share_below(sorted_hits, thresholds), dtype=np.float64),
        fpir=np.asarray(share_at_or_above(sorted_top, thresholds), dtype=np.float64),
        identities=identities,
        mated_scores=mated_scores,
        nonmated_top=nonmated_top,
        nonmated_identity_scores=nonmated,
        impostor_scores=impostor,
    )


@dataclass(frozen=True, slots=True)
class GallerySizePoint:
    """FPIR measured on random sub-galleries of one size, beside the independence model.

    Attributes:
        size: identities in each sub-gallery.
        fpir_measured: mean FPIR over the random sub-galleries.
        fpir_model: ``1 - (1 - fmr1) ** size``.
        fmr1: the per-comparison FMR at the threshold over all (probe, identity) scores.
    """

    size: int
    fpir_measured: float
    fpir_model: float
    fmr1: float


def fpir_vs_gallery_size(
    nonmated_scores: np.ndarray,
    sizes: Sequence[int],
    threshold: float,
    *,
    rng_seed: int = 0,
    repeats: int = 20,
) -> list[GallerySizePoint]:
    """How FPIR grows with the watchlist, measured and modelled.

    For each size N, ``repeats`` sub-galleries of N identities are drawn without replacement
    (the same draws for the same seed) and the FPIR of the non-mated searches against each is
    averaged. The model is ``1 - (1 - fmr1) ** N`` with ``fmr1`` the share of all (probe,
    identity) scores at or above ``threshold``: it assumes a stranger's comparisons with
    different enrolled people are independent, which faces that resemble many people break;
    the gap between the two columns is how much.

    Args:
        nonmated_scores: ``(n_nonmated, n_gallery_identities)`` per-identity (max over
            templates) scores of non-mated searches (``OpenSetResult.nonmated_identity_scores``).
        sizes: gallery sizes, each 1..n_gallery_identities.
        threshold: the score threshold.
        rng_seed: seed of the sub-gallery draws.
        repeats: sub-galleries drawn per size.

    Raises:
        ValueError: empty or mis-shaped scores, non-finite scores, a size out of range, no
            sizes, ``repeats`` below 1.
    """
    matrix = np.asarray(nonmated_scores, dtype=np.float64)
    if matrix.ndim != 2:
        raise ValueError(f"nonmated_scores: expected shape (n_nonmated, n_identities), got {matrix.shape}")
    if matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"nonmated_scores: empty (shape {matrix.shape}): need non-mated searches and identities")
    if not np.isfinite(matrix).all():
        raise ValueError("nonmated_scores: non-finite values (NaN or inf)")
    threshold = check_threshold(threshold)
    if len(sizes) == 0:
        raise ValueError("sizes: no gallery sizes given (empty)")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    n_identities = matrix.shape[1]
    for size in sizes:
        if int(size) != size or not 1 <= size <= n_identities:
            raise ValueError(f"sizes: {size!r} is not a whole number in 1..{n_identities}")

    hits = matrix >= threshold
    fmr1 = float(hits.mean())
    rng = np.random.default_rng(rng_seed)
    points = []
    for size in sizes:
        n = int(size)
        measured = [
            float(hits[:, rng.choice(n_identities, size=n, replace=False)].any(axis=1).mean()) for _ in range(repeats)
        ]
        points.append(
            GallerySizePoint(
                size=n, fpir_measured=float(np.mean(measured)), fpir_model=extrapolate_fpir(fmr1, n), fmr1=fmr1
            )
        )
    return points

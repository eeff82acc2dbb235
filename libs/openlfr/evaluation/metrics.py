"""Shared pieces of the evaluation figures: score checks, thresholds at a target rate, and the
1:1 verification curve over *scores*.

Everything here is in scores as deployments use them (``openlfr.watchlist.store.distance_to_score``:
``1 - distance / 2`` clipped to 0..1, higher is more similar), and a comparison is declared a
match when its score is **at or above** the threshold, as the match stage does.

Thresholds at a target rate. Given the scores of the negatives (impostor pairs, non-mated
searches) sorted ascending, ``s_1 <= ... <= s_n``, and a target false positive rate ``r``, at most
``k = floor(r * n)`` negatives may reach the threshold. The smallest threshold that allows no more
is the smallest float strictly above ``s_(n-k)``, the (k+1)-th largest score
(``numpy.nextafter(s_(n-k), inf)``): exact with ties, and the lowest threshold (so the most true
matches) that meets the target on the data. Such a threshold means something only when the
negatives can resolve the target, ``n * r >= 1``; below that the empirical rate is 0 for every
threshold above the largest negative, which says nothing about ``r``. Then the threshold can only
be extrapolated from a model of the upper tail (``threshold_at_rate``), and every figure says so.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np

from openlfr.evaluation.verification import equal_error_rate, roc

logger = logging.getLogger(__name__)

#: Fewest negatives a tail model is fitted on (their top tenth, 30 or more, is fitted).
MIN_TAIL_FIT = 300
#: Share of the largest negatives the tail model is fitted to.
TAIL_FRACTION = 0.1
#: Slack on ``rate * n`` so that floating-point error (``0.1 * 30 = 3.0000000000000004``) does not
#: drop or add a permitted negative.
_COUNT_SLACK = 1e-9
#: Most points of the tail the normal fit regresses on.
_TAIL_POINTS = 1000
_STANDARD_NORMAL = NormalDist()

ThresholdMethod = Literal["empirical", "tail-fit:normal", "tail-fit:gpd", "unresolved"]


# -- input checks ----------------------------------------------------------------------------


def check_scores(
    values: object, *, name: str, allow_empty: bool = False, allow_minus_inf: bool = True
) -> np.ndarray:
    """``values`` as a 1-D float64 array of scores.

    ``-inf`` is allowed unless ``allow_minus_inf`` is False (it stands for "no score": the mate
    was not ranked first); NaN and ``+inf`` never are.

    Raises:
        ValueError: not 1-D, empty (unless ``allow_empty``), NaN, ``+inf`` or a refused ``-inf``.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of scores, got shape {array.shape}")
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{name}: no scores given (empty)")
    n_nan = int(np.isnan(array).sum())
    if n_nan:
        raise ValueError(f"{name}: {n_nan} NaN score(s) of {array.size}")
    if np.isposinf(array).any():
        raise ValueError(f"{name}: +inf score(s); scores are finite (or -inf for 'no score')")
    if not allow_minus_inf and np.isneginf(array).any():
        raise ValueError(f"{name}: -inf score(s); these scores must be finite")
    return array


def check_rate(value: float, *, name: str) -> float:
    """A target rate strictly between 0 and 1.

    Raises:
        ValueError: NaN, 0 or less, 1 or more.
    """
    rate = float(value)
    if not 0.0 < rate < 1.0:  # also false for NaN
        raise ValueError(f"{name} must be in (0, 1), got {value!r}")
    return rate


def check_threshold(value: float, *, name: str = "threshold") -> float:
    """A finite threshold (a score).

    Raises:
        ValueError: NaN or infinite.
    """
    threshold = float(value)
    if not math.isfinite(threshold):
        raise ValueError(f"{name} must be a finite score, got {value!r}")
    return threshold


def resolvable(n_negatives: int, rate: float) -> bool:
    """Whether ``n_negatives`` can resolve a false positive rate of ``rate`` (``n * rate >= 1``)."""
    return n_negatives * rate >= 1.0 - _COUNT_SLACK


# -- rates and thresholds ----------------------------------------------------------------------


def share_at_or_above(sorted_scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray | float:
    """Share of ``sorted_scores`` (ascending) that are ``>= threshold``."""
    below = np.searchsorted(sorted_scores, threshold, side="left")
    return (sorted_scores.size - below) / sorted_scores.size


def share_below(sorted_scores: np.ndarray, threshold: float | np.ndarray) -> np.ndarray | float:
    """Share of ``sorted_scores`` (ascending) that are ``< threshold``."""
    return np.searchsorted(sorted_scores, threshold, side="left") / sorted_scores.size


def empirical_threshold(sorted_negatives: np.ndarray, rate: float) -> float:
    """Smallest threshold at which at most ``floor(rate * n)`` negatives score at or above it.

    ``sorted_negatives`` ascending, non-empty. See the module docstring for why it is the float
    just above the (k+1)-th largest score.
    """
    n = sorted_negatives.size
    k = min(int(math.floor(rate * n + _COUNT_SLACK)), n)
    if k >= n:
        return float(sorted_negatives[0])
    return float(np.nextafter(sorted_negatives[n - 1 - k], np.inf))


def _tail_size(n: int) -> int:
    return max(30, int(n * TAIL_FRACTION))


@dataclass(frozen=True, slots=True)
class ParetoTail:
    """A generalized Pareto model of the negatives above ``u`` (Hosking and Wallis' PWM fit).

    ``P(X > u + y) = tail_share * (1 + shape * y / scale) ** (-1 / shape)`` for ``y >= 0``
    (``tail_share * exp(-y / scale)`` when ``shape`` is 0). Negative shapes have an end point at
    ``u + scale / -shape``.
    """

    u: float
    shape: float
    scale: float
    tail_share: float

    def quantile(self, rate: float) -> float:
        """The score exceeded with probability ``rate`` (``rate < tail_share``)."""
        q = rate / self.tail_share
        if abs(self.shape) < 1e-9:
            return self.u - self.scale * math.log(q)
        return self.u + self.scale / self.shape * (q ** (-self.shape) - 1.0)

    def exceedance(self, threshold: float) -> float:
        """``P(X >= threshold)`` under the model, for thresholds at or above ``u``."""
        y = max(0.0, threshold - self.u)
        if abs(self.shape) < 1e-9:
            return self.tail_share * math.exp(-y / self.scale)
        base = 1.0 + self.shape * y / self.scale
        if base <= 0.0:
            return 0.0
        return self.tail_share * base ** (-1.0 / self.shape)


@dataclass(frozen=True, slots=True)
class NormalTail:
    """A normal model fitted to the upper tail only: ``P(X >= t) = 1 - Phi((t - mean) / sd)``.

    ``mean`` and ``sd`` are the least-squares line through the top order statistics against
    their normal quantiles (a probability plot of the tail), so the bulk of the scores does not
    pull the fit.
    """

    mean: float
    sd: float

    def quantile(self, rate: float) -> float:
        """The score exceeded with probability ``rate``."""
        return self.mean - self.sd * _STANDARD_NORMAL.inv_cdf(rate)

    def exceedance(self, threshold: float) -> float:
        """``P(X >= threshold)`` under the model."""
        return _STANDARD_NORMAL.cdf((self.mean - threshold) / self.sd)


def fit_pareto_tail(sorted_negatives: np.ndarray) -> ParetoTail | None:
    """Fit a generalized Pareto model to the top ``TAIL_FRACTION`` of ``sorted_negatives``.

    Probability-weighted moments (Hosking and Wallis, 1987) rather than maximum likelihood: no
    optimiser and always defined. ``None`` when there are fewer than ``MIN_TAIL_FIT`` finite
    negatives or the tail is degenerate (all exceedances equal).
    """
    finite = sorted_negatives[np.isfinite(sorted_negatives)]
    n = finite.size
    if n < MIN_TAIL_FIT:
        return None
    k = _tail_size(n)
    u = float(finite[n - k - 1])
    y = finite[n - k :] - u  # ascending, >= 0
    a0 = float(y.mean())
    # Unbiased estimate of a1 = E[Y (1 - F(Y))]: weights (k - j) / (k - 1), j = 1..k ascending.
    a1 = float(np.dot(y, (k - np.arange(1, k + 1)) / (k - 1)) / k)
    denominator = a0 - 2.0 * a1
    if a0 <= 0.0 or denominator <= 0.0:
        return None
    kappa = a0 / denominator - 2.0  # Hosking's shape; the usual one is -kappa
    return ParetoTail(u=u, shape=-kappa, scale=2.0 * a0 * a1 / denominator, tail_share=k / n)


def fit_normal_tail(sorted_negatives: np.ndarray) -> NormalTail | None:
    """Fit a normal model to the top ``TAIL_FRACTION`` of ``sorted_negatives`` (a tail
    probability plot, at most ``_TAIL_POINTS`` points of it). ``None`` when there are fewer than
    ``MIN_TAIL_FIT`` finite negatives or the tail is flat."""
    finite = sorted_negatives[np.isfinite(sorted_negatives)]
    n = finite.size
    if n < MIN_TAIL_FIT:
        return None
    k = _tail_size(n)
    index = np.unique(np.linspace(n - k, n - 1, min(k, _TAIL_POINTS)).astype(np.int64))
    z = np.array([_STANDARD_NORMAL.inv_cdf((j + 0.5) / n) for j in index])
    design = np.column_stack([np.ones_like(z), z])
    (mean, sd), *_ = np.linalg.lstsq(design, finite[index], rcond=None)
    if not sd > 0.0:
        return None
    return NormalTail(mean=float(mean), sd=float(sd))


@dataclass(frozen=True, slots=True)
class ThresholdEstimate:
    """A threshold for a target false positive rate among negatives, and how it was found.

    Attributes:
        threshold: the score; NaN when ``method`` is ``"unresolved"``.
        rate: the false positive rate at ``threshold``: measured when ``"empirical"``, the tail
            model's when ``"tail-fit:..."``, NaN when ``"unresolved"``.
        method: ``"empirical"`` (the negatives resolve the target), ``"tail-fit:normal"`` or
            ``"tail-fit:gpd"`` (extrapolated from that model of the upper tail: the one of the
            two that gave the higher, more cautious threshold) or ``"unresolved"`` (too few
            negatives to fit a tail either).
        n_negatives: how many negatives it was found from.
    """

    threshold: float
    rate: float
    method: ThresholdMethod
    n_negatives: int


def threshold_at_rate(sorted_negatives: np.ndarray, target: float) -> ThresholdEstimate:
    """Threshold for a false positive rate of ``target`` among ``sorted_negatives`` (ascending).

    Empirical when ``n * target >= 1``. Otherwise extrapolated: a normal and a generalized
    Pareto model are fitted to the top tenth of the negatives and the higher of their two
    thresholds is taken. Neither model is right for every score distribution (a normal tail
    understates an exponential one; a Pareto fit to a finite normal sample finds a spurious end
    point and stops short), and a threshold set too low is the costly mistake: it raises false
    alerts on the public, where one set too high costs measured, reported TPIR. The threshold
    is never below the float just above the largest negative, which the data already refute.
    """
    n = sorted_negatives.size
    if resolvable(n, target):
        threshold = empirical_threshold(sorted_negatives, target)
        rate = float(share_at_or_above(sorted_negatives, threshold))
        return ThresholdEstimate(threshold=threshold, rate=rate, method="empirical", n_negatives=n)
    fits: list[tuple[ThresholdMethod, NormalTail | ParetoTail]] = []
    normal = fit_normal_tail(sorted_negatives)
    if normal is not None:
        fits.append(("tail-fit:normal", normal))
    pareto = fit_pareto_tail(sorted_negatives)
    if pareto is not None:
        fits.append(("tail-fit:gpd", pareto))
    if not fits:
        return ThresholdEstimate(threshold=math.nan, rate=math.nan, method="unresolved", n_negatives=n)
    method, model = max(fits, key=lambda fit: fit[1].quantile(target))
    floor = float(np.nextafter(sorted_negatives[-1], np.inf))
    threshold = max(model.quantile(target), floor)
    logger.info(
        'threshold extrapolated method="%s" target="%g" n="%d" threshold="%.6f"', method, target, n, threshold
    )
    return ThresholdEstimate(
        threshold=threshold, rate=min(target, model.exceedance(threshold)), method=method, n_negatives=n
    )


#: Fewest negatives at or above a threshold for its rate to be read from the data rather than a
#: tail model (fewer make the empirical rate too noisy to stand on its own).
MIN_EMPIRICAL_EXCEEDANCES = 10


def rate_at_threshold(sorted_negatives: np.ndarray, threshold: float) -> tuple[float, str]:
    """The false positive rate of ``threshold`` among ``sorted_negatives`` (ascending), and how.

    The inverse of ``threshold_at_rate``: measured (``"empirical"``) where at least
    ``MIN_EMPIRICAL_EXCEEDANCES`` negatives reach the threshold; otherwise the larger of the
    tail models' exceedances and the measured share (``"tail-fit"``), so a rate is never
    understated; ``"unresolved"`` (with the measured share) when there are too few negatives
    for a model.

    Raises:
        ValueError: no negatives, or a non-finite threshold.
    """
    if sorted_negatives.size == 0:
        raise ValueError("rate_at_threshold: no negative scores")
    if not math.isfinite(threshold):
        raise ValueError(f"rate_at_threshold: threshold must be finite, got {threshold!r}")
    n = sorted_negatives.size
    count = n - int(np.searchsorted(sorted_negatives, threshold, side="left"))
    measured = count / n
    if count >= MIN_EMPIRICAL_EXCEEDANCES:
        return measured, "empirical"
    models = [m for m in (fit_normal_tail(sorted_negatives), fit_pareto_tail(sorted_negatives)) if m is not None]
    if not models:
        return measured, "unresolved"
    return max([measured] + [m.exceedance(threshold) for m in models]), "tail-fit"


# -- 1:1 verification over scores ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationCurve:
    """FMR and FNMR at every threshold where either changes, thresholds ascending.

    ``fmr[i]`` = share of impostor scores ``>= thresholds[i]`` (falls as the threshold rises);
    ``fnmr[i]`` = share of genuine scores ``< thresholds[i]`` (rises).
    """

    thresholds: np.ndarray
    fmr: np.ndarray
    fnmr: np.ndarray


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """A verification operating point for a target FMR.

    Attributes:
        target_fmr: the FMR asked for.
        threshold: the smallest score threshold whose FMR is at most the target (NaN when
            ``method`` is ``"unresolved"``).
        fnmr: the FNMR at ``threshold``, measured on the genuine scores (NaN when unresolved).
        fmr: the FMR at ``threshold``: measured when ``method`` is ``"empirical"``, the tail
            model's for a tail fit, NaN when unresolved.
        achievable: whether the impostor set can resolve the target (``n_impostor >= 1/target``).
            When False the point is not a measurement: ``method`` says what it is instead.
        method: ``"empirical"``, ``"tail-fit:normal"``, ``"tail-fit:gpd"`` or ``"unresolved"``
            (see ``ThresholdEstimate``).
    """

    target_fmr: float
    threshold: float
    fnmr: float
    fmr: float
    achievable: bool
    method: ThresholdMethod


@dataclass(frozen=True, slots=True)
class VerificationSummary:
    """Headline 1:1 figures of a genuine and an impostor score set.

    Attributes:
        n_genuine: genuine pairs.
        n_impostor: impostor pairs.
        eer: where FMR and FNMR cross, interpolated between the nearest curve points.
        eer_threshold: the score there.
        fnmr_at_fmr: an ``OperatingPoint`` per FMR target, keyed by the target.
    """

    n_genuine: int
    n_impostor: int
    eer: float
    eer_threshold: float
    fnmr_at_fmr: dict[float, OperatingPoint]


def _verification_inputs(genuine: object, impostor: object) -> tuple[np.ndarray, np.ndarray]:
    g = check_scores(genuine, name="genuine scores", allow_minus_inf=False)
    i = check_scores(impostor, name="impostor scores", allow_minus_inf=False)
    return np.sort(g), np.sort(i)


def verification_curve(genuine: np.ndarray, impostor: np.ndarray) -> VerificationCurve:
    """The FMR/FNMR curve of genuine and impostor *scores* (a match is ``score >= threshold``).

    Raises:
        ValueError: either set empty, or NaN / ``+inf`` scores.
    """
    g, i = _verification_inputs(genuine, impostor)
    # A score s at or above t is a distance -s at or below -t: the distance ROC, mirrored.
    mirrored = roc(-g, -i)
    return VerificationCurve(
        thresholds=-mirrored.thresholds[::-1], fmr=mirrored.fmr[::-1].copy(), fnmr=mirrored.fnmr[::-1].copy()
    )


def verification_summary(
    genuine: np.ndarray, impostor: np.ndarray, *, fmr_targets: Iterable[float] = (1e-3, 1e-4)
) -> VerificationSummary:
    """EER and FNMR at each FMR target, flagging targets the impostor set cannot resolve.

    A target the impostors cannot resolve (fewer than ``1/target`` of them) is reported with
    ``achievable=False`` and a threshold extrapolated from a tail fit of the impostor scores
    (``method="tail-fit:normal"`` or ``"tail-fit:gpd"``), or none at all (``"unresolved"``)
    when there are too few impostors even for that. The FNMR is always measured at whatever
    threshold is given.

    Raises:
        ValueError: either set empty, NaN / ``+inf`` scores, a target outside (0, 1).
    """
    targets = [check_rate(t, name="fmr target") for t in fmr_targets]
    g, i = _verification_inputs(genuine, impostor)
    eer, mirrored_threshold = equal_error_rate(roc(-g, -i))
    points: dict[float, OperatingPoint] = {}
    for target in targets:
        estimate = threshold_at_rate(i, target)
        fnmr = math.nan if estimate.method == "unresolved" else float(share_below(g, estimate.threshold))
        points[target] = OperatingPoint(
            target_fmr=target,
            threshold=estimate.threshold,
            fnmr=fnmr,
            fmr=estimate.rate,
            achievable=estimate.method == "empirical",
            method=estimate.method,
        )
    return VerificationSummary(
        n_genuine=int(g.size), n_impostor=int(i.size), eer=eer, eer_threshold=-mirrored_threshold, fnmr_at_fmr=points
    )

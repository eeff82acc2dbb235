"""A deployment's operating point: from its watchlist size and target FPIR to a threshold, and
what that threshold is expected to cost.

Every enrolled person is one more chance for a stranger to be mistaken for someone, so the
per-comparison false-match rate a search may have is ``f = 1 - (1 - FPIR) ** (1 / N)`` for a
watchlist of ``N`` people (``openlfr.evaluation.identification.per_comparison_fmr_target``):
about ``FPIR / N``. The normalised threshold is read at ``f`` from the cohort's held-out
impostor pairs (``CohortCalibration.z_threshold``), and the expected miss rate from its genuine
pairs where it has any. The default target is 1/6,000 false alerts per stranger: the rate NPL
measured for the system the Met uses (2023).

A threshold the operator names instead (one raw score for everyone) is checked the same way:
its per-comparison rate is read from the cohort's raw impostor scores, its expected FPIR at
this watchlist size follows, and ``check_threshold`` refuses it when that exceeds the target,
unless the operator names the FPIR they accept (``--accept-fpir``), which must cover it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from fractions import Fraction

from openlfr.cohort.calibration import CohortCalibration
from openlfr.cohort.exceptions import ThresholdRefused
from openlfr.evaluation.identification import extrapolate_fpir, per_comparison_fmr_target

logger = logging.getLogger(__name__)

#: False alerts per stranger the NPL 2023 evaluation measured for the Met's system at its setting.
DEFAULT_TARGET_FPIR = 1 / 6000
#: The count of passers-by expected false alerts are quoted per.
PASSERS_BY = 10_000


def parse_rate(text: str, *, name: str) -> float:
    """A rate written as ``0.001``, ``1e-3`` or ``1/6000``.

    Raises:
        ValueError: not a number or fraction in (0, 1) (the message names ``name``).
    """
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"{name}: {text!r} is not a rate (write 0.001, 1e-3 or 1/6000)") from exc
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}: {text!r} must be between 0 and 1 (exclusive)")
    return value


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """What a threshold means for a watchlist of ``watchlist_size`` people.

    Attributes:
        kind: ``"per-subject"`` (a normalised threshold; each reference's raw threshold follows
            from its statistics) or ``"global"`` (one raw score for everyone).
        threshold: the normalised threshold (per-subject) or the raw score (global).
        watchlist_size: enrolled people.
        target_fpir: the false alerts per stranger aimed at (None for a named global threshold).
        per_comparison_fmr: the expected false-match rate of one comparison at ``threshold``.
        expected_fpir: ``1 - (1 - per_comparison_fmr) ** watchlist_size``.
        expected_fnmr: share of the cohort's genuine pairs that ``threshold`` misses (None when
            the cohort has nobody with two images).
        method: how the rate was had (``empirical``, ``tail-fit...``).
    """

    kind: str
    threshold: float
    watchlist_size: int
    target_fpir: float | None
    per_comparison_fmr: float
    expected_fpir: float
    expected_fnmr: float | None
    method: str

    @property
    def false_alerts_per_passers_by(self) -> float:
        """Expected false alerts per ``PASSERS_BY`` strangers passing the camera."""
        return self.expected_fpir * PASSERS_BY

    def describe(self) -> str:
        """One line for an operator."""
        miss = "unknown (the cohort has nobody with two images)" if self.expected_fnmr is None else f"{self.expected_fnmr:.1%}"
        what = "normalised threshold" if self.kind == "per-subject" else "threshold"
        return (
            f"{self.watchlist_size} subject(s), {what} {self.threshold:.4f} ({self.method}): expected "
            f"{self.false_alerts_per_passers_by:.2f} false alert(s) per {PASSERS_BY:,} passers-by "
            f"(FPIR {self.expected_fpir:.2e}), expected miss rate {miss}"
        )


def operating_point(calibration: CohortCalibration, *, watchlist_size: int, target_fpir: float) -> OperatingPoint:
    """The per-subject (normalised) threshold for ``target_fpir`` on a watchlist of this size.

    Raises:
        ValueError: a watchlist size below 1 or a target outside (0, 1).
    """
    f1 = per_comparison_fmr_target(target_fpir, watchlist_size)
    estimate = calibration.z_threshold(f1)
    point = OperatingPoint(
        kind="per-subject",
        threshold=float(estimate.threshold),
        watchlist_size=int(watchlist_size),
        target_fpir=float(target_fpir),
        per_comparison_fmr=float(estimate.rate),
        expected_fpir=extrapolate_fpir(min(1.0, float(estimate.rate)), int(watchlist_size)),
        expected_fnmr=calibration.z_fnmr(estimate.threshold),
        method=estimate.method,
    )
    logger.info('operating point %s', point.describe())
    return point


def global_threshold_point(calibration: CohortCalibration, *, threshold: float, watchlist_size: int) -> OperatingPoint:
    """What one raw threshold for everyone is expected to give on a watchlist of this size."""
    rate, method = calibration.raw_fmr(threshold)
    return OperatingPoint(
        kind="global",
        threshold=float(threshold),
        watchlist_size=int(watchlist_size),
        target_fpir=None,
        per_comparison_fmr=float(rate),
        expected_fpir=extrapolate_fpir(min(1.0, float(rate)), int(watchlist_size)),
        expected_fnmr=calibration.raw_fnmr(threshold),
        method=method,
    )


def check_threshold(point: OperatingPoint, *, target_fpir: float, accept_fpir: float | None, flag: str = "--threshold") -> None:
    """Refuse an operating point whose expected FPIR exceeds the target, unless accepted.

    Raises:
        ThresholdRefused: expected FPIR above ``target_fpir`` and ``accept_fpir`` absent or
            below it (the message names ``flag``, the numbers and how to accept).
    """
    if point.expected_fpir <= target_fpir:
        return
    if accept_fpir is not None and point.expected_fpir <= accept_fpir:
        logger.warning(
            'threshold accepted above target expected_fpir="%.3g" target_fpir="%.3g" accept_fpir="%.3g"',
            point.expected_fpir, target_fpir, accept_fpir,
        )
        return
    accepted = "" if accept_fpir is None else f" and above the --accept-fpir {accept_fpir:.3g} you named"
    accept_hint = (
        f"or accept the rate explicitly with --accept-fpir {point.expected_fpir:.3g}"
        if point.expected_fpir < 0.99 else "since it would alert on nearly everyone, no --accept-fpir covers it"
    )
    raise ThresholdRefused(
        f"{flag} {point.threshold:g}: on a watchlist of {point.watchlist_size} it is expected to alert on "
        f"{point.expected_fpir:.2%} of strangers ({point.false_alerts_per_passers_by:.0f} per {PASSERS_BY:,} "
        f"passers-by; per-comparison FMR {point.per_comparison_fmr:.2e}, {point.method}), above the target "
        f"FPIR {target_fpir:.3g}{accepted}. Leave {flag} out to use per-subject thresholds calibrated to the "
        f"target, raise it, {accept_hint}"
    )

"""Setting a deployment's threshold from a target false positive identification rate.

A deployment is authorised with a watchlist size and an acceptable rate of false alerts per
stranger searched (FPIR). The threshold follows from the model of ``extrapolate_fpir``: each
search makes ``N`` comparisons, so the per-comparison false match rate must be
``f1 = 1 - (1 - target_fpir) ** (1 / N)`` (about ``target_fpir / N``), and the threshold is the
smallest score at which no more than that share of impostor comparisons reach it. With a
10,000-face watchlist and a target FPIR of 1/6,000, ``f1`` is about 1.7e-8: some sixty million
impostor comparisons to measure directly. Fewer than ``1/f1`` cannot resolve it, and the
threshold is then extrapolated from a model of the upper impostor tail (``method`` is
``"tail-fit:normal"`` or ``"tail-fit:gpd"``, see ``openlfr.evaluation.metrics.threshold_at_rate``):
an estimate, labelled as one, to be checked against the FPIR
measured on non-mated searches (``open_set``) whenever there are enough of them.

What the threshold buys is the expected TPIR (``1 - FNIR``) measured at it, and what the public
sees is the share of alerts that are wrong, which depends on how few of the people passing are
on the watchlist: see ``wrong_alert_share``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from openlfr.evaluation.identification import OpenSetResult, extrapolate_fpir, per_comparison_fmr_target
from openlfr.evaluation.metrics import (
    MIN_TAIL_FIT,
    ThresholdMethod,
    check_scores,
    share_at_or_above,
    threshold_at_rate,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Calibration:
    """A threshold chosen for a target FPIR on a gallery size, and what it is expected to give.

    Attributes:
        threshold: the score (0..1 for real scores) a face must reach; what a deployment's
            ``threshold`` takes.
        target_fpir: the FPIR asked for.
        gallery_size: the watchlist size (identities) it was set for.
        per_comparison_fmr: the per-comparison FMR target ``f1`` derived from the two.
        fmr_at_threshold: the per-comparison FMR at ``threshold``: measured when ``method`` is
            ``"empirical"`` (at most ``f1``), the tail model's for a tail fit.
        expected_fpir: ``1 - (1 - fmr_at_threshold) ** gallery_size`` (independence model).
        expected_tpir: the share of mated searches (or genuine pairs) identified at
            ``threshold``; see ``tpir_source``.
        tpir_source: ``"open-set"`` (1 - FNIR of mated searches: mate ranked first and above
            the threshold) or ``"genuine-pairs"`` (1 - FNMR of 1:1 genuine pairs, which ignores
            rank-1 errors and so is an upper bound of the open-set TPIR).
        method: ``"empirical"``, ``"tail-fit:normal"`` or ``"tail-fit:gpd"``.
        n_impostor: impostor comparisons the threshold was set from.
        n_mated: mated searches or genuine pairs the TPIR was measured on.
    """

    threshold: float
    target_fpir: float
    gallery_size: int
    per_comparison_fmr: float
    fmr_at_threshold: float
    expected_fpir: float
    expected_tpir: float
    tpir_source: Literal["open-set", "genuine-pairs"]
    method: ThresholdMethod
    n_impostor: int
    n_mated: int


def calibrate(
    impostor_scores: np.ndarray,
    mated: OpenSetResult | np.ndarray,
    *,
    target_fpir: float,
    gallery_size: int,
) -> Calibration:
    """The threshold for ``target_fpir`` on a watchlist of ``gallery_size`` identities.

    Args:
        impostor_scores: per-comparison impostor scores (one per non-mated probe and enrolled
            identity, max over the identity's templates), e.g. ``OpenSetResult.impostor_scores``.
        mated: an ``OpenSetResult`` (TPIR = 1 - FNIR at the threshold), or 1-D genuine pair
            scores when there is no open-set data (TPIR = 1 - FNMR: an upper bound, as it
            ignores another identity outranking the mate).
        target_fpir: the acceptable FPIR, in (0, 1).
        gallery_size: watchlist identities. TPIR measured on a smaller evaluation gallery is
            somewhat optimistic for a larger watchlist (more people to be outranked by).

    Raises:
        ValueError: empty or NaN scores, a target outside (0, 1), a gallery size below 1, or too
            few impostor scores either to resolve ``f1`` or to fit a tail (``MIN_TAIL_FIT``).
    """
    impostor = np.sort(check_scores(impostor_scores, name="impostor scores"))
    f1 = per_comparison_fmr_target(target_fpir, gallery_size)
    if isinstance(mated, OpenSetResult):
        mated_scores = np.sort(mated.mated_scores)
        source: Literal["open-set", "genuine-pairs"] = "open-set"
    else:
        mated_scores = np.sort(check_scores(mated, name="genuine scores"))
        source = "genuine-pairs"
    estimate = threshold_at_rate(impostor, f1)
    if estimate.method == "unresolved":
        raise ValueError(
            f"impostor scores: {impostor.size} cannot resolve the per-comparison FMR {f1:.3g} "
            f"(needs >= {math.ceil(1 / f1)}) and are too few for a tail fit (needs >= {MIN_TAIL_FIT})"
        )
    calibration = Calibration(
        threshold=estimate.threshold,
        target_fpir=float(target_fpir),
        gallery_size=int(gallery_size),
        per_comparison_fmr=f1,
        fmr_at_threshold=estimate.rate,
        expected_fpir=extrapolate_fpir(estimate.rate, int(gallery_size)),
        expected_tpir=float(share_at_or_above(mated_scores, estimate.threshold)),
        tpir_source=source,
        method=estimate.method,
        n_impostor=int(impostor.size),
        n_mated=int(mated_scores.size),
    )
    logger.info(
        'calibrated threshold="%.6f" target_fpir="%g" gallery_size="%d" method="%s" expected_tpir="%.4f"',
        calibration.threshold, calibration.target_fpir, calibration.gallery_size, calibration.method,
        calibration.expected_tpir,
    )
    return calibration


def wrong_alert_share(*, fpir: float, tpir: float, prevalence: float) -> float:
    """Share of alerts that are false: ``fpir (1 - p) / (fpir (1 - p) + tpir p)``.

    ``prevalence`` ``p`` is the share of the faces searched that belong to someone on the
    watchlist. Almost everyone who walks past a camera is not, so the few true alerts compete
    with false ones drawn from a crowd thousands of times larger, and a system that is right
    about almost every face can still be wrong about most of its alerts.

    Worked example. A system "99.9% accurate" (FPIR 0.001, TPIR 0.999) watches a crowd where
    1 in 10,000 faces is wanted. Per 10,000,000 faces: 1,000 wanted, 999 found; 9,999,000 not
    wanted, 9,999 falsely alerted. Alerts 10,998, of which 9,999 wrong: 90.9%.
    At FPIR 1/6,000 and TPIR 0.89 (a lab's reported operating point), same crowd: per
    60,000,000 faces, 6,000 wanted and 5,340 found, 59,994,000 not and 9,999 alerts, so
    9,999 / 15,339 = 65.2% of alerts are wrong. The Met's early trials had 34 of 42 alerts
    wrong (81%).

    Raises:
        ValueError: a rate outside [0, 1] or NaN, or no alerts at all (``fpir (1 - p)`` and
            ``tpir p`` both 0), when the share is undefined.
    """
    values = {"fpir": fpir, "tpir": tpir, "prevalence": prevalence}
    for name, value in values.items():
        if not 0.0 <= float(value) <= 1.0:  # also false for NaN
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    false_alerts = float(fpir) * (1.0 - float(prevalence))
    true_alerts = float(tpir) * float(prevalence)
    if false_alerts + true_alerts == 0.0:
        raise ValueError("no alerts at these rates (fpir*(1-prevalence) and tpir*prevalence are 0): share undefined")
    return false_alerts / (false_alerts + true_alerts)


def calibration_config(cal: Calibration) -> dict[str, Any]:
    """What a deployment's configuration reads: the threshold and where it came from.

    ``threshold`` is what ``DeploymentCreate.threshold`` takes (a score in (0, 1]; the
    registry also refuses one under its floor). The rest is provenance for the authorisation
    record; ``model_version`` is left ``None`` for the caller, who knows which model was
    evaluated. Values are plain Python (JSON-ready).

    Raises:
        ValueError: the threshold is not a score in (0, 1], so no deployment could take it.
    """
    if not 0.0 < cal.threshold <= 1.0:
        raise ValueError(f"threshold {cal.threshold!r} is not a score in (0, 1]: a deployment cannot take it")
    return {
        "threshold": float(cal.threshold),
        "target_fpir": float(cal.target_fpir),
        "gallery_size": int(cal.gallery_size),
        "per_comparison_fmr": float(cal.per_comparison_fmr),
        "fmr_at_threshold": float(cal.fmr_at_threshold),
        "expected_fpir": float(cal.expected_fpir),
        "expected_tpir": float(cal.expected_tpir),
        "tpir_source": cal.tpir_source,
        "method": cal.method,
        "n_impostor": int(cal.n_impostor),
        "n_mated": int(cal.n_mated),
        "model_version": None,
    }

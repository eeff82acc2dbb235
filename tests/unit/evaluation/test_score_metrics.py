"""Verification over scores, thresholds at a target rate and tail fits, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openlfr.evaluation.metrics import (
    empirical_threshold,
    fit_normal_tail,
    threshold_at_rate,
    verification_curve,
    verification_summary,
)

# 4 genuine and 6 impostor scores; a pair matches when its score is >= the threshold.
GENUINE = np.array([0.9, 0.8, 0.6, 0.4])
IMPOSTOR = np.array([0.7, 0.5, 0.3, 0.2, 0.1, 0.05])


@pytest.mark.parametrize(
    ("threshold", "fmr", "fnmr"),
    [
        (0.05, 6 / 6, 0 / 4),  # every impostor >= 0.05; no genuine below
        (0.3, 3 / 6, 0 / 4),  # impostors 0.7, 0.5, 0.3
        (0.4, 2 / 6, 0 / 4),  # 0.7, 0.5; genuine 0.4 is not < 0.4
        (0.5, 2 / 6, 1 / 4),  # genuine 0.4 now below
        (0.6, 1 / 6, 1 / 4),  # impostor 0.7 only
        (0.7, 1 / 6, 2 / 4),  # genuine 0.4, 0.6 below
        (0.8, 0 / 6, 2 / 4),
        (0.9, 0 / 6, 3 / 4),  # genuine 0.4, 0.6, 0.8 below
    ],
)
def test_curve_on_a_hand_computed_case(threshold: float, fmr: float, fnmr: float) -> None:
    curve = verification_curve(GENUINE, IMPOSTOR)
    assert np.all(np.diff(curve.thresholds) > 0)
    i = int(np.flatnonzero(np.isclose(curve.thresholds, threshold))[0])
    assert curve.fmr[i] == pytest.approx(fmr)
    assert curve.fnmr[i] == pytest.approx(fnmr)


def test_eer_on_a_hand_computed_case() -> None:
    # FNMR - FMR changes sign between t=0.5 (FMR 1/3, FNMR 1/4: -1/12) and t=0.6 (FMR 1/6,
    # FNMR 1/4: +1/12), so the crossing is halfway: t = 0.55, and EER is the mean of the two
    # points' (FMR+FNMR)/2, i.e. (7/24 + 5/24) / 2 = 1/4.
    summary = verification_summary(GENUINE, IMPOSTOR, fmr_targets=())
    assert summary.eer == pytest.approx(0.25)
    assert summary.eer_threshold == pytest.approx(0.55)
    assert (summary.n_genuine, summary.n_impostor) == (4, 6)


@pytest.mark.parametrize(
    ("target", "above", "fmr", "fnmr"),
    [
        # 6 impostors: floor(0.2 * 6) = 1 may reach the threshold, so it sits just above the
        # 2nd-highest impostor (0.5): FMR 1/6 (0.7), FNMR 1/4 (0.4).
        (0.2, 0.5, 1 / 6, 1 / 4),
        (1 / 6, 0.5, 1 / 6, 1 / 4),  # 6 * 1/6 = 1: exactly resolvable, same point
        # floor(0.5 * 6) = 3 may reach it: just above the 4th-highest (0.2): FMR 3/6, FNMR 0.
        (0.5, 0.2, 3 / 6, 0.0),
    ],
)
def test_fnmr_at_fmr_on_a_hand_computed_case(target: float, above: float, fmr: float, fnmr: float) -> None:
    point = verification_summary(GENUINE, IMPOSTOR, fmr_targets=(target,)).fnmr_at_fmr[target]
    assert point.threshold == np.nextafter(above, np.inf)
    assert point.fmr == pytest.approx(fmr)
    assert point.fnmr == pytest.approx(fnmr)
    assert point.achievable and point.method == "empirical"


def test_a_target_the_impostors_cannot_resolve_is_reported_not_faked() -> None:
    # 6 impostors cannot resolve an FMR of 0.1 (would need 10), and are too few to fit a tail.
    point = verification_summary(GENUINE, IMPOSTOR, fmr_targets=(0.1,)).fnmr_at_fmr[0.1]
    assert not point.achievable
    assert point.method == "unresolved"
    assert math.isnan(point.threshold) and math.isnan(point.fnmr) and math.isnan(point.fmr)


def test_an_unresolvable_target_with_many_impostors_is_extrapolated_and_labelled() -> None:
    rng = np.random.default_rng(7)
    impostor = rng.normal(0.5, 0.05, 20_000)
    genuine = rng.normal(0.8, 0.05, 2_000)
    point = verification_summary(genuine, impostor, fmr_targets=(1e-6,)).fnmr_at_fmr[1e-6]
    assert not point.achievable
    assert point.method.startswith("tail-fit:")
    assert point.threshold > impostor.max()
    # Normal impostors: the 1e-6 upper quantile is 0.5 + 0.05 * 4.753 = 0.7377.
    assert point.threshold == pytest.approx(0.7377, abs=0.006)
    assert point.fnmr == pytest.approx(float(np.mean(genuine < point.threshold)))


@pytest.mark.parametrize(
    ("rate", "threshold_above", "share"),
    [
        (0.2, 0.5, 1 / 5),  # k = 1: just above the 2nd-highest (0.5); only 0.9 reaches it
        (0.4, 0.5, 1 / 5),  # k = 2, but the 3rd-highest ties with the 2nd: ties go together
        (0.8, 0.1, 4 / 5),  # k = 4: just above the lowest
    ],
)
def test_empirical_threshold_with_ties(rate: float, threshold_above: float, share: float) -> None:
    negatives = np.array([0.1, 0.5, 0.5, 0.5, 0.9])
    threshold = empirical_threshold(negatives, rate)
    assert threshold == np.nextafter(threshold_above, np.inf)
    assert np.mean(negatives >= threshold) == pytest.approx(share)


def test_normal_tail_fit_recovers_a_normal_quantile() -> None:
    negatives = np.sort(np.random.default_rng(3).normal(0.5, 0.05, 20_000))
    estimate = threshold_at_rate(negatives, 1e-7)
    assert estimate.method == "tail-fit:normal"
    # 0.5 + 0.05 * 5.199 (the normal's 1e-7 upper quantile)
    assert estimate.threshold == pytest.approx(0.7600, abs=0.005)
    assert estimate.rate == pytest.approx(1e-7)
    fit = fit_normal_tail(negatives)
    assert fit is not None and fit.sd == pytest.approx(0.05, rel=0.1)


def test_tail_fit_never_goes_below_the_largest_negative() -> None:
    negatives = np.sort(np.random.default_rng(4).random(1_000))
    estimate = threshold_at_rate(negatives, 1e-4)
    assert estimate.threshold > negatives[-1]


@pytest.mark.parametrize(
    ("genuine", "impostor", "message"),
    [
        ([], [0.5], "genuine scores: no scores"),
        ([0.5], [], "impostor scores: no scores"),
        ([0.5, math.nan], [0.5], "genuine scores: 1 NaN"),
        ([0.5], [math.inf], r"impostor scores: \+inf"),
        ([0.5], [-math.inf], "impostor scores: -inf"),
        ([[0.5]], [0.5], "1-D"),
    ],
)
def test_bad_scores_are_refused(genuine: list, impostor: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verification_curve(np.array(genuine), np.array(impostor))
    with pytest.raises(ValueError, match=message):
        verification_summary(np.array(genuine), np.array(impostor))


@pytest.mark.parametrize("target", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_targets_out_of_range_are_refused(target: float) -> None:
    with pytest.raises(ValueError, match=r"fmr target must be in \(0, 1\)"):
        verification_summary(GENUINE, IMPOSTOR, fmr_targets=(target,))

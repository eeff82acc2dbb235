"""ROC, EER and FNMR@FMR on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from openlfr.evaluation.verification import equal_error_rate, fnmr_at_fmr, roc


def test_roc_on_a_hand_computed_case() -> None:
    genuine = np.array([0.1, 0.2, 0.3, 0.7])
    impostor = np.array([0.4, 0.5, 0.8, 0.9])
    curve = roc(genuine, impostor)
    at = dict(zip(curve.thresholds.round(2), zip(curve.fmr, curve.fnmr)))
    assert at[0.3] == (0.0, 0.25)  # no impostor <= 0.3; one genuine (0.7) above
    assert at[0.5] == (0.5, 0.25)
    assert at[0.7] == (0.5, 0.0)
    assert at[0.9] == (1.0, 0.0)


def test_separable_scores_have_zero_eer() -> None:
    eer, thr = equal_error_rate(roc(np.array([0.1, 0.2]), np.array([0.8, 0.9])))
    assert eer == 0.0 and 0.2 <= thr < 0.8


def test_identical_distributions_have_half_eer() -> None:
    rng = np.random.default_rng(1)
    x = rng.random(4000)
    eer, _ = equal_error_rate(roc(x[:2000], x[2000:]))
    assert eer == pytest.approx(0.5, abs=0.03)


def test_fnmr_at_fmr() -> None:
    curve = roc(np.array([0.1, 0.2, 0.3, 0.7]), np.array([0.4, 0.5, 0.8, 0.9]))
    assert fnmr_at_fmr(curve, 0.0) == (0.25, 0.3)
    assert fnmr_at_fmr(curve, 0.5)[0] == 0.0


def test_empty_input_is_refused() -> None:
    with pytest.raises(ValueError, match="genuine and impostor"):
        roc(np.array([]), np.array([0.5]))

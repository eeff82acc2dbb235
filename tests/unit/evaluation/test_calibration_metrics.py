"""Threshold calibration from a target FPIR, the share of wrong alerts, and the deployment config."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from openlfr.evaluation.calibration import calibrate, calibration_config, wrong_alert_share
from openlfr.evaluation.identification import open_set

# 10,000 impostor comparisons at 0.0000, 0.0001, ..., 0.9999: the k-th largest is known exactly.
IMPOSTOR = np.arange(10_000) / 10_000
GENUINE = np.array([0.50, 0.98, 0.99, 0.995])


def test_threshold_is_the_exact_quantile_for_one_identity() -> None:
    # gallery 1: f1 = target = 0.01, so floor(0.01 * 10,000) = 100 impostors may reach the
    # threshold: just above the 101st-largest, 0.9899. TPIR: 0.99 and 0.995 reach it -> 2/4.
    cal = calibrate(IMPOSTOR, GENUINE, target_fpir=0.01, gallery_size=1)
    assert cal.threshold == np.nextafter(0.9899, np.inf)
    assert cal.per_comparison_fmr == pytest.approx(0.01)
    assert cal.fmr_at_threshold == 0.01  # 100 / 10,000 exactly
    assert cal.expected_fpir == pytest.approx(0.01)
    assert cal.expected_tpir == 0.5
    assert (cal.method, cal.tpir_source, cal.n_impostor, cal.n_mated) == ("empirical", "genuine-pairs", 10_000, 4)


def test_threshold_for_a_gallery_uses_the_per_comparison_target() -> None:
    # FPIR 1 - 0.999 ** 100 on 100 identities <=> f1 = 0.001: 10 may reach it -> above 0.9989.
    cal = calibrate(IMPOSTOR, GENUINE, target_fpir=1 - 0.999**100, gallery_size=100)
    assert cal.per_comparison_fmr == pytest.approx(0.001)
    assert cal.threshold == np.nextafter(0.9989, np.inf)
    assert cal.fmr_at_threshold == pytest.approx(0.001)
    assert cal.expected_tpir == 0.0


def test_tpir_comes_from_mated_searches_given_an_open_set_result() -> None:
    # The hand case of test_identification_metrics: 23 impostor comparisons whose two largest
    # are 0.75 and 0.70. FPIR 0.2 on 3 identities: f1 = 1 - 0.8 ** (1/3) = 0.0717;
    # floor(23 * 0.0717) = 1 may reach it -> just above 0.70. Mated hits 0.90, 0.80, miss,
    # 0.65 -> TPIR 2/4.
    scores = np.array(
        [
            [0.60, 0.90, 0.50, 0.40], [0.30, 0.20, 0.80, 0.50], [0.70, 0.30, 0.40, 0.60], [0.50, 0.65, 0.60, 0.30],
            [0.40, 0.55, 0.30, 0.20], [0.70, 0.10, 0.20, 0.30], [0.20, 0.30, 0.45, 0.35], [0.10, 0.20, 0.30, 0.75],
            [0.50, 0.40, 0.62, 0.30],
        ]
    )
    result = open_set(
        scores, ["A", "A", "B", "C"], ["A", "B", "C", "A", "X", "Y", "Z", "W", "V"], enrolled={"A", "B", "C"}
    )
    cal = calibrate(result.impostor_scores, result, target_fpir=0.2, gallery_size=3)
    assert cal.threshold == np.nextafter(0.70, np.inf)
    assert cal.fmr_at_threshold == pytest.approx(1 / 23)
    assert cal.expected_tpir == 0.5 and cal.tpir_source == "open-set" and cal.n_mated == 4


def test_an_unresolvable_target_is_tail_fitted_and_labelled() -> None:
    # 1/6000 on 10,000 faces needs f1 = 1.67e-8: 20,000 impostors cannot resolve it.
    rng = np.random.default_rng(11)
    impostor = rng.normal(0.5, 0.05, 20_000)
    cal = calibrate(impostor, rng.normal(0.85, 0.05, 1_000), target_fpir=1 / 6000, gallery_size=10_000)
    assert cal.per_comparison_fmr == pytest.approx(1.6667e-8, rel=1e-3)
    assert cal.method == "tail-fit:normal"
    # the normal's 1.667e-8 upper quantile: 0.5 + 0.05 * 5.523 = 0.7762
    assert cal.threshold == pytest.approx(0.7762, abs=0.006)
    assert cal.expected_fpir == pytest.approx(1 / 6000, rel=1e-3)


def test_too_few_impostors_for_anything_is_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot resolve the per-comparison FMR .* too few for a tail fit"):
        calibrate(np.linspace(0.3, 0.6, 100), GENUINE, target_fpir=0.001, gallery_size=1)


def test_wrong_alert_share_worked_examples() -> None:
    # A lab's operating point in a crowd where 1 face in 10,000 is wanted. Per 60,000,000
    # faces: 6,000 wanted, 0.89 * 6,000 = 5,340 found; 59,994,000 not, / 6,000 = 9,999 false
    # alerts. 9,999 of 15,339 alerts wrong: 65.2%.
    assert wrong_alert_share(fpir=1 / 6000, tpir=0.89, prevalence=1 / 10_000) == pytest.approx(9_999 / 15_339)
    # "99.9% accurate": per 10,000,000 faces, 999 found and 9,999 false: 9,999 / 10,998 = 90.9%.
    assert wrong_alert_share(fpir=0.001, tpir=0.999, prevalence=1 / 10_000) == pytest.approx(9_999 / 10_998)
    assert wrong_alert_share(fpir=0.001, tpir=0.9, prevalence=0.0) == 1.0  # no one wanted: all wrong
    assert wrong_alert_share(fpir=0.0, tpir=0.9, prevalence=0.01) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(fpir=1.5, tpir=0.9, prevalence=0.1), "fpir must be in"),
        (dict(fpir=0.1, tpir=math.nan, prevalence=0.1), "tpir must be in"),
        (dict(fpir=0.1, tpir=0.9, prevalence=-0.1), "prevalence must be in"),
        (dict(fpir=0.0, tpir=0.9, prevalence=0.0), "no alerts"),
    ],
)
def test_wrong_alert_share_refuses_bad_rates(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        wrong_alert_share(**kwargs)


def test_calibration_config_is_what_a_deployment_reads() -> None:
    cal = calibrate(IMPOSTOR, GENUINE, target_fpir=0.01, gallery_size=1)
    config = calibration_config(cal)
    assert config["threshold"] == cal.threshold and isinstance(config["threshold"], float)
    assert 0 < config["threshold"] <= 1
    assert config["model_version"] is None
    assert {"target_fpir", "gallery_size", "expected_tpir", "method", "per_comparison_fmr"} <= config.keys()
    json.dumps(config)  # plain values only
    with pytest.raises(ValueError, match="not a score in"):
        calibration_config(dataclasses.replace(cal, threshold=1.2))


@pytest.mark.parametrize(
    ("impostor", "kwargs", "message"),
    [
        (np.array([]), dict(target_fpir=0.01, gallery_size=1), "impostor scores: no scores"),
        (np.array([0.1, math.nan]), dict(target_fpir=0.01, gallery_size=1), "NaN"),
        (IMPOSTOR, dict(target_fpir=0.0, gallery_size=1), "target_fpir must be in"),
        (IMPOSTOR, dict(target_fpir=1.0, gallery_size=1), "target_fpir must be in"),
        (IMPOSTOR, dict(target_fpir=0.01, gallery_size=0), "gallery_size"),
    ],
)
def test_bad_calibration_inputs_are_refused(impostor, kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        calibrate(impostor, GENUINE, **kwargs)
    with pytest.raises(ValueError, match="genuine scores: no scores"):
        calibrate(IMPOSTOR, np.array([]), target_fpir=0.01, gallery_size=1)

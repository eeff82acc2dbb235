"""Operating points from watchlist size and target FPIR, and the refusal of loose thresholds."""

from __future__ import annotations

import pytest

from openlfr.cohort.cohort import CohortFace, make_cohort
from openlfr.cohort.exceptions import ThresholdRefused
from openlfr.cohort.policy import (
    DEFAULT_TARGET_FPIR,
    check_threshold,
    global_threshold_point,
    operating_point,
    parse_rate,
)


@pytest.fixture(scope="module")
def calibration(shared_cohort_faces: list[CohortFace]):  # noqa: ANN201 - CohortCalibration
    return make_cohort(shared_cohort_faces, model_version="m@1").calibration


@pytest.mark.parametrize(("text", "value"), [("0.001", 1e-3), ("1e-3", 1e-3), ("1/6000", 1 / 6000), (" 1/100 ", 0.01)])
def test_parse_rate(text: str, value: float) -> None:
    assert parse_rate(text, name="--target-fpir") == pytest.approx(value)


@pytest.mark.parametrize("text", ["0", "1", "2", "-0.1", "abc", "1/0", "nan", ""])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="--accept-fpir"):
        parse_rate(text, name="--accept-fpir")


def test_a_larger_watchlist_gets_a_stricter_threshold(calibration) -> None:  # noqa: ANN001
    small = operating_point(calibration, watchlist_size=10, target_fpir=DEFAULT_TARGET_FPIR)
    large = operating_point(calibration, watchlist_size=1000, target_fpir=DEFAULT_TARGET_FPIR)
    assert large.threshold > small.threshold
    assert large.per_comparison_fmr < small.per_comparison_fmr
    for point in (small, large):
        assert point.expected_fpir <= DEFAULT_TARGET_FPIR * 1.0001
        assert "false alert(s) per 10,000 passers-by" in point.describe()
        assert point.expected_fnmr is not None and 0.0 <= point.expected_fnmr <= 1.0
    assert large.expected_fnmr >= small.expected_fnmr


def test_a_loose_global_threshold_is_refused_naming_the_flag(calibration) -> None:  # noqa: ANN001
    hopeless = global_threshold_point(calibration, threshold=0.5, watchlist_size=100)
    with pytest.raises(ThresholdRefused, match="no --accept-fpir covers it"):
        check_threshold(hopeless, target_fpir=DEFAULT_TARGET_FPIR, accept_fpir=None)
    point = global_threshold_point(calibration, threshold=0.82, watchlist_size=100)
    assert 0.05 < point.expected_fpir < 0.9
    with pytest.raises(ThresholdRefused) as refused:
        check_threshold(point, target_fpir=DEFAULT_TARGET_FPIR, accept_fpir=None, flag="--threshold")
    message = str(refused.value)
    assert message.startswith("--threshold 0.82:") and "--accept-fpir" in message and "watchlist of 100" in message
    with pytest.raises(ThresholdRefused, match="above the --accept-fpir 0.01 you named"):
        check_threshold(point, target_fpir=DEFAULT_TARGET_FPIR, accept_fpir=0.01)
    check_threshold(point, target_fpir=DEFAULT_TARGET_FPIR, accept_fpir=min(0.999, point.expected_fpir * 1.01))


def test_a_strict_global_threshold_passes_and_grows_with_the_list(calibration) -> None:  # noqa: ANN001
    strict = global_threshold_point(calibration, threshold=0.95, watchlist_size=10)
    check_threshold(strict, target_fpir=DEFAULT_TARGET_FPIR, accept_fpir=None)
    at_10 = global_threshold_point(calibration, threshold=0.75, watchlist_size=10)
    at_1000 = global_threshold_point(calibration, threshold=0.75, watchlist_size=1000)
    assert at_1000.expected_fpir > at_10.expected_fpir

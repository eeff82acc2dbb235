"""Per-group FMR/FNMR with identity-resampled intervals, warnings and disparity ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openlfr.evaluation.groups import (
    GroupFigures,
    bootstrap_ci,
    by_group,
    disparity,
    identity_bootstrap_ci,
)

GROUP_OF = {"a1": "g1", "a2": "g1", "a3": "g1", "a4": "g1", "a5": "g1", "b1": "g2", "b2": "g2"}
# (probe, reference, score); threshold 0.7.
PAIRS = [
    # g1 genuine: 0.5 is the one false non-match -> FNMR 1/5
    ("a1", "a1", 0.90), ("a2", "a2", 0.80), ("a3", "a3", 0.50), ("a4", "a4", 0.85), ("a5", "a5", 0.75),
    # g1 impostors within the group: 0.72 is the one false match -> FMR 1/5
    ("a1", "a2", 0.72), ("a2", "a3", 0.30), ("a3", "a4", 0.40), ("a4", "a5", 0.20), ("a5", "a1", 0.10),
    # across groups: left out "within-group"; counted for g1 (the probe's) "by-probe"
    ("a1", "b1", 0.95),
    # g2 (2 people): genuine 0.6 misses -> FNMR 1/2; impostor 0.71 matches -> FMR 1/2
    ("b1", "b1", 0.60), ("b2", "b2", 0.90), ("b1", "b2", 0.71), ("b2", "b1", 0.69),
]


def _by_group(**kwargs):
    probes, references, scores = zip(*PAIRS, strict=True)
    arguments = dict(
        scores=np.array(scores), probe_ids=probes, reference_ids=references, group_of=GROUP_OF, threshold=0.7,
        n_boot=300,
    )
    arguments.update(kwargs)
    return by_group(**arguments)


def test_rates_per_group_on_a_hand_computed_case() -> None:
    groups = _by_group()
    g1, g2 = groups["g1"], groups["g2"]
    assert (g1.n_identities, g1.n_genuine, g1.n_impostor, g1.n_pairs) == (5, 5, 5, 10)
    assert (g1.fnmr, g1.fmr) == (1 / 5, 1 / 5)
    assert (g2.n_identities, g2.n_genuine, g2.n_impostor) == (2, 2, 2)
    assert (g2.fnmr, g2.fmr) == (1 / 2, 1 / 2)
    assert g1.warning is None


def test_cross_group_impostors_count_for_the_probe_group_when_asked() -> None:
    g1 = _by_group(impostors="by-probe")["g1"]
    assert g1.n_impostor == 6 and g1.fmr == 2 / 6  # 0.72 and the cross-group 0.95


def test_intervals_contain_the_estimate() -> None:
    for figures in _by_group().values():
        assert figures.fmr_ci[0] <= figures.fmr <= figures.fmr_ci[1]
        assert figures.fnmr_ci[0] <= figures.fnmr <= figures.fnmr_ci[1]


def test_small_groups_are_warned_about() -> None:
    groups = _by_group(target_fmr=0.01)
    assert "only 2 identities (fewer than 5)" in groups["g2"].warning
    # 5 impostor pairs cannot resolve an FMR of 0.01 (100 needed): said for both groups.
    assert "5 impostor pairs cannot resolve an FMR of 0.01 (need >= 100)" in groups["g1"].warning
    assert "2 impostor pairs cannot resolve" in groups["g2"].warning


def test_no_false_matches_is_warned_about_with_the_rule_of_three() -> None:
    g1 = _by_group(threshold=0.73)["g1"]  # 0.72 no longer matches
    assert g1.fmr == 0.0
    assert "no false matches in 5 impostor pairs" in g1.warning and "0.6 (rule of three)" in g1.warning


def test_bootstrap_is_deterministic_for_a_seed() -> None:
    assert _by_group(seed=5) == _by_group(seed=5)


def test_identity_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_people() -> None:
    # Each person: 10 trials, every 4th person 3 errors -> rate 0.075 whatever the count.
    def people(n: int) -> tuple[np.ndarray, np.ndarray]:
        errors = np.array([3 if i % 4 == 0 else 0 for i in range(n)])
        return errors, np.full(n, 10)

    small = identity_bootstrap_ci(*people(20), seed=1)
    large = identity_bootstrap_ci(*people(400), seed=1)
    assert small[0] <= 0.075 <= small[1]
    assert large[0] <= 0.075 <= large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 2


def test_bootstrap_ci_of_a_mean() -> None:
    data = np.random.default_rng(0).normal(10.0, 1.0, 200)

    def mean(rng: np.random.Generator) -> float:
        return float(data[rng.integers(0, data.size, data.size)].mean())

    low, high = bootstrap_ci(mean, n_boot=500, seed=2)
    assert low <= data.mean() <= high
    # about +-1.96 * 1 / sqrt(200) = +-0.139
    assert high - low == pytest.approx(2 * 1.96 / math.sqrt(200), rel=0.2)
    # every resample undefined: no interval
    assert all(math.isnan(v) for v in bootstrap_ci(lambda rng: math.nan, n_boot=10))


def _figures(group: str, fmr: float, fnmr: float, warning: str | None = None) -> GroupFigures:
    n_impostor = 0 if math.isnan(fmr) else 100
    return GroupFigures(
        group=group, threshold=0.7, n_identities=10, n_pairs=100 + n_impostor, n_genuine=100, n_impostor=n_impostor,
        false_non_matches=round(fnmr * 100), false_matches=0 if math.isnan(fmr) else round(fmr * 100), fnmr=fnmr,
        fnmr_ci=(0.0, 1.0), fmr=fmr, fmr_ci=(0.0, 1.0), warning=warning,
    )


def test_disparity_ratios_of_the_hand_case() -> None:
    d = disparity(_by_group())
    assert d.fmr_ratio == pytest.approx(2.5)  # 0.5 / 0.2
    assert (d.fmr_worst, d.fmr_best) == ("g2", "g1")
    assert d.fnmr_ratio == pytest.approx(2.5)
    assert not d.fmr_unbounded and not d.fnmr_unbounded
    assert d.warned_groups == ("g2",)


@pytest.mark.parametrize(
    ("figures", "ratio", "worst", "best", "unbounded"),
    [
        ([("x", 0.01, 0.1), ("y", 0.04, 0.1), ("z", 0.02, 0.1)], 4.0, "y", "x", False),
        ([("x", 0.0, 0.1), ("y", 0.03, 0.1)], None, "y", "x", True),  # best 0: unbounded
        ([("x", 0.0, 0.1), ("y", 0.0, 0.1)], None, "x", "x", False),  # all 0: no ratio
        ([("x", 0.02, 0.1), ("y", math.nan, 0.1)], None, None, None, False),  # one group defined
    ],
)
def test_disparity_fmr_ratio(figures, ratio, worst, best, unbounded) -> None:
    d = disparity({g: _figures(g, fmr, fnmr) for g, fmr, fnmr in figures})
    assert d.fmr_ratio == (pytest.approx(ratio) if ratio is not None else None)
    assert (d.fmr_worst, d.fmr_best, d.fmr_unbounded) == (worst, best, unbounded)
    if ratio is None:
        assert any(note.startswith("FMR:") for note in d.notes)
    assert d.fnmr_ratio == 1.0  # every group's FNMR is 0.1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(scores=np.array([])), "pair scores: no scores"),
        (dict(scores=np.full(len(PAIRS), np.nan)), "NaN"),
        (dict(group_of={"a1": "g1"}), "no group for"),
        (dict(threshold=math.nan), "threshold"),
        (dict(target_fmr=0.0), "target_fmr must be in"),
        (dict(impostors="everyone"), "impostors must be"),
        (dict(probe_ids=["a1"]), "probe_ids and reference_ids"),
    ],
)
def test_bad_group_inputs_are_refused(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _by_group(**kwargs)


def test_other_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="no groups"):
        disparity({})
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(lambda rng: 0.0, n_boot=0)
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(lambda rng: 0.0, alpha=1.5)
    with pytest.raises(ValueError, match="no identities"):
        identity_bootstrap_ci(np.array([]), np.array([]))
    with pytest.raises(ValueError, match="errors <= trials"):
        identity_bootstrap_ci(np.array([3]), np.array([2]))

"""Open-set (1:N) identification figures on a hand-computed gallery."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openlfr.evaluation.identification import (
    extrapolate_fpir,
    fpir_vs_gallery_size,
    open_set,
    per_comparison_fmr_target,
    similarity_matrix,
)
from openlfr.watchlist.store import distance_to_score

# Gallery: identity A has two templates, B and C one each. Columns: A1, A2, B, C.
GALLERY_IDS = ["A", "A", "B", "C"]
ENROLLED = {"A", "B", "C"}
SCORES = np.array(
    [
        # 4 mated searches             per identity (max over templates)     outcome
        [0.60, 0.90, 0.50, 0.40],  # A: A .90 B .50 C .40 -> mate first, 0.90
        [0.30, 0.20, 0.80, 0.50],  # B: A .30 B .80 C .50 -> mate first, 0.80
        [0.70, 0.30, 0.40, 0.60],  # C: A .70 B .40 C .60 -> A outranks the mate: miss
        [0.50, 0.65, 0.60, 0.30],  # A: A .65 B .60 C .30 -> mate first only thanks to A2, 0.65
        # 5 non-mated searches         per identity                          top
        [0.40, 0.55, 0.30, 0.20],  # X: A .55 B .30 C .20 -> 0.55
        [0.70, 0.10, 0.20, 0.30],  # Y: A .70 B .20 C .30 -> 0.70
        [0.20, 0.30, 0.45, 0.35],  # Z: A .30 B .45 C .35 -> 0.45
        [0.10, 0.20, 0.30, 0.75],  # W: A .20 B .30 C .75 -> 0.75
        [0.50, 0.40, 0.62, 0.30],  # V: A .50 B .62 C .30 -> 0.62
    ]
)
PROBE_IDS = ["A", "B", "C", "A", "X", "Y", "Z", "W", "V"]


@pytest.fixture()
def result():
    return open_set(SCORES, GALLERY_IDS, PROBE_IDS, enrolled=ENROLLED)


def test_counts_and_rank1(result) -> None:
    assert (result.n_mated, result.n_nonmated, result.gallery_size) == (4, 5, 3)
    assert result.identities == ("A", "B", "C")
    assert result.rank1 == 3 / 4  # the C search is outranked by A
    assert list(result.mated_scores) == [0.90, 0.80, -math.inf, 0.65]
    assert list(result.nonmated_top) == [0.55, 0.70, 0.45, 0.75, 0.62]


def test_an_identity_scores_the_best_of_its_templates() -> None:
    # With only A's first template, the 4th search (A1 .50 < B .60) is no longer at rank 1.
    first_only = open_set(SCORES[:, [0, 2, 3]], ["A", "B", "C"], PROBE_IDS, enrolled=ENROLLED)
    assert first_only.rank1 == 2 / 4


@pytest.mark.parametrize(
    ("threshold", "fnir", "fpir"),
    [
        # misses below 0.7: the outranked C search and the A search at 0.65; false alerts: .70, .75
        (0.70, 2 / 4, 2 / 5),
        # misses below 0.6: only the outranked search; false alerts: .62, .70, .75
        (0.60, 1 / 4, 3 / 5),
        (0.95, 4 / 4, 0 / 5),
        (0.40, 1 / 4, 5 / 5),  # a miss at rank 1 stays a miss at any threshold
    ],
)
def test_fnir_and_fpir_at_thresholds(result, threshold: float, fnir: float, fpir: float) -> None:
    assert result.fnir_at(threshold) == pytest.approx(fnir)
    assert result.fpir_at(threshold) == pytest.approx(fpir)
    on_curve = np.flatnonzero(np.isclose(result.thresholds, threshold))
    if on_curve.size:
        assert result.fnir[on_curve[0]] == pytest.approx(fnir)
        assert result.fpir[on_curve[0]] == pytest.approx(fpir)


@pytest.mark.parametrize(
    ("target", "above", "fnir", "fpir"),
    [
        # 5 non-mated: floor(0.2 * 5) = 1 may alert: just above the 2nd-highest top (0.70);
        # FPIR 1/5 (0.75); FNIR: the outranked search and 0.65 -> 2/4.
        (0.2, 0.70, 2 / 4, 1 / 5),
        # floor(0.4 * 5) = 2: just above the 3rd-highest top (0.62); FPIR 2/5; FNIR 1/4.
        (0.4, 0.62, 1 / 4, 2 / 5),
    ],
)
def test_fnir_at_fpir(result, target: float, above: float, fnir: float, fpir: float) -> None:
    point = result.fnir_at_fpir(target)
    assert point.threshold == np.nextafter(above, np.inf)
    assert point.fnir == pytest.approx(fnir)
    assert point.fpir == pytest.approx(fpir)
    assert point.achievable and not point.extrapolated and point.method == "empirical"


def test_fnir_at_an_unresolvable_fpir_is_extrapolated_from_per_comparison_scores(result) -> None:
    # 5 non-mated searches cannot resolve FPIR 0.15 (need 7). Per comparison the target is
    # f1 = 1 - 0.85 ** (1/3) = 0.0527; there are 23 impostor comparisons (5 non-mated x 3
    # identities + 4 mated x 2 non-mates), 23 * 0.0527 = 1.2 >= 1, so floor(1.2) = 1 may reach
    # the threshold: just above the 2nd-highest comparison (0.75, 0.70, 0.70, ...) = 0.70.
    assert result.impostor_scores.size == 23
    point = result.fnir_at_fpir(0.15)
    assert not point.achievable and point.extrapolated
    assert point.method == "per-comparison:empirical"
    assert point.threshold == np.nextafter(0.70, np.inf)
    assert point.per_comparison_fmr == pytest.approx(1 / 23)
    assert point.fpir == pytest.approx(1 - (22 / 23) ** 3)  # modelled, 0.1248
    assert point.fpir_measured == pytest.approx(1 / 5)  # what the 5 searches show
    assert point.fnir == pytest.approx(2 / 4)


def test_fnir_at_fpir_without_enough_data_for_anything_is_unresolved(result) -> None:
    # FPIR 0.1 -> f1 = 0.0345: 23 comparisons cannot resolve it and are too few to fit a tail.
    point = result.fnir_at_fpir(0.1)
    assert point.method == "unresolved" and not point.achievable
    assert math.isnan(point.threshold) and math.isnan(point.fnir)


def test_a_tie_with_another_identity_is_not_rank1() -> None:
    scores = np.array([[0.8, 0.8], [0.3, 0.2]])
    r = open_set(scores, ["A", "B"], ["A", "Z"], enrolled={"A", "B"})
    assert r.rank1 == 0.0
    assert r.fnir_at(0.5) == 1.0


def test_fpir_model_formula() -> None:
    assert extrapolate_fpir(0.2, 3) == pytest.approx(1 - 0.8**3)  # 0.488
    assert extrapolate_fpir(0.0, 10_000) == 0.0
    assert extrapolate_fpir(1.0, 5) == 1.0
    # about N * fmr1 when small: 1 - (1 - 1e-8) ** 10_000 = 9.99950e-5
    assert extrapolate_fpir(1e-8, 10_000) == pytest.approx(9.9995e-5, rel=1e-5)
    assert extrapolate_fpir(per_comparison_fmr_target(1 / 6000, 10_000), 10_000) == pytest.approx(1 / 6000)


def test_fpir_vs_gallery_size_on_the_hand_case(result) -> None:
    # At 0.6, the per-identity non-mated scores at or above it are Y-A .70, W-C .75, V-B .62:
    # 3 of 15, fmr1 = 0.2. Every single identity alerts one of 5 searches, every pair two, all
    # three three, so the measured FPIR is exact whatever is drawn: 1/5, 2/5, 3/5.
    points = fpir_vs_gallery_size(result.nonmated_identity_scores, [1, 2, 3], 0.6, rng_seed=1, repeats=7)
    assert [p.size for p in points] == [1, 2, 3]
    assert [p.fpir_measured for p in points] == pytest.approx([0.2, 0.4, 0.6])
    assert [p.fpir_model for p in points] == pytest.approx([0.2, 0.36, 0.488])
    assert all(p.fmr1 == pytest.approx(0.2) for p in points)


def test_fpir_vs_gallery_size_is_deterministic_for_a_seed() -> None:
    scores = np.random.default_rng(0).random((50, 40))
    a = fpir_vs_gallery_size(scores, [5, 20], 0.95, rng_seed=3)
    b = fpir_vs_gallery_size(scores, [5, 20], 0.95, rng_seed=3)
    assert a == b


def test_similarity_matrix_is_distance_to_score() -> None:
    probes = np.array([[0.0, 0.0]])
    gallery = np.array([[0.0, 0.0], [0.6, 0.8], [3.0, 4.0]])  # distances 0, 1, 5
    assert similarity_matrix(probes, gallery) == pytest.approx(np.array([[1.0, 0.5, 0.0]]))
    rng = np.random.default_rng(2)
    p, g = rng.normal(0, 0.1, (3, 128)), rng.normal(0, 0.1, (4, 128))
    expected = [[distance_to_score(float(np.linalg.norm(a - b))) for b in g] for a in p]
    assert similarity_matrix(p, g) == pytest.approx(np.array(expected))


@pytest.mark.parametrize(
    ("scores", "gallery_ids", "probe_ids", "enrolled", "message"),
    [
        (np.zeros((0, 2)), ["A", "B"], [], {"A", "B"}, "no probes"),
        (np.zeros((2, 0)), [], ["A", "Z"], set(), "no gallery templates"),
        (np.array([[0.5, np.nan], [0.1, 0.2]]), ["A", "B"], ["A", "Z"], {"A", "B"}, "non-finite"),
        (np.array([[0.5, 0.4], [0.1, 0.2]]), ["A", "B"], ["A", "B"], {"A", "B"}, "no non-mated"),
        (np.array([[0.5, 0.4], [0.1, 0.2]]), ["A", "B"], ["Y", "Z"], {"A", "B"}, "no mated"),
        (np.array([[0.5, 0.4], [0.1, 0.2]]), ["A", "B"], ["A", "Z"], {"A"}, "exactly the gallery"),
        (np.array([[0.5, 0.4], [0.1, 0.2]]), ["A"], ["A", "Z"], {"A"}, "gallery_ids: 1 ids for 2"),
        (np.array([[0.5, 0.4], [0.1, 0.2]]), ["A", "B"], ["A"], {"A", "B"}, "probe_ids: 1 ids for 2"),
    ],
)
def test_bad_open_set_inputs_are_refused(scores, gallery_ids, probe_ids, enrolled, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_set(scores, gallery_ids, probe_ids, enrolled=enrolled)


@pytest.mark.parametrize("target", [0.0, 1.0, 2.0, math.nan])
def test_fpir_targets_out_of_range_are_refused(result, target: float) -> None:
    with pytest.raises(ValueError, match=r"must be in \(0, 1\)"):
        result.fnir_at_fpir(target)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: extrapolate_fpir(1.5, 10), "fmr1 must be in"),
        (lambda: extrapolate_fpir(0.1, 0), "gallery_size"),
        (lambda: fpir_vs_gallery_size(np.zeros((3, 2)), [3], 0.5), "sizes: 3"),
        (lambda: fpir_vs_gallery_size(np.zeros((3, 2)), [], 0.5), "no gallery sizes"),
        (lambda: fpir_vs_gallery_size(np.zeros((0, 2)), [1], 0.5), "empty"),
        (lambda: fpir_vs_gallery_size(np.zeros((3, 2)), [1], math.nan), "threshold"),
        (lambda: similarity_matrix(np.zeros((0, 128)), np.zeros((2, 128))), "probes: no descriptors"),
        (lambda: similarity_matrix(np.zeros((1, 128)), np.zeros((2, 64))), "lengths differ"),
    ],
)
def test_other_bad_inputs_are_refused(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()

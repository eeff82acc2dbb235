"""Track templates: which faces they keep, what vector they make and how they decide."""

from __future__ import annotations

import numpy as np
import pytest

from openlfr.cohort.norm import NormStats, ScoreNorm
from openlfr.pipeline.templates import TemplateFace, TrackTemplate
from openlfr.watchlist.store import SearchHit, distance_to_score

RNG = np.random.default_rng(7)
ANN = RNG.normal(size=128).astype(np.float32)
ANN *= 1.6 / np.linalg.norm(ANN)
BEN = RNG.normal(size=128).astype(np.float32)
BEN *= 1.6 / np.linalg.norm(BEN)


def _face(vector: np.ndarray, quality: float, name: str = "f") -> TemplateFace:
    return TemplateFace.of(vector, quality=quality, chip_jpeg=b"\xff\xd8\xff" + name.encode(), frame_id=name,
                           capture_ts=1.0, trace_id=name)


def _hit(subject: str, vector: np.ndarray, probe: np.ndarray, *, ref: str = "r1", norm: NormStats | None = None,
         cohort: str | None = None) -> SearchHit:
    distance = float(np.linalg.norm(probe - vector))
    return SearchHit(subject_id=subject, watchlist_id="wl", reference_image_id=ref, distance=distance,
                     score=distance_to_score(distance), norm=norm, norm_cohort=cohort, vector=vector)


def _noisy(base: np.ndarray, scale: float) -> np.ndarray:
    return (base + RNG.normal(size=base.shape).astype(np.float32) * scale).astype(np.float32)


def test_keeps_the_best_faces_by_quality() -> None:
    template = TrackTemplate(max_faces=3)
    for i, q in enumerate([0.5, 0.9, 0.3, 0.7, 0.2, 0.8]):
        template.add(_face(_noisy(ANN, 0.05), q, f"f{i}"), [])
    assert sorted(f.quality for f in template.faces) == [0.7, 0.8, 0.9]
    assert not template.add(_face(ANN, 0.1), [])  # worse than every kept face: not taken
    assert template.add(_face(ANN, 0.95), [])


def test_the_template_is_the_weighted_mean_direction_at_the_mean_length() -> None:
    template = TrackTemplate(max_faces=5)
    a, b = ANN, ANN * 0.5  # one direction, two lengths
    template.add(_face(a, 0.5), [])
    template.add(_face(b, 0.5), [])
    vector = template.vector()
    assert np.linalg.norm(vector) == pytest.approx((np.linalg.norm(a) + np.linalg.norm(b)) / 2, rel=1e-5)
    np.testing.assert_allclose(vector / np.linalg.norm(vector), ANN / np.linalg.norm(ANN), atol=1e-6)


def test_averaging_brings_noisy_views_nearer_the_reference() -> None:
    template = TrackTemplate(max_faces=5)
    views = [_noisy(ANN, 0.06) for _ in range(5)]
    for i, v in enumerate(views):
        template.add(_face(v, 0.5, f"f{i}"), [])
    single = np.mean([np.linalg.norm(v - ANN) for v in views])
    assert np.linalg.norm(template.vector() - ANN) < 0.6 * single


def test_decides_for_the_nearest_subject_with_floor_margin_and_count() -> None:
    template = TrackTemplate(max_faces=5)
    for i in range(3):
        probe = _noisy(ANN, 0.03)
        template.add(_face(probe, 0.5 + i / 10, f"f{i}"), [_hit("ann", ANN, probe), _hit("ben", BEN, probe)])
    assert template.decide(floor_score=0.5, min_margin=0.0, min_faces=4, norm=None, norm_threshold=None).outcome == "none"
    decision = template.decide(floor_score=0.5, min_margin=0.1, min_faces=3, norm=None, norm_threshold=None)
    assert decision.outcome == "match" and decision.hit.subject_id == "ann" and decision.faces == 3
    assert decision.probe.frame_id == "f2"  # the best-quality face
    assert decision.margin == pytest.approx(decision.score - distance_to_score(float(np.linalg.norm(template.vector() - BEN))), abs=1e-6)
    assert template.decide(floor_score=decision.score + 1e-3, min_margin=0.0, min_faces=3, norm=None,
                           norm_threshold=None).outcome == "none"
    assert template.decide(floor_score=0.5, min_margin=decision.margin + 1e-3, min_faces=3, norm=None,
                           norm_threshold=None).outcome == "none"
    assert template.decide(floor_score=0.5, min_margin=0.0, min_faces=3, norm=None, norm_threshold=None,
                           exclude={"ann"}).outcome == "none"


def test_normalised_decisions_fail_closed_without_statistics() -> None:
    cohort = np.stack([_noisy(BEN, 0.8) for _ in range(40)])
    norm = ScoreNorm(cohort, top_k=5, cohort_id="cohort@x")
    template = TrackTemplate(max_faces=5)
    for i in range(3):
        probe = _noisy(ANN, 0.03)
        template.add(_face(probe, 0.5, f"f{i}"), [_hit("ann", ANN, probe, norm=norm.stats(ANN), cohort="cohort@x")])
    ok = template.decide(floor_score=0.5, min_margin=0.0, min_faces=3, norm=norm, norm_threshold=1.0)
    assert ok.outcome == "match" and ok.normalised is not None and ok.normalised >= 1.0
    assert template.decide(floor_score=0.5, min_margin=0.0, min_faces=3, norm=norm,
                           norm_threshold=ok.normalised + 1).outcome == "none"
    assert template.decide(floor_score=0.5, min_margin=0.0, min_faces=3, norm=None,
                           norm_threshold=1.0).outcome == "unnormalised"
    other = ScoreNorm(cohort, top_k=5, cohort_id="cohort@y")  # statistics from another cohort
    assert template.decide(floor_score=0.5, min_margin=0.0, min_faces=3, norm=other,
                           norm_threshold=1.0).outcome == "unnormalised"


def test_keeps_at_most_max_refs_and_ignores_hits_without_vectors() -> None:
    template = TrackTemplate(max_faces=2, max_refs=3)
    probe = _noisy(ANN, 0.03)
    hits = [_hit(f"s{i}", _noisy(ANN, 0.02 * i), probe, ref=f"r{i}") for i in range(6)]
    template.add(_face(probe, 0.5), hits)
    assert len(template.refs) == 3 and {k[0] for k in template.refs} == {"s0", "s1", "s2"}
    blind = SearchHit(subject_id="x", watchlist_id="wl", reference_image_id="r", distance=0.1, score=0.95)
    template.add(_face(probe, 0.4), [blind])
    assert ("x", "r") not in template.refs


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        TrackTemplate(max_faces=0)
    with pytest.raises(ValueError, match="zero embedding"):
        TemplateFace.of(np.zeros(128), quality=0.5, chip_jpeg=b"x", frame_id="f", capture_ts=1.0, trace_id="t")
    with pytest.raises(ValueError, match="no faces"):
        TrackTemplate(max_faces=1).vector()

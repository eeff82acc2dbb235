"""The match stage's track templates on real descriptors: one decision per track from its best
faces, per-subject thresholds on cohort statistics, the look-alike watch, model versions.

Split from test_match_stage.py (its people, store, frames and walks are used here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from openlfr.messages.models import Match
from openlfr.pipeline.deployments import ActiveDeployment, StaticGate
from openlfr.pipeline.match import MatchSettings, MatchStage
from openlfr.pipeline.stage import Incoming
from openlfr.vision.images import load_image
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.watchlist.store import WatchlistEntry, distance_to_score

from .test_match_stage import (
    ENROLLED,
    FIRST_OFFSET,
    PARTITION,
    REFERENCES_PER_SUBJECT,
    SIGNER,
    T0,
    THRESHOLD,
    _face,
    _frame,
    _matches,
    _settings,
    _stage,
    _store,
    _walk,
    _walkers,
)
from .test_match_stage import people  # noqa: F401 - the fixture


def _template_settings(**overrides: object) -> MatchSettings:
    return _settings(decision="template", **overrides)


def _template_gate(threshold: float = THRESHOLD, norm_threshold: float | None = None) -> StaticGate:
    return StaticGate(ActiveDeployment(deployment_id="dep-1", watchlist_ids=("wl-1",), threshold=threshold,
                                       snapshot_ts=T0 + 1e6, norm_threshold=norm_threshold))


def _template_of(people, frames: int) -> np.ndarray:
    """The template the stage should build from Obama's first ``frames`` walking photos."""
    from openlfr.pipeline.templates import TemplateFace, TrackTemplate

    obama, _ = _walkers(people)
    template = TrackTemplate(max_faces=5)
    for k in range(frames):
        template.add(TemplateFace.of(obama[k].vector, quality=obama[k].quality.score, chip_jpeg=b"x",
                                     frame_id=f"f{k:03d}", capture_ts=T0, trace_id="t"), [])
    return template.vector()


def test_a_template_matches_once_per_track_and_never_the_stranger(people) -> None:
    store = _store(people)
    stage = _stage(_template_settings(), store)
    matches: list[Match] = []
    for incoming in _walk(people, range(8)):
        matches += _matches(stage.handle([incoming], now=T0 + 100))
    assert [(m.subject_id, m.track_id) for m in matches] == [("Barack_Obama", "cam-1:f000:0")]
    m = matches[0]
    assert (m.votes, m.track_frames) == (3, 3)  # decided once the template had min_votes faces
    # The score is the template's against its nearest reference of the subject.
    template = _template_of(people, 3)
    best = max(distance_to_score(float(np.linalg.norm(template - r.vector))) for r in people["Barack_Obama"][:REFERENCES_PER_SUBJECT])
    assert m.score == pytest.approx(best, abs=1e-5)
    # The probe shown is the template's best-quality face.
    obama, _ = _walkers(people)
    top = int(np.argmax([f.quality.score for f in obama[:3]]))
    assert (m.frame_id, m.trace_id) == (f"f{top:03d}", f"trace-{top:04d}")
    assert m.probe_chip_jpeg[:3] == b"\xff\xd8\xff" and m.normalised_score is None
    # Nothing is kept of the stranger's track but in memory, and it goes when the track ends.
    assert "cam-1:f000:1" in stage._templates
    _, hugh = _walkers(people)
    later = _frame(40, [_face(0, hugh[0], (880.0, 220.0, 990.0, 350.0))], ts=T0 + 60.0)
    stage.handle([Incoming(later, PARTITION, FIRST_OFFSET + 40)], now=T0 + 100)
    assert set(stage._templates) == {"cam-1:f040:0"}


def test_a_template_finds_whom_single_frames_miss(people) -> None:
    """At a threshold between the frames' own scores and the template's, frame votes never
    match and the template does: averaging the views brings the probe nearer the references."""
    store = _store(people)
    obama, _ = _walkers(people)
    frame_best = max(h.score for f in obama[:3] for h in store.search(f.vector, limit=1, watchlist_ids=["wl-1"]))
    template = _template_of(people, 3)
    template_best = max(distance_to_score(float(np.linalg.norm(template - r.vector))) for r in people["Barack_Obama"][:REFERENCES_PER_SUBJECT])
    assert template_best > frame_best + 0.002
    threshold = (frame_best + template_best) / 2
    votes = _stage(_settings(), store, _template_gate(threshold))
    template_stage = _stage(_template_settings(), store, _template_gate(threshold))
    frames = _walk(people, range(3))
    assert _matches(votes.handle(frames, now=T0 + 100)) == []
    assert [m.subject_id for m in _matches(template_stage.handle(frames, now=T0 + 100))] == ["Barack_Obama"]


def test_template_decisions_replay_identically(people) -> None:
    frames = _walk(people, range(6))
    store = _store(people)
    first = _matches(_stage(_template_settings(), store).handle(frames, now=T0 + 100))
    again = _matches(_stage(_template_settings(), store).handle(frames, now=T0 + 999))
    assert first and [m.model_dump() for m in first] == [m.model_dump() for m in again]


def test_a_template_with_per_subject_thresholds_needs_cohort_statistics(people, faces_dir: Path, analyzer) -> None:
    """With a normalised threshold: references scored against a real cohort match when the
    normalised score reaches it and not when it does not; references without statistics
    never match (counted), however high their raw score."""
    from openlfr.cohort.cohort import CohortFace, make_cohort
    from openlfr.evaluation.embeddings import sha256_bytes

    crops = sorted((faces_dir / "utkface_balanced").glob("*.jpg"))[:120]
    found = analyzer.analyze_many([load_image(p) for p in crops])
    cohort = make_cohort([CohortFace(f.embeddings[0], sha256_bytes(p.read_bytes())) for p, f in zip(crops, found)
                          if len(f)], model_version="dlib_resnet_v1")
    norm = cohort.norm()
    normed = QdrantStore()
    normed.upsert([
        WatchlistEntry(subject_id=person, watchlist_id="wl-1", reference_image_id=face.name.removesuffix(".png"),
                       vector=face.vector, norm=norm.stats(face.vector), norm_cohort=norm.cohort_id)
        for person in ENROLLED for face in people[person][:REFERENCES_PER_SUBJECT]
    ])
    frames = _walk(people, range(6))
    registry = CollectorRegistry()
    lenient = MatchStage(_template_settings(), store=normed, gate=_template_gate(norm_threshold=1.0), norm=norm,
                         registry=registry, signer=SIGNER)
    matches = _matches(lenient.handle(frames, now=T0 + 100))
    assert [m.subject_id for m in matches] == ["Barack_Obama"]
    assert matches[0].normalised_score >= 1.0 and matches[0].normalised_threshold == 1.0
    assert matches[0].cohort == norm.cohort_id
    strict = MatchStage(_template_settings(), store=normed, gate=_template_gate(norm_threshold=matches[0].normalised_score + 5),
                        norm=norm, registry=CollectorRegistry(), signer=SIGNER)
    assert _matches(strict.handle(frames, now=T0 + 100)) == []
    # References enrolled without a cohort: nothing can justify a threshold, so nothing matches.
    unscored = MatchStage(_template_settings(), store=_store(people), gate=_template_gate(norm_threshold=1.0),
                          norm=norm, registry=registry, signer=SIGNER)
    assert _matches(unscored.handle(frames, now=T0 + 100)) == []
    assert registry.get_sample_value(
        "openlfr_match_unnormalised_total", {"deployment": "dep-1", "reason": "reference_without_stats"}) >= 1


def test_look_alike_watch_counts_tracks_that_came_close_and_keeps_nothing_else(people) -> None:
    """The stranger's template comes within the margin of a subject's threshold: when the track
    ends, that subject has one near miss (a count: no vector, chip or image is kept)."""
    from openlfr.pipeline.templates import TemplateFace, TrackTemplate

    store = _store(people)
    _, hugh = _walkers(people)
    template = TrackTemplate(max_faces=5)
    for k in range(6):
        template.add(TemplateFace.of(hugh[k % len(hugh)].vector, quality=hugh[k % len(hugh)].quality.score,
                                     chip_jpeg=b"x", frame_id="f", capture_ts=T0, trace_id="t"), [])
    nearest = max(
        ((distance_to_score(float(np.linalg.norm(template.vector() - r.vector))), person)
         for person in ENROLLED for r in people[person][:REFERENCES_PER_SUBJECT]),
    )
    settings = _template_settings(look_alike_min_tracks=1, look_alike_score_margin=0.05)
    registry = CollectorRegistry()
    stage = MatchStage(settings, store=store, gate=_template_gate(threshold=min(1.0, nearest[0] + 0.02)),
                       registry=registry, signer=SIGNER)
    obama_matched = []
    for incoming in _walk(people, range(6)):
        obama_matched += _matches(stage.handle([incoming], now=T0 + 100))
    later = _frame(40, [_face(0, hugh[0], (100.0, 600.0, 200.0, 700.0))], ts=T0 + 60.0)  # both tracks end
    stage.handle([Incoming(later, PARTITION, FIRST_OFFSET + 40)], now=T0 + 100)
    counts = stage.look_alikes("dep-1")
    assert counts.get(nearest[1], 0) >= 1, (nearest, counts)
    assert all(isinstance(v, int) for v in counts.values())
    assert registry.get_sample_value("openlfr_match_near_miss_tracks_total", {"deployment": "dep-1"}) >= 1
    assert registry.get_sample_value("openlfr_match_look_alike_subjects", {"deployment": "dep-1"}) >= 1
    # A strict threshold far above every stranger's score: no near miss at all.
    strict = MatchStage(settings, store=store, gate=_template_gate(threshold=0.99), registry=CollectorRegistry(),
                        signer=SIGNER)
    strict.handle(_walk(people, range(6)) + [Incoming(later, PARTITION, FIRST_OFFSET + 40)], now=T0 + 100)
    assert strict.look_alikes("dep-1") == {}


def test_embeddings_of_another_model_are_dead_lettered_never_searched(people) -> None:
    store = _store(people)
    store.model_version = "faceres_v1@0123456789ab"  # the watchlist holds another embedder's vectors
    stage = _stage(_template_settings(), store)
    result = stage.handle(_walk(people, range(2)), now=T0 + 100)
    assert result.outputs == [] and len(result.rejected) == 2
    assert all("embedder_model 'dlib_resnet_v1' is not the watchlist's 'faceres_v1@0123456789ab'" in reason
               for _, reason in result.rejected)
    assert stage.tracker.tracks() == []

"""The match stage on real descriptors: one Match per track, nothing kept of strangers, hold offsets.

Frames are built from real photos: each "frame" holds one held-out aligned crop of an enrolled
person (Barack Obama) and one of a person on no watchlist (Hugh Laurie), each with the
analyzer's own embedding, quality and chip, at boxes that drift slowly like a walking person.
Separate photos differ more than successive video frames do (0.4-0.6 apart rather than
< 0.3), so the tracker's embedding gate is widened to 0.7 for these tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from openlfr.messages.models import EmbeddedFace, Embeddings, FaceQualityRecord, Match
from openlfr.messages.topics import MATCHES
from openlfr.pipeline.alert import alert_id_for
from prometheus_client import CollectorRegistry

from openlfr.pipeline.deployments import ActiveDeployment, StaticGate
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.messages.signing import MatchSigner
from openlfr.pipeline.match import MatchSettings, MatchStage
from openlfr.pipeline.stage import BatchResult, Incoming
from openlfr.vision.images import load_image
from openlfr.watchlist.exceptions import StoreUnavailable
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.watchlist.store import SearchHit, VectorStore, WatchlistEntry, distance_to_score

CELEBS = Path("glint360k_celebs")
ENROLLED = ("Barack_Obama", "Halle_Berry", "Jennifer_Aniston")
REFERENCES_PER_SUBJECT = 5
T0 = 1_700_000_000.0
SIGNER = MatchSigner.ephemeral()
PARTITION = 2
FIRST_OFFSET = 10


@dataclass(frozen=True)
class RealFace:
    name: str
    vector: np.ndarray
    quality: FaceQualityRecord
    landmarks: tuple[tuple[float, float], ...]
    chip_png: bytes


@pytest.fixture(scope="module")
def people(analyzer, faces_dir: Path) -> dict[str, list[RealFace]]:
    out: dict[str, list[RealFace]] = {}
    for person in (*ENROLLED, "Hugh_Laurie"):
        paths = sorted((faces_dir / CELEBS / person).glob("*.png"))[:12]
        results = analyzer.analyze_many([load_image(p) for p in paths])
        faces = []
        for path, f in zip(paths, results, strict=True):
            if len(f) != 1:
                continue
            ok, png = cv2.imencode(".png", cv2.cvtColor(f.chips[0], cv2.COLOR_RGB2BGR))
            assert ok
            faces.append(
                RealFace(
                    name=path.name,
                    vector=f.embeddings[0],
                    quality=FaceQualityRecord(**f.quality.row(0)),
                    landmarks=tuple((float(x), float(y)) for x, y in f.landmarks[0]),
                    chip_png=png.tobytes(),
                )
            )
        out[person] = faces
    return out


def _store(people: dict[str, list[RealFace]]) -> QdrantStore:
    store = QdrantStore()
    store.upsert(
        [
            WatchlistEntry(
                subject_id=person,
                watchlist_id="wl-1",
                reference_image_id=face.name.removesuffix(".png"),
                vector=face.vector,
            )
            for person in ENROLLED
            for face in people[person][:REFERENCES_PER_SUBJECT]
        ]
    )
    return store


def _settings(**overrides: object) -> MatchSettings:
    # The frame-vote decision unless a test asks for templates (tested at the end of this file).
    values: dict[str, object] = dict(min_votes=3, track_max_distance=0.7, track_max_gap_s=2.0, decision="votes")
    values.update(overrides)
    return MatchSettings(**values)  # type: ignore[arg-type]


THRESHOLD = distance_to_score(0.59)


def _gate(watchlists: tuple[str, ...] = ("wl-1",), **kwargs: object) -> StaticGate:
    deployment = ActiveDeployment(
        deployment_id="dep-1", watchlist_ids=watchlists, threshold=THRESHOLD, snapshot_ts=T0 + 1e6
    )
    return StaticGate(deployment, **kwargs)  # type: ignore[arg-type]


def _stage(settings: MatchSettings, store: VectorStore, gate: StaticGate | None = None) -> MatchStage:
    return MatchStage(settings, store=store, gate=gate or _gate(), registry=CollectorRegistry(), signer=SIGNER)


def _face(
    index: int, face: RealFace, box: tuple[float, float, float, float], *, quality: float | None = None
) -> EmbeddedFace:
    q = face.quality if quality is None else face.quality.model_copy(update={"score": quality})
    return EmbeddedFace(
        index=index,
        box=box,
        score=min(1.0, face.quality.detector_score),
        landmarks=face.landmarks,
        quality=q,
        chip_png=face.chip_png,
        embedding=EmbeddedFace.pack(face.vector),
    )


def _frame(n: int, faces: Sequence[EmbeddedFace], *, ts: float | None = None, camera: str = "cam-1") -> Embeddings:
    return Embeddings(
        camera_id=camera,
        frame_id=f"f{n:03d}",
        capture_ts=T0 + 0.2 * n if ts is None else ts,
        trace_id=f"trace-{n:04d}",
        width=1920,
        height=1080,
        faces=tuple(faces),
        detector_model="blazeface_full",
        embedder_model="dlib_resnet_v1",
    )


def _walkers(people: dict[str, list[RealFace]]) -> tuple[list[RealFace], list[RealFace]]:
    """Held-out photos of Obama and photos of the stranger that pass the default quality gate."""
    gate = MatchSettings.model_fields["min_quality"].default
    obama = [f for f in people["Barack_Obama"][REFERENCES_PER_SUBJECT:] if f.quality.score >= gate]
    hugh = [f for f in people["Hugh_Laurie"] if f.quality.score >= gate]
    return obama, hugh


def _walk(people: dict[str, list[RealFace]], frames: range, *, t_offset: float = 0.0) -> list[Incoming[Embeddings]]:
    """Obama (face 0) walks on the left, the stranger (face 1) on the right, one photo per frame."""
    obama, hugh = _walkers(people)
    out = []
    for k, n in enumerate(frames):
        faces = [
            _face(0, obama[k % len(obama)], (100.0 + 4 * k, 200.0, 220.0 + 4 * k, 340.0)),
            _face(1, hugh[k % len(hugh)], (900.0 - 4 * k, 220.0, 1010.0 - 4 * k, 350.0)),
        ]
        out.append(Incoming(_frame(n, faces, ts=T0 + 0.2 * n + t_offset), PARTITION, FIRST_OFFSET + n))
    return out


def _matches(result: BatchResult) -> list[Match]:
    assert all(o.topic is MATCHES and o.key == o.message.camera_id for o in result.outputs)
    return [o.message for o in result.outputs]  # type: ignore[misc]


def test_one_match_per_track_and_none_for_the_stranger(people) -> None:
    store = _store(people)
    stage = _stage(_settings(), store)
    stored_before = store.count()
    matches: list[Match] = []
    for incoming in _walk(people, range(6)):
        matches += _matches(stage.handle([incoming], now=T0 + 100))

    assert len(matches) == 1
    m = matches[0]
    assert (m.subject_id, m.watchlist_id, m.track_id, m.camera_id) == ("Barack_Obama", "wl-1", "cam-1:f000:0", "cam-1")
    assert (m.votes, m.track_frames) == (3, 3)  # decided on the third voting frame
    # The probe is the best-quality voting face so far; its frame gives frame_id and capture_ts.
    obama, _ = _walkers(people)
    best = int(np.argmax([f.quality.score for f in obama[:3]]))
    assert (m.frame_id, m.capture_ts, m.trace_id) == (f"f{best:03d}", T0 + 0.2 * best, f"trace-{best:04d}")
    probe_vector = obama[best].vector
    hit = store.search(probe_vector, limit=2, watchlist_ids=["wl-1"])
    assert m.score == pytest.approx(distance_to_score(hit[0].distance), abs=1e-6)
    assert m.margin == pytest.approx(hit[0].score - hit[1].score, abs=1e-6)
    assert m.reference_image_id == hit[0].reference_image_id
    assert m.threshold == pytest.approx(1 - 0.59 / 2)
    assert m.deployment_id == "dep-1"
    assert m.first_seen_ts == T0 and m.embedder_model == "dlib_resnet_v1"
    # Signed with the stage's key (schema 2): the alert stage can tell it from a forged record.
    assert m.v == 3 and SIGNER.verify(m) and not MatchSigner.ephemeral().verify(m)
    assert m.probe_chip_jpeg[:3] == b"\xff\xd8\xff"
    chip = cv2.imdecode(np.frombuffer(m.probe_chip_jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert chip.shape == (150, 150, 3)

    # Nothing of the stranger is stored: the store holds the references only, and the stranger's
    # track holds one embedding and no chip.
    assert store.count() == stored_before == len(ENROLLED) * REFERENCES_PER_SUBJECT
    tracks = {t.track_id: t for t in stage.tracker.tracks()}
    assert set(tracks) == {"cam-1:f000:0", "cam-1:f000:1"}
    stranger = tracks["cam-1:f000:1"]
    assert stranger.frames == 6 and stranger.best.chip is None
    assert stranger.last_embedding.shape == (128,)
    assert tracks["cam-1:f000:0"].best.chip is not None  # a candidate's chip is kept for its track's life


def test_a_frame_from_the_future_is_dead_lettered_and_silences_no_camera(people) -> None:
    """A frame captured 48 h ahead (a fast clock, or forged) on one camera: trusted, it moved its
    partition's event time so far that every other camera's tracks ended as idle at each frame and
    its own at each next frame. Refused, Obama still matches on the camera beside it."""
    stage = _stage(_settings(), _store(people))
    now = T0 + 100
    obama, hugh = _walkers(people)
    offsets = iter(range(FIRST_OFFSET, FIRST_OFFSET + 100))
    future = _frame(900, [_face(0, hugh[0], (500.0, 500.0, 600.0, 620.0))], ts=now + 48 * 3600, camera="cam-x")
    first = stage.handle([Incoming(future, PARTITION, next(offsets))], now=now)
    assert [(i.message.frame_id, reason.split(" ")[0]) for i, reason in first.rejected] == [("f900", "capture_ts")]
    assert "ahead of the match stage's clock" in first.rejected[0][1]
    assert "OPENLFR_MAX_CLOCK_SKEW_S=300" in first.rejected[0][1]
    matches: list[Match] = []
    for k in range(6):
        ts = T0 + 0.2 * k
        near = _frame(k, [_face(0, obama[k % len(obama)], (100.0 + 4 * k, 200.0, 220.0 + 4 * k, 340.0))], ts=ts)
        other = _frame(100 + k, [_face(0, hugh[k % len(hugh)], (900.0, 220.0, 1010.0, 350.0))], ts=ts, camera="cam-x")
        for message in (near, other):
            result = stage.handle([Incoming(message, PARTITION, next(offsets))], now=now)
            assert result.rejected == []
            matches += _matches(result)
    assert [(m.camera_id, m.subject_id) for m in matches] == [("cam-1", "Barack_Obama")]


def test_hold_is_first_offset_of_the_oldest_open_track_and_releases_when_tracks_end(people) -> None:
    stage = _stage(_settings(), _store(people))
    result = stage.handle(_walk(people, range(4)), now=T0 + 100)
    assert result.hold == {PARTITION: FIRST_OFFSET}
    # Obama leaves; the stranger stays. The hold follows the stranger's track (same first frame).
    _, hugh = _walkers(people)
    lone = _frame(4, [_face(1, hugh[4], (884.0, 220.0, 994.0, 350.0))])
    result = stage.handle([Incoming(lone, PARTITION, FIRST_OFFSET + 4)], now=T0 + 100)
    assert result.hold == {PARTITION: FIRST_OFFSET}
    # 10 s later in event time both tracks have ended; a new one starts at this frame's offset.
    later = _frame(5, [_face(0, hugh[5], (880.0, 220.0, 990.0, 350.0))], ts=T0 + 12.0)
    result = stage.handle([Incoming(later, PARTITION, FIRST_OFFSET + 20)], now=T0 + 100)
    assert result.hold == {PARTITION: FIRST_OFFSET + 20}
    assert [t.track_id for t in stage.tracker.tracks()] == ["cam-1:f005:0"]


def test_a_new_track_of_the_same_person_gives_a_new_match(people) -> None:
    stage = _stage(_settings(), _store(people))
    first = _matches(stage.handle(_walk(people, range(4)), now=T0 + 100))
    second = _matches(stage.handle(_walk(people, range(10, 14), t_offset=30.0), now=T0 + 100))
    assert [m.track_id for m in first] == ["cam-1:f000:0"]
    assert [m.track_id for m in second] == ["cam-1:f010:0"]


def test_restart_replaying_from_hold_gives_the_same_decision(people) -> None:
    frames = _walk(people, range(6))
    store = _store(people)
    original = _stage(_settings(), store)
    before = original.handle(frames[:2], now=T0 + 100)
    assert before.outputs == [] and before.hold == {PARTITION: FIRST_OFFSET}
    # The runner committed up to the hold; the process dies. A new one replays from the hold.
    decided = _matches(original.handle(frames[2:], now=T0 + 100))
    restarted = _stage(_settings(), store)
    replayed = _matches(restarted.handle([f for f in frames if f.offset >= before.hold[PARTITION]], now=T0 + 999))
    assert len(decided) == 1 and replayed == decided
    a, b = decided[0], replayed[0]
    assert alert_id_for(camera_id=a.camera_id, track_id=a.track_id, subject_id=a.subject_id) == alert_id_for(
        camera_id=b.camera_id, track_id=b.track_id, subject_id=b.subject_id
    )


def test_a_batch_delivered_again_gives_the_same_outcome_without_counting_twice(people) -> None:
    stage = _stage(_settings(min_votes=3), _store(people))
    frames = _walk(people, range(4))
    first = stage.handle(frames[:3], now=T0 + 100)
    assert len(first.outputs) == 1
    # The runner's produce failed: it seeks back and hands over the same batch. Same Match again
    # (the alert stage dedupes it if the first one did get out), and the track is unchanged.
    again = stage.handle(frames[:3], now=T0 + 101)
    assert again.outputs == first.outputs and again.dropped == first.dropped and again.hold == first.hold
    track = next(t for t in stage.tracker.tracks() if t.track_id == "cam-1:f000:0")
    assert track.frames == 3
    # The next batch moves on; the earlier offsets are then only duplicates.
    stage.handle(frames[3:], now=T0 + 102)
    late = stage.handle(frames[:2], now=T0 + 103)
    assert late.outputs == [] and late.dropped == {"duplicate": 2} and track.frames == 4


def test_a_frame_sent_twice_at_another_offset_is_a_duplicate(people) -> None:
    stage = _stage(_settings(min_votes=4), _store(people))
    frames = _walk(people, range(3))
    stage.handle(frames, now=T0 + 100)
    copy = Incoming(frames[2].message, PARTITION, FIRST_OFFSET + 50)
    result = stage.handle([copy], now=T0 + 100)
    assert result.outputs == [] and result.dropped == {"duplicate": 1}
    assert stage.tracker.tracks()[0].frames == 3
    assert _matches(stage.handle(_walk(people, range(3, 4)), now=T0 + 100))[0].votes == 4


@pytest.mark.parametrize(
    ("obama_quality", "expected_dropped", "expected_matches"),
    [
        (None, {}, 1),
        (0.1, {"low_quality": 4}, 0),
    ],
)
def test_faces_below_the_quality_gate_are_dropped_and_counted(
    people, obama_quality, expected_dropped, expected_matches
) -> None:
    stage = _stage(_settings(min_quality=0.2), _store(people))
    obama, _ = _walkers(people)
    batch = [
        Incoming(_frame(n, [_face(0, obama[n], (100.0, 200.0, 220.0, 340.0), quality=obama_quality)]), PARTITION, n)
        for n in range(4)
    ]
    result = stage.handle(batch, now=T0 + 100)
    assert result.dropped == expected_dropped
    assert len(result.outputs) == expected_matches
    assert len(stage.tracker) == (0 if obama_quality else 1)


def test_only_the_configured_watchlists_are_searched(people) -> None:
    stage = _stage(_settings(), _store(people), _gate(("another-list",)))
    result = stage.handle(_walk(people, range(6)), now=T0 + 100)
    assert result.outputs == []
    assert all(t.best.chip is None for t in stage.tracker.tracks())


@pytest.mark.parametrize(
    ("faces", "reason"),
    [
        ("repeated_index", "face indexes repeat"),
        ("bad_chip", "chip_png is not a decodable image"),
    ],
)
def test_unprocessable_messages_are_rejected_and_the_batch_goes_on(people, faces, reason) -> None:
    stage = _stage(_settings(), _store(people))
    obama = _walkers(people)[0][0]
    good = _face(0, obama, (100.0, 200.0, 220.0, 340.0))
    if faces == "repeated_index":
        bad_faces = [good, good]
    else:
        bad_faces = [good.model_copy(update={"chip_png": b"\x89PNG\r\n\x1a\n-broken-"})]
    bad = Incoming(_frame(0, bad_faces), PARTITION, 0)
    fine = Incoming(_frame(1, [good]), PARTITION, 1)
    result = stage.handle([bad, fine], now=T0 + 100)
    assert len(result.rejected) == 1 and result.rejected[0][0] is bad and reason in result.rejected[0][1]
    assert len(stage.tracker) == 1
    # Delivered again (the dead letter was not acknowledged): rejected again, not a duplicate.
    again = stage.handle([bad, fine], now=T0 + 100)
    assert again.rejected == result.rejected and again.dropped == result.dropped


class _FailingStore(VectorStore):
    """The real store, whose ``fail_on``-th search finds the server down."""

    def __init__(self, inner: VectorStore, fail_on: int) -> None:
        self.inner, self.fail_on, self.calls = inner, fail_on, 0

    def search(self, vector, *, limit, watchlist_ids=None, enrolled_before=None) -> list[SearchHit]:
        self.calls += 1
        if self.calls == self.fail_on:
            raise StoreUnavailable("qdrant search: connection refused")
        return self.inner.search(vector, limit=limit, watchlist_ids=watchlist_ids, enrolled_before=enrolled_before)

    def set_subject_state(self, subject_id, *, status, expires_ts) -> int:
        return self.inner.set_subject_state(subject_id, status=status, expires_ts=expires_ts)

    def upsert(self, entries) -> None:
        self.inner.upsert(entries)

    def delete_subject(self, subject_id) -> None:
        self.inner.delete_subject(subject_id)

    def count(self) -> int:
        return self.inner.count()

    def ready(self) -> tuple[bool, str]:
        return self.inner.ready()


def test_store_outage_leaves_the_stage_unchanged_so_the_batch_can_be_retried(people) -> None:
    frames = _walk(people, range(6))
    clean = _stage(_settings(), _store(people)).handle(frames, now=T0 + 100)

    stage = _stage(_settings(), _FailingStore(_store(people), fail_on=7))
    with pytest.raises(BackendUnavailable):
        stage.handle(frames, now=T0 + 100)
    assert len(stage.tracker) == 0
    retried = stage.handle(frames, now=T0 + 100)
    assert _matches(retried) == _matches(clean) and retried.hold == clean.hold
    assert stage.ready() == (True, "ok")


def test_settings_refuse_the_retired_watchlist_and_threshold_and_inconsistent_tracker_gates() -> None:
    with pytest.raises(ValueError, match="OPENLFR_MATCH_WATCHLIST_IDS is no longer read"):
        MatchSettings(watchlist_ids=("wl",))  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="OPENLFR_MATCH_MAX_DISTANCE"):
        MatchSettings(max_distance=0.5)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="track_reacquire_distance"):
        MatchSettings(track_max_distance=0.3, track_reacquire_distance=0.4)


def test_outside_every_deployment_nothing_is_searched_tracked_or_kept(people) -> None:
    store = _FailingStore(_store(people), fail_on=10_000)
    gate = _gate(camera_ids=("cam-2",))  # authorised for another camera only
    stage = _stage(_settings(), store, gate)
    result = stage.handle(_walk(people, range(6)), now=T0 + 100)
    assert result.outputs == [] and result.dropped == {"no_deployment": 6}
    assert store.calls == 0 and len(stage.tracker) == 0 and result.hold == {}
    assert (gate.faces, gate.tracks) == (0, 0)


def test_the_deployment_window_is_in_event_time(people) -> None:
    # Authorised from the fourth frame on: the first three are not processed at all.
    gate = _gate(start_ts=T0 + 0.2 * 3, end_ts=T0 + 60)
    stage = _stage(_settings(), _store(people), gate)
    result = stage.handle(_walk(people, range(8)), now=T0 + 1000)
    assert result.dropped.get("no_deployment") == 3
    matches = _matches(result)
    assert len(matches) == 1 and matches[0].first_seen_ts == T0 + 0.2 * 3
    assert gate.faces == 2 * 5 and gate.tracks == 2


def test_references_enrolled_after_the_snapshot_are_not_matched(people) -> None:
    store = _store(people)  # enrolled_ts 0.0
    late = [
        WatchlistEntry(
            subject_id="Hugh_Laurie", watchlist_id="wl-1", reference_image_id=f"late-{k}",
            vector=face.vector, enrolled_ts=T0 + 10,
        )
        for k, face in enumerate(people["Hugh_Laurie"][-3:])
    ]
    store.upsert(late)
    snapshot = ActiveDeployment(deployment_id="dep-1", watchlist_ids=("wl-1",), threshold=THRESHOLD, snapshot_ts=T0)
    before = _stage(_settings(), store, StaticGate(snapshot))
    assert [m.subject_id for m in _matches(before.handle(_walk(people, range(6)), now=T0 + 100))] == ["Barack_Obama"]
    later = ActiveDeployment(deployment_id="dep-2", watchlist_ids=("wl-1",), threshold=THRESHOLD, snapshot_ts=T0 + 20)
    after = _stage(_settings(), store, StaticGate(later))
    subjects = sorted(m.subject_id for m in _matches(after.handle(_walk(people, range(6)), now=T0 + 100)))
    assert subjects == ["Barack_Obama", "Hugh_Laurie"]


def test_a_match_carries_its_deployment_threshold_and_the_reference_chip(people) -> None:
    store = _store(people)
    strict = ActiveDeployment(deployment_id="dep-9", watchlist_ids=("wl-1",), threshold=0.75, snapshot_ts=T0 + 1e6)
    gate = StaticGate(strict)
    stage = _stage(_settings(), store, gate)
    loose = _matches(_stage(_settings(), store).handle(_walk(people, range(6)), now=T0 + 100))
    matches = _matches(stage.handle(_walk(people, range(6)), now=T0 + 100))
    # A stricter threshold (distance 0.5) accepts fewer frames' votes, never more.
    assert all(m.threshold == 0.75 and m.deployment_id == "dep-9" for m in matches)
    assert len(matches) <= len(loose)
    reference = b"\xff\xd8\xff-reference-chip"
    gate.references = {("Barack_Obama", m.reference_image_id): reference for m in loose}
    again = _matches(_stage(_settings(), store, gate).handle(_walk(people, range(6)), now=T0 + 100))
    assert again and all(m.reference_chip_jpeg == reference for m in again)


# -- track templates (the default decision) ------------------------------------------------------

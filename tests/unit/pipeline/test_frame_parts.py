"""A crowd's faces in parts under the byte budget, and the frame put together again at match.

Real faces: the shared set's densest crowd photo (85 faces found) through the detect and embed
stages, and real descriptors of four people through the match stage's tracker, once whole and
once split into parts across batches.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from openlfr.messages.codec import decode, encode
from openlfr.messages.models import EmbeddedFace, Embeddings, FaceQualityRecord, Faces, Frame
from openlfr.messages.signing import MatchSigner
from openlfr.models.build import model_version
from openlfr.pipeline.deployments import ActiveDeployment, StaticGate
from openlfr.pipeline.detect import DetectStage
from openlfr.pipeline.embed import EmbedStage
from openlfr.pipeline.frame_parts import (
    BROKER_MESSAGE_MAX_BYTES,
    DEFAULT_MESSAGE_MAX_BYTES,
    FrameAssembler,
    worst_face_bytes,
)
from openlfr.pipeline.match import MatchSettings, MatchStage
from openlfr.pipeline.stage import Incoming
from openlfr.vision.images import decode_image, load_image
from openlfr.vision.scene import SceneCropper
from openlfr.watchlist.qdrant_store import QdrantStore
from openlfr.watchlist.store import WatchlistEntry, distance_to_score

CROWD = "crowd_scenes/linzaer_imgs_27.jpg"
T0 = 1_700_000_000.0


def _wire(message):
    return decode(encode(message), type(message))


@pytest.fixture(scope="module")
def crowd_frame(faces_dir: Path) -> Frame:
    image = cv2.imread(str(faces_dir / CROWD))
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return Frame(camera_id="square-1", frame_id="square-1:crowd", capture_ts=time.time(), trace_id="crowd-trace",
                 width=image.shape[1], height=image.shape[0], jpeg=jpeg.tobytes(), ingest_ts=time.time())


@pytest.fixture(scope="module")
def crowd(analyzer, model_dir: Path, crowd_frame: Frame) -> tuple[list[Faces], list[Embeddings]]:
    detect = DetectStage(analyzer, detector_model=model_version(model_dir, analyzer.detector.spec.name),
                         max_frame_age_s=None)
    embed = EmbedStage(analyzer.embedder, embedder_model=model_version(model_dir, analyzer.embedder.spec.name),
                       max_frame_age_s=None)
    detected = detect.handle([Incoming(crowd_frame, 0, 0)], now=time.time())
    faces = [_wire(o.message) for o in detected.outputs]
    embedded = embed.handle([Incoming(m, 0, i) for i, m in enumerate(faces)], now=time.time())
    assert not detected.rejected and not embedded.rejected and not embedded.dropped
    return faces, [_wire(o.message) for o in embedded.outputs]


def test_a_crowd_goes_out_in_parts_each_under_the_budget(analyzer, crowd, crowd_frame) -> None:
    faces, embeddings = crowd
    expected = analyzer.locate_many([decode_image(crowd_frame.jpeg)], keep_chips=True)[0]
    assert len(expected) >= 60  # the crowd: 85 faces on this photo
    # Whole, this frame's message would be ~2.6 MB: several parts, each under the budget, also
    # once the descriptors are in.
    assert len(faces) == len(embeddings) >= 2
    for message in (*faces, *embeddings):
        assert len(encode(message)) <= DEFAULT_MESSAGE_MAX_BYTES < BROKER_MESSAGE_MAX_BYTES
    assert [(m.part, m.parts) for m in faces] == [(i, len(faces)) for i in range(len(faces))]
    assert [(m.part, m.parts) for m in embeddings] == [(m.part, m.parts) for m in faces]
    assert {m.frame_id for m in embeddings} == {crowd_frame.frame_id}
    # Every face is there once, in order, with its chip and vector.
    indexes = [f.index for m in embeddings for f in m.faces]
    assert indexes == list(range(len(expected)))
    assert all(m.lateness_s is None for m in (*faces, *embeddings))


def test_a_crowd_with_scene_crops_goes_out_in_parts_each_still_under_the_budget(
    analyzer, model_dir: Path, crowd, crowd_frame
) -> None:
    plain_faces, _ = crowd
    scene = SceneCropper(registry=CollectorRegistry())
    detect = DetectStage(analyzer, detector_model=model_version(model_dir, analyzer.detector.spec.name),
                         max_frame_age_s=None, scene=scene, registry=CollectorRegistry())
    embed = EmbedStage(analyzer.embedder, embedder_model=model_version(model_dir, analyzer.embedder.spec.name),
                       max_frame_age_s=None)
    faces = [_wire(o.message) for o in detect.handle([Incoming(crowd_frame, 0, 0)], now=time.time()).outputs]
    embedded = embed.handle([Incoming(m, 0, i) for i, m in enumerate(faces)], now=time.time())
    embeddings = [_wire(o.message) for o in embedded.outputs]
    assert not embedded.rejected and len(embeddings) == len(faces) >= len(plain_faces)
    assert sum(len(encode(m)) for m in faces) > sum(len(encode(m)) for m in plain_faces)
    for message in (*faces, *embeddings):
        assert message.v == 2 and len(encode(message)) <= DEFAULT_MESSAGE_MAX_BYTES
    detected = [f for m in faces for f in m.faces]
    assert [f.index for f in detected] == [f.index for m in plain_faces for f in m.faces]
    assert all(f.scene_jpeg is not None and len(f.scene_jpeg) <= scene.max_bytes for f in detected)
    # Embed carries each face's scene crop on unchanged (match needs it for a face that matches).
    assert [f.scene_jpeg for m in embeddings for f in m.faces] == [f.scene_jpeg for f in detected]


def test_a_budget_smaller_than_one_face_is_refused(analyzer) -> None:
    smallest = worst_face_bytes(analyzer.embedder.chip_size)
    with pytest.raises(ValueError, match="max_message_bytes"):
        DetectStage(analyzer, detector_model="blazeface_full@test", max_message_bytes=smallest // 2)
    # With scene crops, one face takes more: a budget that fits a face without one is refused.
    with_scene = worst_face_bytes(analyzer.embedder.chip_size, scene_max_bytes=49_152)
    assert with_scene > smallest + 65_000
    with pytest.raises(ValueError, match="max_message_bytes"):
        DetectStage(analyzer, detector_model="blazeface_full@test", max_message_bytes=smallest + 8192,
                    scene=SceneCropper(max_bytes=49_152, registry=CollectorRegistry()))
    with pytest.raises(ValueError, match="max_message_bytes"):
        DetectStage(analyzer, detector_model="blazeface_full@test", max_message_bytes=BROKER_MESSAGE_MAX_BYTES + 1)


# -- the assembler ----------------------------------------------------------------------------


def _parts(crowd: tuple[list[Faces], list[Embeddings]]) -> list[Embeddings]:
    return crowd[1]


def _at(messages: list[Embeddings], first_offset: int, partition: int = 0) -> list[Incoming[Embeddings]]:
    return [Incoming(m, partition, first_offset + i) for i, m in enumerate(messages)]


def test_the_assembler_gives_the_frame_once_all_parts_are_in(crowd) -> None:
    parts = _parts(crowd)
    assembler = FrameAssembler(max_wait_s=2.0)
    state = assembler.begin()
    items = _at(parts, 100)
    results = [assembler.add(state, item) for item in items]
    assert all(not r.frames for r in results[:-1]) and len(results[-1].frames) == 1
    frame = results[-1].frames[0]
    assert not frame.partial and frame.first_offset == 100 and frame.incoming.offset == 100 + len(parts) - 1
    whole = frame.incoming.message
    assert (whole.part, whole.parts) == (0, 1)
    assert [f.index for f in whole.faces] == [f.index for m in parts for f in m.faces]
    assert len(assembler) == 0  # nothing committed yet: the batch could still fail


def test_parts_across_batches_hold_the_offset_of_the_first_part(crowd) -> None:
    parts = _parts(crowd)
    assembler = FrameAssembler(max_wait_s=2.0)
    state = assembler.begin()
    assert not assembler.add(state, _at(parts, 100)[0]).frames
    assembler.commit(state)
    assert assembler.hold() == {0: 100} and len(assembler) == 1
    state = assembler.begin()
    items = _at(parts, 100)
    assert assembler.add(state, items[0]).duplicate  # the first part again: already held
    results = [assembler.add(state, item) for item in items[1:]]
    assert len(results[-1].frames) == 1 and not results[-1].frames[0].partial
    assembler.commit(state)
    assert assembler.hold() == {} and len(assembler) == 0


def test_a_part_read_again_after_a_seek_back_is_a_duplicate(crowd) -> None:
    parts = _parts(crowd)
    assembler = FrameAssembler(max_wait_s=2.0)
    state = assembler.begin()
    for item in _at(parts, 100):
        assembler.add(state, item)
    assert assembler.add(state, _at(parts, 100)[0]).duplicate


def test_a_frame_with_lost_parts_goes_on_when_the_camera_moves_on(crowd) -> None:
    parts = _parts(crowd)
    assembler = FrameAssembler(max_wait_s=2.0)
    state = assembler.begin()
    assert not assembler.add(state, Incoming(parts[0], 0, 100)).frames  # part 1 lost (stale at embed)
    later = parts[0].model_copy(update={"frame_id": "square-1:next", "capture_ts": parts[0].capture_ts + 0.2,
                                        "part": 0, "parts": 1})
    result = assembler.add(state, Incoming(later, 0, 101))
    assert [(f.partial, f.incoming.message.frame_id) for f in result.frames] == [
        (True, "square-1:crowd"), (False, "square-1:next")]
    assert [f.index for f in result.frames[0].incoming.message.faces] == [f.index for f in parts[0].faces]


def test_a_frame_with_lost_parts_goes_on_when_event_time_moves_past_the_wait(crowd) -> None:
    parts = _parts(crowd)
    assembler = FrameAssembler(max_wait_s=2.0)
    state = assembler.begin()
    assembler.add(state, Incoming(parts[0], 0, 100))
    other = parts[0].model_copy(update={"camera_id": "square-2", "frame_id": "square-2:f1",
                                        "capture_ts": parts[0].capture_ts + 1.0, "part": 0, "parts": 1})
    assert [f.partial for f in assembler.add(state, Incoming(other, 0, 101)).frames] == [False]
    later = other.model_copy(update={"frame_id": "square-2:f2", "capture_ts": parts[0].capture_ts + 2.5})
    assert [f.partial for f in assembler.add(state, Incoming(later, 0, 102)).frames] == [True, False]


# -- the match stage: the same tracks whole or in parts --------------------------------------

PEOPLE = ("Barack_Obama", "Halle_Berry", "Jennifer_Aniston", "Hugh_Laurie")


@pytest.fixture(scope="module")
def people(analyzer, faces_dir: Path) -> dict[str, list[tuple[np.ndarray, FaceQualityRecord, tuple, bytes]]]:
    out = {}
    for person in PEOPLE:
        paths = sorted((faces_dir / "glint360k_celebs" / person).glob("*.png"))[:10]
        faces = []
        for f in analyzer.analyze_many([load_image(p) for p in paths]):
            if len(f) == 1:
                ok, png = cv2.imencode(".png", cv2.cvtColor(f.chips[0], cv2.COLOR_RGB2BGR))
                faces.append((f.embeddings[0], FaceQualityRecord(**f.quality.row(0)),
                              tuple((float(x), float(y)) for x, y in f.landmarks[0]), png.tobytes()))
        out[person] = faces
    return out


def _frames(people, n: int, *, split: bool) -> list[Embeddings]:
    """``n`` frames of the four people walking side by side; each frame in two parts if ``split``."""
    out = []
    for k in range(n):
        faces = []
        for i, person in enumerate(PEOPLE):
            vector, quality, landmarks, chip = people[person][5 + k % 4]
            x = 100 + 300 * i + 5 * k
            faces.append(EmbeddedFace(index=i, box=(x, 100, x + 110, 230), score=0.9, landmarks=landmarks,
                                      quality=quality, chip_png=chip, embedding=EmbeddedFace.pack(vector)))
        common = dict(camera_id="cam-1", frame_id=f"cam-1:f{k:03d}", capture_ts=T0 + 0.2 * k, trace_id=f"trace-{k:04d}",
                      width=1280, height=720, detector_model="blazeface_full@test", embedder_model="dlib@test")
        if split:
            out += [Embeddings(**common, faces=tuple(faces[:2]), part=0, parts=2),
                    Embeddings(**common, faces=tuple(faces[2:]), part=1, parts=2)]
        else:
            out.append(Embeddings(**common, faces=tuple(faces)))
    return out


def _match(people) -> MatchStage:
    store = QdrantStore()
    store.upsert([WatchlistEntry(subject_id=p, watchlist_id="wl-1", reference_image_id=f"{p}-{i}", vector=v)
                  for p in PEOPLE[:3] for i, (v, *_rest) in enumerate(people[p][:5])])
    gate = StaticGate(ActiveDeployment(deployment_id="dep-1", watchlist_ids=("wl-1",),
                                       threshold=distance_to_score(0.59), snapshot_ts=T0 + 1e6))
    settings = MatchSettings(min_votes=3, track_max_distance=0.7, decision="votes")
    return MatchStage(settings, store=store, gate=gate, signer=MatchSigner.ephemeral(), registry=CollectorRegistry(),
                      max_clock_skew_s=None)


def test_the_tracker_sees_a_split_frame_as_it_sees_it_whole(people) -> None:
    whole_stage, split_stage = _match(people), _match(people)
    whole = whole_stage.handle(_at(_frames(people, 5, split=False), 10), now=T0 + 100)
    parts = _at(_frames(people, 5, split=True), 10)
    # Batches that end between the parts of a frame: the first part waits, holding its offset.
    first = split_stage.handle(parts[:3], now=T0 + 100)
    assert first.hold[0] <= 12 and len(split_stage.tracker.tracks()) == 4
    rest = split_stage.handle(parts[3:], now=T0 + 100)
    got = [m.message for m in (*first.outputs, *rest.outputs)]
    want = [m.message for m in whole.outputs]
    assert [(m.subject_id, m.track_id, m.votes, m.track_frames) for m in got] == [
        (m.subject_id, m.track_id, m.votes, m.track_frames) for m in want]
    assert sorted(m.subject_id for m in got) == sorted(PEOPLE[:3])
    assert [t.frames for t in split_stage.tracker.tracks()] == [t.frames for t in whole_stage.tracker.tracks()] == [5] * 4
    # Each track starts at its first frame's first part: a replay from there sees it whole.
    assert {t.first_offset for t in split_stage.tracker.tracks()} == {10}


def test_a_batch_redelivered_after_a_failed_produce_gives_the_same_outcome(people) -> None:
    stage = _match(people)
    parts = _at(_frames(people, 4, split=True), 10)
    first = stage.handle(parts[:5], now=T0 + 100)
    again = stage.handle(parts[:5], now=T0 + 100)  # the runner seeks back: same inputs, same stage
    assert again.outputs == first.outputs and again.hold == first.hold
    stage.handle(parts[5:], now=T0 + 100)
    assert [t.frames for t in stage.tracker.tracks()] == [4] * 4

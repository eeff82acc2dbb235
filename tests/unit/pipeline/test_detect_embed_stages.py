"""detect -> embed on real photos: the split stages give analyze_many's vectors, and drop,
reject and fail the way the runners expect."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from openlfr.config import ModelSettings
from openlfr.inference.local import LocalBackend
from openlfr.messages.codec import decode, encode
from openlfr.messages.models import Embeddings, Faces, Frame
from openlfr.messages.topics import EMBEDDINGS, FACES
from openlfr.models.build import model_version
from openlfr.pipeline.detect import DetectStage, encode_chip
from openlfr.pipeline.embed import EmbedStage
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.pipeline.ingest import CameraIngest, ImageFolderSource
from openlfr.pipeline.stage import Incoming, Outgoing
from openlfr.vision.factory import build_analyzer
from openlfr.vision.images import decode_image

logger = logging.getLogger(__name__)

#: Photos of one, two and many faces, and one of none (dogs).
PHOTOS = (
    "face_recognition/examples/biden.jpg",
    "face_recognition/examples/two_people.jpg",
    "face_recognition/examples/obama-720p.jpg",
    "crowd_scenes/linzaer_imgs_1.jpg",
    "dlib/examples/faces/dogs.jpg",
)


def _incoming(messages, first_offset: int = 0) -> list[Incoming]:
    """Messages as a consumer hands them to a stage: each through the wire codec first."""
    return [
        Incoming(message=decode(encode(m), type(m)), partition=0, offset=first_offset + i)
        for i, m in enumerate(messages)
    ]


def _wire(outputs: list[Outgoing]) -> list:
    return [o.message for o in outputs]


@pytest.fixture(scope="module")
def frames(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Frame]:
    """The photos as the ingest loop publishes them (JPEG frames of camera cam-7)."""
    folder = tmp_path_factory.mktemp("photos")
    for i, rel in enumerate(PHOTOS):
        shutil.copy(faces_dir / rel, folder / f"{i:02d}{Path(rel).suffix}")
    sent: list[Outgoing] = []
    ingest = CameraIngest("cam-7", ImageFolderSource(folder, fps=5), publish=sent.append, sample_fps=5)
    ingest.run(threading.Event())
    assert len(sent) == len(PHOTOS)
    return [o.message for o in sent]


@pytest.fixture(scope="module")
def detect(analyzer, model_dir: Path) -> DetectStage:
    version = model_version(model_dir, analyzer.detector.spec.name)
    return DetectStage(analyzer, detector_model=version, max_frame_age_s=5)


@pytest.fixture(scope="module")
def embed(analyzer, model_dir: Path) -> EmbedStage:
    return EmbedStage(
        analyzer.embedder, embedder_model=model_version(model_dir, analyzer.embedder.spec.name), max_frame_age_s=5
    )


def _fresh(frame: Frame, now: float) -> Frame:
    return frame.model_copy(update={"capture_ts": now - 0.5})


def test_detect_then_embed_gives_analyze_many_vectors(analyzer, detect, embed, frames, model_dir) -> None:
    now = time.time()
    batch = _incoming([_fresh(f, now) for f in frames])

    start = time.perf_counter()
    detected = detect.handle(batch, now=now)
    detect_s = time.perf_counter() - start
    faces_msgs = _wire(detected.outputs)
    start = time.perf_counter()
    embedded = embed.handle(_incoming(faces_msgs), now=now)
    embed_s = time.perf_counter() - start
    out = [decode(encode(m), Embeddings) for m in _wire(embedded.outputs)]

    assert detected.dropped == {"no_face": 1} and not detected.rejected
    assert {o.topic for o in detected.outputs} == {FACES} and {o.key for o in detected.outputs} == {"cam-7"}
    assert not embedded.dropped and not embedded.rejected
    assert {o.topic for o in embedded.outputs} == {EMBEDDINGS}
    # The crowd photo's faces come in parts under the message budget; the others whole.
    assert [(m.frame_id, m.part, m.parts) for m in out] == [(m.frame_id, m.part, m.parts) for m in faces_msgs]
    assert [m.parts for m in out if m.part == 0] == [1, 1, 1, len(out) - 3]
    out = [m.model_copy(update={"faces": tuple(f for p in out if p.frame_id == m.frame_id for f in p.faces)})
           for m in out if m.part == 0]
    assert [m.frame_id for m in out] == [f.frame_id for f in frames[:4]]
    assert [m.trace_id for m in out] == [f.trace_id for f in frames[:4]]

    expected = analyzer.analyze_many([decode_image(f.jpeg) for f in frames])
    assert len(expected[4]) == 0
    worst = 0.0
    for message, want in zip(out, expected[:4]):
        assert message.detector_model == detect.detector_model == model_version(model_dir, "blazeface_full")
        assert message.embedder_model == model_version(model_dir, "dlib_resnet_v1")
        assert message.embedder_model.startswith("dlib_resnet_v1@") and "unbuilt" not in message.embedder_model
        assert len(message.faces) == len(want)
        for face in message.faces:
            i = face.index
            np.testing.assert_allclose(face.box, want.boxes[i], atol=1e-4)
            np.testing.assert_allclose(face.landmarks, want.landmarks[i], atol=1e-4)
            assert face.quality.score == pytest.approx(float(want.quality.score[i]), abs=1e-6)
            np.testing.assert_array_equal(decode_image(face.chip_png), want.chips[i])
            np.testing.assert_allclose(face.vector(), want.embeddings[i], atol=1e-4)
            worst = max(worst, float(np.abs(face.vector() - want.embeddings[i]).max()))
    n_faces = sum(len(m.faces) for m in out)
    chip_bytes = [len(f.chip_png) for m in out for f in m.faces]
    logger.info(
        "frames=%d faces=%d detect_s=%.3f (%.1f ms/frame) embed_s=%.3f (%.1f ms/face) "
        "jpeg_kb=%s chip_png_kb mean=%.1f max=%.1f max_abs_diff=%.2e",
        len(frames),
        n_faces,
        detect_s,
        1000 * detect_s / len(frames),
        embed_s,
        1000 * embed_s / n_faces,
        [round(len(f.jpeg) / 1024, 1) for f in frames],
        np.mean(chip_bytes) / 1024,
        max(chip_bytes) / 1024,
        worst,
    )
    assert n_faces >= 7


def test_stale_frames_are_dropped_unprocessed(detect, embed, frames) -> None:
    now = time.time()
    batch = _incoming([_fresh(frames[0], now), frames[1].model_copy(update={"capture_ts": now - 30})])

    result = detect.handle(batch, now=now)

    assert result.dropped == {"stale": 1}
    assert [m.frame_id for m in _wire(result.outputs)] == [frames[0].frame_id]
    faces = _wire(result.outputs)[0]
    later = embed.handle(_incoming([faces]), now=now + 60)
    assert later.dropped == {"stale": 1} and not later.outputs and not later.rejected


def test_no_age_limit_processes_old_frames(analyzer, frames) -> None:
    stage = DetectStage(analyzer, detector_model="blazeface_full@test", max_frame_age_s=None)
    old = frames[0].model_copy(update={"capture_ts": 1_000_000.0})
    result = stage.handle(_incoming([old]), now=time.time())
    assert len(result.outputs) == 1 and not result.dropped


def test_corrupt_jpeg_is_rejected_with_reason_and_the_batch_goes_on(detect, frames) -> None:
    now = time.time()
    good = _fresh(frames[1], now)
    corrupt = good.model_copy(update={"frame_id": "cam-7:bad", "jpeg": b"\xff\xd8\xff\xe0" + b"\x00" * 64})
    truncated = good.model_copy(update={"frame_id": "cam-7:cut", "jpeg": good.jpeg[: len(good.jpeg) // 3]})
    resized = good.model_copy(update={"frame_id": "cam-7:size", "width": good.width + 1})
    batch = _incoming([corrupt, good, truncated, resized])

    result = detect.handle(batch, now=now)

    reasons = {item.message.frame_id: reason for item, reason in result.rejected}
    assert set(reasons) == {"cam-7:bad", "cam-7:cut", "cam-7:size"}
    assert "frame cam-7:bad" in reasons["cam-7:bad"]
    assert "truncated" in reasons["cam-7:cut"]
    assert "the message says" in reasons["cam-7:size"]
    assert [m.frame_id for m in _wire(result.outputs)] == [good.frame_id]


def test_min_quality_gate_drops_low_quality_faces(analyzer, frames) -> None:
    now = time.time()
    batch = _incoming([_fresh(frames[3], now)])
    everything = DetectStage(analyzer, detector_model="m@1", min_quality=0.0).handle(batch, now=now)
    scores = [f.quality.score for m in _wire(everything.outputs) for f in m.faces]  # (in parts)
    cut = float(np.median(scores))
    gated = DetectStage(analyzer, detector_model="m@1", min_quality=cut).handle(batch, now=now)
    kept = [f for m in _wire(gated.outputs) for f in m.faces]
    assert 0 < len(kept) < len(scores) and all(f.quality.score >= cut for f in kept)
    assert [f.index for f in kept] == [i for i, s in enumerate(scores) if s >= cut]
    none = DetectStage(analyzer, detector_model="m@1", min_quality=1.0).handle(batch, now=now)
    assert none.dropped == {"low_quality": 1} and not none.outputs


def test_bad_chip_is_rejected_and_the_batch_goes_on(detect, embed, frames) -> None:
    now = time.time()
    faces_msgs: list[Faces] = _wire(detect.handle(_incoming([_fresh(f, now) for f in frames[:2]]), now=now).outputs)
    first = faces_msgs[0]
    broken = first.model_copy(
        update={
            "frame_id": "cam-7:broken",
            "faces": (first.faces[0].model_copy(update={"chip_png": b"\x89PNG\r\n\x1a\nnot a png"}),),
        }
    )
    small_chip = encode_chip(np.zeros((100, 100, 3), np.uint8))
    small = first.model_copy(
        update={"frame_id": "cam-7:small", "faces": (first.faces[0].model_copy(update={"chip_png": small_chip}),)}
    )

    result = embed.handle(_incoming([broken, *faces_msgs, small]), now=now)

    reasons = {item.message.frame_id: reason for item, reason in result.rejected}
    assert set(reasons) == {"cam-7:broken", "cam-7:small"}
    assert "expected 150x150 RGB" in reasons["cam-7:small"]
    assert [m.frame_id for m in _wire(result.outputs)] == [m.frame_id for m in faces_msgs]


def test_embed_chunks_a_large_batch(analyzer, detect, frames) -> None:
    now = time.time()
    faces_msgs = _wire(detect.handle(_incoming([_fresh(f, now) for f in frames]), now=now).outputs)
    whole = EmbedStage(analyzer.embedder, embedder_model="e@1").handle(_incoming(faces_msgs), now=now)
    chunked = EmbedStage(analyzer.embedder, embedder_model="e@1", max_batch=3).handle(_incoming(faces_msgs), now=now)
    for a, b in zip(_wire(whole.outputs), _wire(chunked.outputs)):
        for fa, fb in zip(a.faces, b.faces):
            np.testing.assert_allclose(fa.vector(), fb.vector(), atol=1e-5)


def test_png_chip_round_trip_keeps_rgb_order() -> None:
    chip = np.zeros((150, 150, 3), np.uint8)
    chip[..., 0] = 200  # red
    data = encode_chip(chip)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert bgr[0, 0].tolist() == [0, 0, 200]
    np.testing.assert_array_equal(decode_image(data), chip)


def test_backend_that_goes_away_raises_backend_unavailable(model_dir: Path, frames, tmp_path: Path) -> None:
    # A real fault: the models vanish under a running backend, so its next load fails.
    local_dir = tmp_path / "models"
    shutil.copytree(model_dir, local_dir)
    backend = LocalBackend(local_dir)
    analyzer = build_analyzer(ModelSettings(model_dir=local_dir), backend=backend, keep_chips=True)
    now = time.time()
    detect = DetectStage(analyzer, detector_model="d@1")
    embed = EmbedStage(analyzer.embedder, embedder_model="e@1")
    batch = _incoming([_fresh(frames[0], now)])
    faces_msgs = _wire(detect.handle(batch, now=now).outputs)
    backend.close()
    shutil.rmtree(local_dir)

    with pytest.raises(BackendUnavailable, match="detector backend failed"):
        detect.handle(batch, now=now)
    with pytest.raises(BackendUnavailable, match="embedder backend failed"):
        embed.handle(_incoming(faces_msgs), now=now)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"detector_model": ""}, "detector_model"),
        ({"detector_model": "d@1", "max_frame_age_s": 0}, "max_frame_age_s"),
        ({"detector_model": "d@1", "min_quality": 1.5}, "min_quality"),
        ({"detector_model": "d@1", "png_compression": 10}, "png_compression"),
    ],
)
def test_detect_stage_checks_its_arguments(analyzer, kwargs: dict, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        DetectStage(analyzer, **kwargs)


def test_stage_identity(detect, embed) -> None:
    assert (detect.name, detect.input_topic.name, detect.input_model) == ("detect", "openlfr.frames.v1", Frame)
    assert (embed.name, embed.input_topic.name, embed.input_model) == ("embed", "openlfr.faces.v1", Faces)


def test_motion_gate_in_the_stage_keeps_faces_of_a_still_repeated_frame(analyzer, frames) -> None:
    from openlfr.vision.gating import MotionGate

    now = time.time()
    plain = DetectStage(analyzer, detector_model="d@1", max_frame_age_s=None)
    # Every frame a keyframe: the gate runs every tile, so the output is the ungated one.
    every = DetectStage(analyzer, detector_model="d@1", max_frame_age_s=None, gate=MotionGate(keyframe_interval=1))
    batch = _incoming([_fresh(f, now) for f in frames[:2]])
    assert _wire(every.handle(batch, now=now).outputs) == _wire(plain.handle(batch, now=now).outputs)
    # The same frame three times (nothing moves): after the keyframe, the faces found are
    # re-found through the tiles the gate keeps running around them.
    gated = DetectStage(analyzer, detector_model="d@1", max_frame_age_s=None, gate=MotionGate(keyframe_interval=100))
    still = [_fresh(frames[0], now).model_copy(update={"frame_id": f"cam-7:still-{i}"}) for i in range(3)]
    counts = []
    for i, frame in enumerate(still):
        out = gated.handle(_incoming([frame], first_offset=i), now=now).outputs
        counts.append(len(out[0].message.faces) if out else 0)
    assert counts[0] > 0 and counts == [counts[0]] * 3


def test_pyramid_gate_in_the_stage_keeps_faces_with_fewer_crops_and_counts_them(analyzer, frames) -> None:
    from prometheus_client import CollectorRegistry

    from openlfr.vision.pyramid_gate import PyramidGate

    now = time.time()
    registry = CollectorRegistry()
    plain = DetectStage(analyzer, detector_model="d@1", max_frame_age_s=None)
    gated = DetectStage(analyzer, detector_model="d@1", max_frame_age_s=None,
                        gate=PyramidGate(keyframe_interval=100), registry=registry)
    still = [_fresh(frames[0], now).model_copy(update={"frame_id": f"cam-7:still-{i}"}) for i in range(3)]
    expected = len(plain.handle(_incoming(still[:1]), now=now).outputs[0].message.faces)
    counts = []
    for i, frame in enumerate(still):
        out = gated.handle(_incoming([frame], first_offset=i), now=now).outputs
        counts.append(len(out[0].message.faces) if out else 0)
    assert expected > 0 and counts == [expected] * 3
    run = registry.get_sample_value("openlfr_detect_crops_total", {"kind": "run"})
    ungated = registry.get_sample_value("openlfr_detect_crops_total", {"kind": "ungated"})
    tiles = len(analyzer.detector.tiles_for(frames[0].width, frames[0].height))
    assert ungated == 3 * tiles and tiles < run < 3 * tiles  # the keyframe ran them all, the rest fewer

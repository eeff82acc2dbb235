"""Detector gating: the default path is unchanged, and MotionGate picks the crops it should.

The selection tests use a backend that answers "no face" for every crop and counts the crops it
is sent, so they check which crops run, not what the model finds; the default-path test runs
the real model on real photos.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest

from openlfr.inference.base import InferenceBackend
from openlfr.models.specs import BLAZEFACE_FULL, ModelSpec
from openlfr.vision.detector import FaceDetector, Tile
from openlfr.vision.gating import MotionGate, is_whole_frame
from openlfr.vision.images import load_image

logger = logging.getLogger(__name__)

WIDTH, HEIGHT = 1920, 1080


class _CountingBackend(InferenceBackend):
    """Answers "no face" for every crop and records how many crops each call held."""

    type = "test-counting"

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def load(self, spec: ModelSpec) -> None:
        pass

    def infer(self, spec: ModelSpec, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = int(next(iter(inputs.values())).shape[0])
        self.batch_sizes.append(n)
        anchors = spec.outputs[0].shape[0]
        return {
            "regressors": np.zeros((n, anchors, 16), np.float32),
            "classificators": np.full((n, anchors, 1), -50.0, np.float32),
        }

    @property
    def crops(self) -> int:
        return sum(self.batch_sizes)


@pytest.fixture
def counting() -> _CountingBackend:
    return _CountingBackend()


@pytest.fixture
def fake_detector(counting: _CountingBackend) -> FaceDetector:
    return FaceDetector(backend=counting, spec=BLAZEFACE_FULL)


def _background(seed: int = 3) -> np.ndarray:
    """A still, textured 1080p frame (smooth enough that the motion grid sees it as is)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 200, size=(HEIGHT // 40, WIDTH // 40, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 40, axis=0), 40, axis=1)


def _with_square(frame: np.ndarray, box: tuple[int, int, int, int], value: int = 255) -> np.ndarray:
    out = frame.copy()
    x0, y0, x1, y1 = box
    out[y0:y1, x0:x1] = value
    return out


def _overlaps(tile: Tile, box: tuple[float, float, float, float], margin: float = 0.0) -> bool:
    x0, y0, x1, y1 = box
    return (
        x0 - margin < tile.x1 and x1 + margin > tile.x0 and y0 - margin < tile.y1 and y1 + margin > tile.y0
    )


def test_default_path_is_unchanged(model_dir: Path, faces_dir: Path, local_backend) -> None:
    detector = FaceDetector(backend=local_backend, spec=BLAZEFACE_FULL)
    images = [
        load_image(faces_dir / "face_recognition/examples/two_people.jpg"),
        load_image(faces_dir / "crowd_scenes/linzaer_imgs_1.jpg"),
    ]
    plain = detector.detect_many(images)
    all_on = [np.ones(len(detector.tiles_for(im.shape[1], im.shape[0])), bool) for im in images]
    for masks in ([None, None], all_on, [None, all_on[1]]):
        gated = detector.detect_many(images, tile_masks=masks)
        for a, b in zip(plain, gated):
            assert len(a) > 0
            assert a.boxes.tobytes() == b.boxes.tobytes()
            assert a.scores.tobytes() == b.scores.tobytes()
            assert a.keypoints.tobytes() == b.keypoints.tobytes()


def test_still_frame_without_faces_runs_only_the_coarse_pass(
    fake_detector: FaceDetector, counting: _CountingBackend
) -> None:
    gate = MotionGate()
    frame = _background()
    tiles = fake_detector.tiles_for(WIDTH, HEIGHT)
    assert gate.select("cam-1", frame, tiles).all()  # first frame: a keyframe
    mask = gate.select("cam-1", frame.copy(), tiles)
    coarse = np.array([is_whole_frame(t) for t in tiles])
    assert mask.tolist() == coarse.tolist()
    assert coarse.sum() == 2  # the whole frame and the close-up crop
    fake_detector.detect_many([frame], tile_masks=[mask])
    assert counting.crops == 2


@pytest.mark.parametrize(
    "box",
    [(900, 500, 980, 580), (100, 100, 160, 160), (1700, 900, 1900, 1060), (600, 300, 1300, 800)],
)
def test_moving_square_selects_the_tiles_it_overlaps(
    fake_detector: FaceDetector, counting: _CountingBackend, box: tuple[int, int, int, int]
) -> None:
    gate = MotionGate()
    frame = _background()
    tiles = fake_detector.tiles_for(WIDTH, HEIGHT)
    gate.select("cam-1", frame, tiles)
    mask = gate.select("cam-1", _with_square(frame, box), tiles)
    # Motion is found on an 8 px grid, grown by one cell: tiles within 16 px may also run.
    slack = 2 * gate.motion_scale * (gate.motion_dilate + 1)
    for tile, chosen in zip(tiles, mask):
        if is_whole_frame(tile) or _overlaps(tile, box):
            assert chosen, tile
        elif not _overlaps(tile, box, margin=slack):
            assert not chosen, tile
    fine = [not is_whole_frame(t) for t in tiles]
    assert 0 < mask[fine].sum() < sum(fine)
    fake_detector.detect_many([frame], tile_masks=[mask])
    assert counting.crops == int(mask.sum())


def test_keyframes_run_every_tile(fake_detector: FaceDetector) -> None:
    gate = MotionGate(keyframe_interval=3)
    frame = _background()
    tiles = fake_detector.tiles_for(WIDTH, HEIGHT)
    counts = [int(gate.select("cam-1", frame, tiles).sum()) for _ in range(7)]
    assert counts == [len(tiles), 2, 2, len(tiles), 2, 2, len(tiles)]


def test_a_remembered_face_keeps_its_tiles_until_forgotten(fake_detector: FaceDetector) -> None:
    gate = MotionGate(face_memory=2, face_margin=0.0)
    frame = _background()
    tiles = fake_detector.tiles_for(WIDTH, HEIGHT)
    face = (1000.0, 600.0, 1040.0, 640.0)
    gate.select("cam-1", frame, tiles)
    gate.remember("cam-1", np.array([face], np.float32))
    mask = gate.select("cam-1", frame, tiles)
    expected = [is_whole_frame(t) or _overlaps(t, face) for t in tiles]
    assert mask.tolist() == expected
    assert sum(expected) > 2
    # The face is not found again: after face_memory frames its tiles stop.
    gate.remember("cam-1", np.zeros((0, 4), np.float32))
    gate.remember("cam-1", np.zeros((0, 4), np.float32))
    assert gate.select("cam-1", frame, tiles).sum() == 2


def test_state_is_per_camera(fake_detector: FaceDetector) -> None:
    gate = MotionGate()
    still, moved = _background(3), _with_square(_background(3), (900, 500, 980, 580))
    other = _background(4)
    tiles = fake_detector.tiles_for(WIDTH, HEIGHT)
    gate.select("cam-a", still, tiles)
    # cam-b's first frame is its own keyframe, whatever cam-a has seen.
    assert gate.select("cam-b", other, tiles).all()
    assert gate.select("cam-a", moved, tiles).sum() > 2
    # cam-b is compared with its own previous frame, not with cam-a's.
    assert gate.select("cam-b", other, tiles).sum() == 2
    # Faces remembered for one camera do not open tiles of another.
    gate.remember("cam-a", np.array([[100.0, 100.0, 140.0, 140.0]], np.float32))
    assert gate.select("cam-b", other, tiles).sum() == 2
    assert gate.cameras == 2


def test_frame_size_change_is_a_keyframe(fake_detector: FaceDetector) -> None:
    gate = MotionGate()
    frame = _background()
    gate.select("cam-1", frame, fake_detector.tiles_for(WIDTH, HEIGHT))
    small = np.ascontiguousarray(frame[:720, :1280])
    tiles = fake_detector.tiles_for(1280, 720)
    assert gate.select("cam-1", small, tiles).all()


def test_camera_state_is_bounded(fake_detector: FaceDetector) -> None:
    gate = MotionGate(max_cameras=2)
    frame = _background()
    tiles = fake_detector.tiles_for(WIDTH, HEIGHT)
    for camera_id in ("a", "b", "c"):
        gate.select(camera_id, frame, tiles)
    assert gate.cameras == 2
    assert gate.select("a", frame, tiles).all()  # forgotten, so a keyframe again


@pytest.mark.parametrize(
    ("masks", "message"),
    [
        ([], "one entry per image"),
        ([np.ones(3, bool)], "expected a bool array of shape"),
        ([np.ones(23, np.uint8)], "expected a bool array of shape"),
    ],
)
def test_bad_tile_masks_raise_value_error(fake_detector: FaceDetector, masks: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fake_detector.detect_many([_background()], tile_masks=masks)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"motion_scale": 0},
        {"motion_threshold": 0},
        {"motion_threshold": 256},
        {"motion_dilate": -1},
        {"keyframe_interval": 0},
        {"face_memory": -1},
        {"face_margin": -0.1},
        {"max_cameras": 0},
    ],
)
def test_bad_gate_settings_raise_value_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        MotionGate(**kwargs)  # type: ignore[arg-type]

"""PyramidGate: fine tiles only where faces that need them were found, a crop of its own for
each small face being followed, the close-up crop only after large faces; and the detector's
extra crops.

The selection tests work on the detector's real crop plan for a 1920x1080 frame and hand the
gate face boxes directly (no model: they check which crops the gate picks). The extra-crop
tests run the real model.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from openlfr.models.specs import BLAZEFACE_FULL
from openlfr.vision.detector import CLOSE_UP_LEVEL, ROI_LEVEL, FaceDetector, Tile, box_iou, plan_tiles, roi_tile
from openlfr.vision.pyramid_gate import PyramidGate
from openlfr.vision.images import load_image

WIDTH, HEIGHT = 1920, 1080
INPUT = 192
FRAME = np.zeros((HEIGHT, WIDTH, 3), np.uint8)


@pytest.fixture(scope="module")
def tiles() -> list[Tile]:
    return plan_tiles(WIDTH, HEIGHT, input_size=INPUT, grids=((1, 1), (3, 2), (5, 3)), overlap=0.25,
                      min_tile_px=INPUT, close_up_margin=0.5)


def _levels(tiles: list[Tile], mask: np.ndarray) -> dict[int, int]:
    out: dict[int, int] = {}
    for tile, on in zip(tiles, mask):
        if on:
            out[tile.level] = out.get(tile.level, 0) + 1
    return out


def _box(cx: float, cy: float, size: float) -> np.ndarray:
    return np.array([[cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2]], np.float32)


def _holds(tile: Tile, x: float, y: float) -> bool:
    return tile.x0 <= x < tile.x1 and tile.y0 <= y < tile.y1


NONE = np.zeros((0, 4), np.float32)

#: The size rules alone: every keyframe runs everything, every followed face gets its crop on
#: every frame (these tests hand the gate a still black frame, which the still-scene rules
#: would rightly treat as unchanged; those rules have tests of their own below).
MOVING = {"still_keyframes": 0, "still_refresh": 1}


def test_the_plan_has_the_levels_the_tests_assume(tiles: list[Tile]) -> None:
    sides = {t.level: t.side for t in tiles}
    assert sorted(sides) == [CLOSE_UP_LEVEL, 0, 1, 2]
    assert sides[0] == WIDTH and 700 <= sides[1] <= 800 and 450 <= sides[2] <= 520


def test_keyframes_run_everything_and_other_frames_only_the_whole_frame(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, keyframe_interval=3)
    runs = []
    for _ in range(7):
        plan = gate.plan("cam", FRAME, tiles, input_size=INPUT)
        gate.remember("cam", NONE)
        runs.append((int(plan.mask.sum()), len(plan.extra)))
    everything = (len(tiles), 0)
    assert runs == [everything, (1, 0), (1, 0), everything, (1, 0), (1, 0), everything]


def test_a_tiny_face_at_a_keyframe_keeps_its_fine_tiles_running_for_scale_memory_intervals(tiles) -> None:
    gate = PyramidGate(**MOVING, keyframe_interval=4, scale_memory=2, track_memory=0)
    cx, cy = 1500.0, 300.0
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", _box(cx, cy, 30))  # 30 px: tiny for the whole frame and for the 3x2 level
    expected = {k for k, t in enumerate(tiles) if t.level in (1, 2) and _holds(t, cx, cy)}
    assert {t.level for k, t in enumerate(tiles) if k in expected} == {1, 2}
    on_frames = []
    for frame_no in range(1, 13):
        plan = gate.plan("cam", FRAME, tiles, input_size=INPUT)
        gate.remember("cam", NONE)
        fine = {k for k, on in enumerate(plan.mask) if on and tiles[k].level >= 1}
        if frame_no % 4:  # not a keyframe
            assert fine in (expected, set()), frame_no
            on_frames.append(fine == expected)
    # Marked at keyframe 1: kept through the intervals of keyframes 1 and 2 (frames 1-7 less the
    # keyframe 4), not after keyframe 3 found nothing.
    assert on_frames == [True, True, True, True, True, True, False, False, False]


def test_a_face_the_whole_frame_finds_marks_nothing(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, track_memory=0)
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", _box(900, 500, 300))  # 300 px of 1920: the whole-frame pass finds it
    plan = gate.plan("cam", FRAME, tiles, input_size=INPUT)
    assert _levels(tiles, plan.mask) == {0: 1} and plan.extra == ()


def test_a_small_followed_face_gets_a_crop_of_its_own_until_it_is_gone(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, track_memory=2, roi_factor=4.0)
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", NONE)
    # 150 px: small for the whole frame (< 0.12 x 1920) but not tiny (> 0.06 x 1920): no tile
    # is kept for it, it is followed with its own crop.
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", _box(1000, 600, 150))
    plan = gate.plan("cam", FRAME, tiles, input_size=INPUT)
    assert _levels(tiles, plan.mask) == {0: 1}
    (roi,) = plan.extra
    assert roi.level == ROI_LEVEL and (roi.x0, roi.y0, roi.x1, roi.y1) == (700, 300, 1300, 900)
    assert (roi.width, roi.height) == (INPUT, INPUT)
    gate.remember("cam", NONE)  # lost once: still followed from the frame before
    assert len(gate.plan("cam", FRAME, tiles, input_size=INPUT).extra) == 1
    gate.remember("cam", NONE)  # two frames without it: no longer followed
    assert gate.plan("cam", FRAME, tiles, input_size=INPUT).extra == ()


def test_the_same_face_in_two_frames_is_followed_once(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, track_memory=2)
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", _box(1000, 600, 150))
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", _box(1010, 600, 150))  # moved 10 px
    plan = gate.plan("cam", FRAME, tiles, input_size=INPUT)
    assert len(plan.extra) == 1 and plan.extra[0].x0 == 710


def test_no_own_crop_for_a_face_a_running_tile_holds_whole(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, keyframe_interval=100)
    cx, cy = 1500.0, 300.0
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", _box(cx, cy, 30))  # keeps its 3x2 and 5x3 tiles running
    plan = gate.plan("cam", FRAME, tiles, input_size=INPUT)
    assert plan.extra == ()
    gate.remember("cam", np.concatenate([_box(cx, cy, 30), _box(200, 900, 150)]))
    plan = gate.plan("cam", FRAME, tiles, input_size=INPUT)
    assert len(plan.extra) == 1 and plan.extra[0].x0 == 0  # only the face outside them


def test_past_max_rois_the_tiles_holding_the_faces_run(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, max_rois=1)
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", NONE)
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    faces = np.concatenate([_box(300, 300, 150), _box(1600, 800, 150)])
    gate.remember("cam", faces)
    plan = gate.plan("cam", FRAME, tiles, input_size=INPUT)
    assert len(plan.extra) == 1
    spilled = faces[1] if plan.extra[0].x0 < 500 else faces[0]
    fine = [t for t, on in zip(tiles, plan.mask) if on and t.level >= 1]
    assert fine and all(t.x0 < spilled[2] and t.x1 > spilled[0] and t.y0 < spilled[3] and t.y1 > spilled[1]
                        for t in fine)


def test_the_close_up_crop_runs_only_after_a_large_face(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, keyframe_interval=100, track_memory=1, scale_memory=1)
    close_up = [k for k, t in enumerate(tiles) if t.level == CLOSE_UP_LEVEL]
    gate.plan("cam", FRAME, tiles, input_size=INPUT)
    gate.remember("cam", NONE)
    assert not gate.plan("cam", FRAME, tiles, input_size=INPUT).mask[close_up].any()
    gate.remember("cam", _box(960, 540, 500))  # 500 px of 1920: large
    assert gate.plan("cam", FRAME, tiles, input_size=INPUT).mask[close_up].all()
    gate.remember("cam", NONE)
    assert not gate.plan("cam", FRAME, tiles, input_size=INPUT).mask[close_up].any()


def test_a_scene_cut_is_a_keyframe_and_noise_is_not(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, keyframe_interval=100)
    rng = np.random.default_rng(1)
    scene = rng.integers(0, 255, (HEIGHT // 40, WIDTH // 40, 3), dtype=np.uint8)
    scene = cv2.resize(scene, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)
    gate.plan("cam", scene, tiles, input_size=INPUT)
    noisy = np.clip(scene.astype(np.int16) + rng.integers(-8, 9, scene.shape), 0, 255).astype(np.uint8)
    assert gate.plan("cam", noisy, tiles, input_size=INPUT).mask.sum() == 1
    cut = 255 - scene
    assert gate.plan("cam", cut, tiles, input_size=INPUT).mask.all()
    assert gate.plan("cam", cut, tiles, input_size=INPUT).mask.sum() == 1


def test_cameras_are_kept_apart_and_a_new_size_or_forget_starts_afresh(tiles: list[Tile]) -> None:
    gate = PyramidGate(**MOVING, keyframe_interval=100, max_cameras=2)
    for cam in ("a", "b"):
        assert gate.plan(cam, FRAME, tiles, input_size=INPUT).mask.all()
    assert gate.plan("a", FRAME, tiles, input_size=INPUT).mask.sum() == 1
    small = plan_tiles(1280, 720, input_size=INPUT, grids=((1, 1), (3, 2)), overlap=0.25, min_tile_px=INPUT)
    assert gate.plan("a", np.zeros((720, 1280, 3), np.uint8), small, input_size=INPUT).mask.all()
    gate.forget("b")
    assert gate.plan("b", FRAME, tiles, input_size=INPUT).mask.all()
    gate.plan("c", FRAME, tiles, input_size=INPUT)  # a third camera: the least recent goes
    assert gate.cameras == 2
    assert gate.plan("a", np.zeros((720, 1280, 3), np.uint8), small, input_size=INPUT).mask.all()


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"keyframe_interval": 0}, "keyframe_interval=0"),
        ({"scale_memory": 0}, "scale_memory=0"),
        ({"small_face": 0.0}, "small_face=0.0"),
        ({"tiny_face": 0.2, "small_face": 0.1}, "tiny_face=0.2"),
        ({"roi_factor": 1.5}, "roi_factor=1.5"),
        ({"max_rois": -1}, "max_rois=-1"),
        ({"track_memory": -1}, "track_memory=-1"),
        ({"scene_change": 0}, "scene_change=0"),
        ({"max_cameras": 0}, "max_cameras=0"),
        ({"still_keyframes": -1}, "still_keyframes=-1"),
        ({"still_refresh": 0}, "still_refresh=0"),
        ({"still_threshold": 0}, "still_threshold=0"),
    ],
)
def test_bad_settings_are_refused_by_name(kwargs: dict, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        PyramidGate(**kwargs)


def _scene(seed: int = 3) -> np.ndarray:
    """A textured still frame (blocks of 40 px), so a change anywhere shows in the motion grid."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (HEIGHT // 40, WIDTH // 40, 3), dtype=np.uint8)
    return cv2.resize(blocks, (WIDTH, HEIGHT), interpolation=cv2.INTER_NEAREST)


def _with_patch(scene: np.ndarray, x: int, y: int, size: int = 120) -> np.ndarray:
    """The scene with a bright square at (x, y): someone who was not there."""
    out = scene.copy()
    out[y : y + size, x : x + size] = 255
    return out


def test_a_still_keyframe_runs_fine_tiles_only_where_the_frame_changed(tiles: list[Tile]) -> None:
    gate = PyramidGate(keyframe_interval=2, still_keyframes=2, still_refresh=1)
    scene = _scene()
    changed = _with_patch(scene, 1500, 250)
    frames = [scene, scene, scene, scene, changed, changed, changed, changed]
    masks = []
    for frame in frames:
        masks.append(gate.plan("cam", frame, tiles, input_size=INPUT).mask)
        gate.remember("cam", NONE)
    assert masks[0].all()  # the camera's first frame
    assert _levels(tiles, masks[2]) == {CLOSE_UP_LEVEL: 1, 0: 1}  # a keyframe, nothing changed
    fine = {k for k, on in enumerate(masks[4]) if on and tiles[k].level >= 1}
    assert fine == {k for k, t in enumerate(tiles) if t.level >= 1 and t.x1 > 1500 - 8 and t.x0 < 1620 + 8
                    and t.y1 > 250 - 8 and t.y0 < 370 + 8}  # only the tiles over the change
    assert masks[6].all()  # after two still keyframes, one that runs everything
    assert all(int(m.sum()) == 1 for m in (masks[1], masks[3], masks[5], masks[7]))


def test_an_unchanged_tiny_face_keeps_no_tiles_running_and_a_new_one_does(tiles: list[Tile]) -> None:
    gate = PyramidGate(keyframe_interval=2, still_keyframes=1, still_refresh=1, track_memory=0)
    scene = _scene()
    poster = _box(400, 300, 30)  # a face-like pattern on the wall, tiny for the whole frame
    for _ in range(5):  # keyframes 1 (the first frame: marks), 2 and 3 (unchanged: mark nothing)
        gate.plan("cam", scene, tiles, input_size=INPUT)
        gate.remember("cam", poster)
    assert int(gate.plan("cam", scene, tiles, input_size=INPUT).mask.sum()) == 1  # keyframe 1's marks ran out
    gate.remember("cam", NONE)
    walker = _with_patch(scene, 1440, 840)
    gate.plan("cam", walker, tiles, input_size=INPUT)  # keyframe 4: someone new, tiny
    gate.remember("cam", np.concatenate([poster, _box(1500, 900, 30)]))
    fine = [t for t, on in zip(tiles, gate.plan("cam", walker, tiles, input_size=INPUT).mask) if on and t.level >= 1]
    assert fine and all(_holds(t, 1500, 900) for t in fine)


def test_a_still_followed_face_is_refound_every_still_refresh_frames_and_stays_followed(tiles) -> None:
    gate = PyramidGate(keyframe_interval=100, still_refresh=3, track_memory=2)
    scene = _scene()
    gate.plan("cam", scene, tiles, input_size=INPUT)
    gate.remember("cam", _box(1000, 600, 150))  # small: followed with a crop of its own
    crops = []
    for _ in range(7):
        plan = gate.plan("cam", scene, tiles, input_size=INPUT)
        crops.append(len(plan.extra))
        gate.remember("cam", _box(1000, 600, 150) if plan.extra else NONE)  # found when looked for
    assert crops == [0, 0, 1, 0, 0, 1, 0]
    moving = PyramidGate(keyframe_interval=100, still_refresh=3, track_memory=2)
    moving.plan("cam", scene, tiles, input_size=INPUT)
    moving.remember("cam", _box(1000, 600, 150))
    for x in (1010, 1020, 1030):  # someone walking: their surroundings change every frame
        plan = moving.plan("cam", _with_patch(scene, x - 60, 540), tiles, input_size=INPUT)
        assert len(plan.extra) == 1
        moving.remember("cam", _box(x, 600, 150))


def test_frames_planned_together_are_remembered_each_with_its_own_plan(tiles: list[Tile]) -> None:
    """The detect stage plans a batch's frames of a camera before it remembers the first: a
    keyframe's faces still mark their tiles when the frame planned after it was no keyframe."""
    gate = PyramidGate(keyframe_interval=3, still_keyframes=0, still_refresh=1, track_memory=0)
    cx, cy = 1500.0, 300.0
    batch = [gate.plan("cam", FRAME, tiles, input_size=INPUT) for _ in range(2)]  # a keyframe, then not
    assert batch[0].mask.all() and int(batch[1].mask.sum()) == 1
    gate.remember("cam", _box(cx, cy, 30))  # the keyframe's faces: tiny, they need the fine tiles
    gate.remember("cam", NONE)
    fine = [t for t, on in zip(tiles, gate.plan("cam", FRAME, tiles, input_size=INPUT).mask) if on and t.level >= 1]
    assert fine and all(_holds(t, cx, cy) for t in fine)


def test_a_face_that_walked_off_is_looked_for_not_carried_as_still(tiles: list[Tile]) -> None:
    """Frames planned together, the followed face's place unchanged between them but changed
    since the frame it was seen in (the walker left): the gate looks for it again instead of
    carrying a face that is no longer there."""
    gate = PyramidGate(keyframe_interval=100, still_refresh=4, track_memory=2)
    scene = _scene()
    seen = _with_patch(scene, 940, 540)  # someone at (1000, 600)
    gate.plan("cam", seen, tiles, input_size=INPUT)
    gate.remember("cam", _box(1000, 600, 150))
    gone = _with_patch(scene, 1400, 540)  # the next frames: they walked on
    plans = [gate.plan("cam", gone, tiles, input_size=INPUT) for _ in range(3)]
    assert all(len(p.extra) == 1 and p.extra[0].x0 < 1000 < p.extra[0].x1 for p in plans)


def test_roi_tile_is_centred_clipped_and_never_below_min_side() -> None:
    centred = roi_tile((900, 500, 1000, 600), frame_width=WIDTH, frame_height=HEIGHT, input_size=INPUT,
                       factor=4.0, min_side=INPUT)
    assert (centred.x0, centred.y0, centred.x1, centred.y1) == (750, 350, 1150, 750)
    corner = roi_tile((0, 0, 100, 100), frame_width=WIDTH, frame_height=HEIGHT, input_size=INPUT,
                      factor=4.0, min_side=INPUT)
    assert (corner.x0, corner.y0, corner.x1, corner.y1) == (0, 0, 400, 400)
    tiny = roi_tile((10, 10, 20, 20), frame_width=WIDTH, frame_height=HEIGHT, input_size=INPUT,
                    factor=4.0, min_side=INPUT)
    assert tiny.side == INPUT
    huge = roi_tile((0, 0, 400, 400), frame_width=640, frame_height=360, input_size=INPUT, factor=4.0, min_side=INPUT)
    assert (huge.x0, huge.y0, huge.x1, huge.y1) == (0, 0, 640, 360)
    for bad in ((5, 5, 5, 10), (2000, 0, 2100, 100)):
        with pytest.raises(ValueError, match="empty or outside"):
            roi_tile(bad, frame_width=WIDTH, frame_height=HEIGHT, input_size=INPUT, factor=4.0, min_side=INPUT)


@pytest.fixture(scope="module")
def small_face_frame(faces_dir: Path) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A 1920x1080 frame with one face about 45 px wide pasted in: too small for the whole-frame
    pass, found by the fine levels."""
    photo = load_image(faces_dir / "face_recognition/examples/biden.jpg")
    side = 90
    small = cv2.resize(photo, (side, int(side * photo.shape[0] / photo.shape[1])), interpolation=cv2.INTER_AREA)
    frame = np.full((HEIGHT, WIDTH, 3), 110, np.uint8)
    y, x = 500, 1300
    frame[y:y + small.shape[0], x:x + small.shape[1]] = small
    return frame, (x, y, x + small.shape[1], y + small.shape[0])


def test_an_extra_crop_finds_a_face_the_running_tiles_miss(local_backend, small_face_frame) -> None:
    frame, (x0, y0, x1, y1) = small_face_frame
    detector = FaceDetector(backend=local_backend, spec=BLAZEFACE_FULL)
    tiles = detector.tiles_for(WIDTH, HEIGHT)
    full = detector.detect_many([frame])[0]
    assert len(full) == 1
    whole_only = np.array([t.level == 0 for t in tiles])
    assert len(detector.detect_many([frame], tile_masks=[whole_only])[0]) == 0
    roi = roi_tile(full.boxes[0], frame_width=WIDTH, frame_height=HEIGHT, input_size=INPUT, factor=4.0,
                   min_side=INPUT)
    found = detector.detect_many([frame], tile_masks=[whole_only], extra_tiles=[(roi,)])[0]
    assert len(found) == 1
    bx = found.boxes[0]
    assert x0 <= (bx[0] + bx[2]) / 2 <= x1 and y0 <= (bx[1] + bx[3]) / 2 <= y1


def test_the_gate_follows_a_small_face_with_a_few_crops(local_backend, small_face_frame) -> None:
    frame, _ = small_face_frame
    detector = FaceDetector(backend=local_backend, spec=BLAZEFACE_FULL)
    tiles = detector.tiles_for(WIDTH, HEIGHT)
    gate = PyramidGate(**MOVING, keyframe_interval=100)
    crops, found = [], []
    for _ in range(4):
        plan = gate.plan("cam", frame, tiles, input_size=detector.input_size)
        det = detector.detect_many([frame], tile_masks=[plan.mask], extra_tiles=[plan.extra])[0]
        gate.remember("cam", det.boxes)
        crops.append(plan.crops)
        found.append(len(det))
    assert found == [1, 1, 1, 1]
    assert crops[0] == len(tiles) and max(crops[1:]) <= 12


def test_extra_crops_must_fit_their_image(local_backend) -> None:
    detector = FaceDetector(backend=local_backend, spec=BLAZEFACE_FULL)
    other = roi_tile((0, 0, 50, 50), frame_width=640, frame_height=480, input_size=INPUT, factor=4.0, min_side=INPUT)
    with pytest.raises(ValueError, match="extra_tiles"):
        detector.detect_many([FRAME], extra_tiles=[(other,)])
    with pytest.raises(ValueError, match="one entry per image"):
        detector.detect_many([FRAME], extra_tiles=[(), ()])


class _Recording:
    """The real local backend, noting which model ran how many crops."""

    def __init__(self, inner) -> None:  # noqa: ANN001 - the LocalBackend
        self.inner = inner
        self.crops: dict[str, int] = {}

    def infer(self, spec, inputs):  # noqa: ANN001, ANN201 - InferenceBackend.infer
        batch = next(iter(inputs.values()))
        self.crops[spec.name] = self.crops.get(spec.name, 0) + int(batch.shape[0])
        return self.inner.infer(spec, inputs)


def test_crops_around_followed_faces_run_on_the_follow_model_and_find_the_face(local_backend, small_face_frame) -> None:
    """With the short-range model for followed faces, the gate cuts their crops for its 128 px
    input and only those run on it; the face is found as the full-range crop finds it."""
    from openlfr.models.specs import BLAZEFACE_SHORT

    frame, (x0, y0, x1, y1) = small_face_frame
    backend = _Recording(local_backend)
    detector = FaceDetector(backend=backend, spec=BLAZEFACE_FULL, follow_spec=BLAZEFACE_SHORT)  # type: ignore[arg-type]
    plain = FaceDetector(backend=local_backend, spec=BLAZEFACE_FULL)
    assert detector.follow_input_size == 128 and plain.follow_input_size == INPUT
    assert [s.name for s in detector.specs] == ["blazeface_full", "blazeface_short"]
    tiles = detector.tiles_for(WIDTH, HEIGHT)
    whole_only = np.array([t.level == 0 for t in tiles])
    reference = plain.detect_many([frame])[0]
    assert len(reference) == 1
    gate = PyramidGate(**MOVING, keyframe_interval=100)
    gate.plan("cam", FRAME, tiles, input_size=detector.follow_input_size)
    gate.remember("cam", _box(1000, 600, 150))  # small, not tiny: followed with a crop of its own
    (cut,) = gate.plan("cam", FRAME, tiles, input_size=detector.follow_input_size).extra
    assert max(cut.width, cut.height) == 128  # cut for the follow model's input
    roi = roi_tile(reference.boxes[0], frame_width=WIDTH, frame_height=HEIGHT, input_size=128, factor=4.0,
                   min_side=128)
    det = detector.detect_many([frame], tile_masks=[whole_only], extra_tiles=[(roi,)])[0]
    assert backend.crops == {"blazeface_full": 1, "blazeface_short": 1}
    assert len(det) == 1
    bx = det.boxes[0]
    assert x0 <= (bx[0] + bx[2]) / 2 <= x1 and y0 <= (bx[1] + bx[3]) / 2 <= y1
    assert box_iou(det.boxes[:1], reference.boxes[:1])[0, 0] > 0.7
    # A crop cut for the full-range input still runs on the full-range model.
    backend.crops.clear()
    roi = roi_tile(reference.boxes[0], frame_width=WIDTH, frame_height=HEIGHT, input_size=INPUT, factor=4.0,
                   min_side=INPUT)
    assert len(detector.detect_many([frame], tile_masks=[whole_only], extra_tiles=[(roi,)])[0]) == 1
    assert backend.crops == {"blazeface_full": 2}

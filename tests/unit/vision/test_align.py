"""Face chips cut without dlib equal ``dlib.get_face_chip`` and give dlib's own descriptors.

The reference is dlib itself: ``get_face_chip`` (150x150, padding 0.25 unless stated) on the
landmarks of ``dlib.shape_predictor`` for faces that ``dlib.get_frontal_face_detector`` finds in
photos of the shared face set, and dlib's ResNet (``face_recognition_model_v1``) on both chips.
The faces run from 37 to 666 pixels, so the chips come straight from the image or from one or
two levels of dlib's image pyramid; rescaled copies of one face reach a third level.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import cv2
import dlib
import numpy as np
import pytest

from openlfr.models import sources
from openlfr.vision import align
from openlfr.vision.align import MEAN_FACE_5, chip_transform, face_chip, face_chips
from openlfr.vision.images import load_image

logger = logging.getLogger(__name__)

#: Stated bound: mean absolute difference from dlib's chip, in grey levels, of every chip.
#: (Measured: 0 on every chip here; the transforms are solved in closed form where dlib uses an
#: SVD, so a last-bit difference may move a rare pixel by one level on another machine.)
MAX_MEAN_DIFF = 0.05
#: Largest difference of any pixel from dlib's chip, in grey levels (see above).
MAX_PIXEL_DIFF = 1
#: Euclidean distance between the ResNet descriptors of our chip and dlib's; dlib's
#: same-person threshold is 0.6.
MAX_DESCRIPTOR_DISTANCE = 0.05
#: Loose ceiling on the time per chip (measured about 0.6 ms for faces that need no pyramid).
MAX_MS_PER_CHIP = 20.0

#: (path, upsample) for dlib's detector.
PHOTOS = (
    ("face_recognition/examples/obama-720p.jpg", 0),
    ("face_recognition/examples/biden.jpg", 0),
    ("face_recognition/examples/two_people.jpg", 0),
    ("deepface/img1.jpg", 0),
    ("deepface/img12.jpg", 1),
    ("deepface/couple.jpg", 0),
    ("dlib/examples/faces/2008_002079.jpg", 1),
    ("crowd_scenes/linzaer_MNN_imgs_1.jpg", 0),
)

Face = tuple[str, np.ndarray, dlib.full_object_detection]

#: Plausible landmarks for input checks: the mean face at 40 pixels.
LANDMARKS = MEAN_FACE_5 * 40 + 5


def _points(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[shape.part(k).x, shape.part(k).y] for k in range(shape.num_parts)], dtype=np.float64)


def _pyramid_level(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> int:
    """Pyramid level dlib cuts the chip from (-1: the image itself)."""
    details = align._chip_details(landmarks, size, padding)
    rect = (details.left, details.top, details.right, details.bottom)
    level = -1
    while align._rect_area(align._rect_down(rect)) > size * size:
        level += 1
        rect = align._rect_down(rect)
    return level


def _diff(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.uint8
    return np.abs(ours.astype(np.int16) - theirs.astype(np.int16))


@pytest.fixture(scope="module")
def reference_predictor() -> dlib.shape_predictor:
    return dlib.shape_predictor(str(sources.dlib_model_path("shape_predictor_5")))


@pytest.fixture(scope="module")
def faces(faces_dir: Path, reference_predictor: dlib.shape_predictor) -> list[Face]:
    """(path, RGB image, dlib's 5 landmarks) of every face dlib finds in the photos."""
    detector = dlib.get_frontal_face_detector()
    out = []
    for path, upsample in PHOTOS:
        image = load_image(faces_dir / path)
        out.extend((path, image, reference_predictor(image, rect)) for rect in detector(image, upsample))
    return out


@pytest.fixture(scope="module")
def resnet() -> dlib.face_recognition_model_v1:
    return dlib.face_recognition_model_v1(str(sources.dlib_model_path("resnet")))


def test_chips_equal_dlib_on_real_photos(faces: list[Face]) -> None:
    means, levels = [], set()
    for path, image, shape in faces:
        landmarks = _points(shape)
        diff = _diff(face_chip(image, landmarks), dlib.get_face_chip(image, shape, size=150, padding=0.25))
        means.append(float(diff.mean()))
        levels.add(_pyramid_level(landmarks))
        assert diff.mean() < MAX_MEAN_DIFF and diff.max() <= MAX_PIXEL_DIFF, (
            f"{path}: mean {diff.mean():.4f}, max {diff.max()}, {np.count_nonzero(diff)} pixel values differ"
        )
    logger.info(
        "face chips: %d faces, mean abs difference %.4f (worst chip %.4f), pyramid levels %s",
        len(faces), float(np.mean(means)), max(means), sorted(levels),
    )
    assert len(faces) >= 15
    assert levels >= {-1, 0, 1}


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0, 4.0, 8.0])
def test_every_pyramid_level_equals_dlib(
    faces_dir: Path, reference_predictor: dlib.shape_predictor, scale: float
) -> None:
    # One face (obama-720p, box 572..758 x 98..284), cropped and resized so its chip is cut
    # from the image (scales 0.5 and 1) or from pyramid level 0, 1 or 2 (scales 2, 4, 8).
    image = load_image(faces_dir / "face_recognition/examples/obama-720p.jpg")[20:360, 500:840]
    image = np.ascontiguousarray(cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR))
    rect = dlib.rectangle(int(72 * scale), int(78 * scale), int(258 * scale), int(264 * scale))
    shape = reference_predictor(image, rect)
    landmarks = _points(shape)
    assert _pyramid_level(landmarks) == {0.5: -1, 1.0: -1, 2.0: 0, 4.0: 1, 8.0: 2}[scale]
    diff = _diff(face_chip(image, landmarks), dlib.get_face_chip(image, shape))
    assert diff.mean() < MAX_MEAN_DIFF and diff.max() <= MAX_PIXEL_DIFF


@pytest.mark.parametrize(
    "window",
    [
        pytest.param((slice(150, None), slice(None)), id="top cut"),
        pytest.param((slice(None), slice(None, 700)), id="right cut"),
        pytest.param((slice(None, 250), slice(620, None)), id="bottom-left cut"),
    ],
)
def test_chip_past_the_image_edge_equals_dlib(faces: list[Face], window: tuple[slice, slice]) -> None:
    # obama-720p's face (x 572..758, y 98..284) with the image cut through it: dlib fills the
    # chip black where its bilinear neighbourhood leaves the image.
    path, image, shape = faces[0]
    assert path.endswith("obama-720p.jpg")
    rows, cols = window
    cut = np.ascontiguousarray(image[rows, cols])
    dy, dx = rows.start or 0, cols.start or 0
    moved = dlib.full_object_detection(
        dlib.rectangle(0, 0, 1, 1), [dlib.point(p.x - dx, p.y - dy) for p in shape.parts()]
    )
    theirs = dlib.get_face_chip(cut, moved)
    ours = face_chip(cut, _points(moved))
    assert (theirs == 0).all(axis=2).mean() > 0.05  # the chip does run off the image
    diff = _diff(ours, theirs)
    assert diff.mean() < MAX_MEAN_DIFF and diff.max() <= MAX_PIXEL_DIFF


@pytest.mark.parametrize(("size", "padding"), [(112, 0.2), (200, 0.5), (150, 0.0), (64, 0.3)])
def test_other_sizes_and_paddings_equal_dlib(faces: list[Face], size: int, padding: float) -> None:
    for path, image, shape in faces[:4]:
        ours = face_chip(image, _points(shape), size=size, padding=padding)
        theirs = dlib.get_face_chip(image, shape, size=size, padding=padding)
        diff = _diff(ours, theirs)
        assert diff.mean() < MAX_MEAN_DIFF and diff.max() <= MAX_PIXEL_DIFF, path


def test_grey_image_gives_dlib_chip_in_every_channel(faces: list[Face]) -> None:
    path, image, shape = faces[1]
    grey = np.ascontiguousarray(image.mean(axis=2).astype(np.uint8))
    ours = face_chip(grey, _points(shape))
    theirs = dlib.get_face_chip(np.ascontiguousarray(np.dstack([grey, grey, grey])), shape)
    assert (ours == ours[:, :, :1]).all()
    assert _diff(ours, theirs).max() <= MAX_PIXEL_DIFF, path


def test_descriptors_of_our_chips_equal_dlib(faces: list[Face], resnet: dlib.face_recognition_model_v1) -> None:
    # Faces of four photos, including pyramid-cut ones (biden, img1).
    picked = {path: (image, shape) for path, image, shape in faces}
    distances = []
    for path in (
        "face_recognition/examples/obama-720p.jpg",
        "face_recognition/examples/biden.jpg",
        "deepface/img1.jpg",
        "dlib/examples/faces/2008_002079.jpg",
    ):
        image, shape = picked[path]
        ours = np.array(resnet.compute_face_descriptor(face_chip(image, _points(shape))))
        dlib_chip = np.array(resnet.compute_face_descriptor(dlib.get_face_chip(image, shape)))
        # dlib's own pipeline, which cuts its chip internally from the image and landmarks.
        dlib_direct = np.array(resnet.compute_face_descriptor(image, shape))
        distances += [float(np.linalg.norm(ours - dlib_chip)), float(np.linalg.norm(ours - dlib_direct))]
    logger.info("descriptor distance to dlib's: max %.6f", max(distances))
    assert max(distances) < MAX_DESCRIPTOR_DISTANCE


def test_face_chips_equal_face_chip_per_face(faces: list[Face]) -> None:
    group = [(image, shape) for p, image, shape in faces if p == "dlib/examples/faces/2008_002079.jpg"]
    image = group[0][0]
    landmarks = np.stack([_points(shape) for _, shape in group])
    chips = face_chips(image, landmarks, size=150, padding=0.25)
    assert chips.shape == (len(group), 150, 150, 3) and chips.dtype == np.uint8
    for i in range(len(group)):
        assert np.array_equal(chips[i], face_chip(image, landmarks[i]))
    assert face_chips(image, np.zeros((0, 5, 2))).shape == (0, 150, 150, 3)


def test_chip_transform_is_dlibs_chip_geometry(faces: list[Face]) -> None:
    for path, _, shape in faces[:6]:
        details = dlib.get_face_chip_details(shape, 150, 0.25)
        rect = details.rect
        # dlib maps chip corners (0, 0), (149, 0), (0, 149) to the corners tl, tr, bl of its
        # rectangle rotated by the chip angle about the rectangle's centre.
        centre = np.array([rect.left() + rect.right(), rect.top() + rect.bottom()]) / 2
        rotation = np.array(
            [[math.cos(details.angle), -math.sin(details.angle)], [math.sin(details.angle), math.cos(details.angle)]]
        )
        unrotated = np.array([[rect.left(), rect.top()], [rect.right(), rect.top()], [rect.left(), rect.bottom()]])
        corners = (unrotated - centre) @ rotation.T + centre
        matrix = chip_transform(_points(shape), 150, 0.25)
        mapped = corners @ matrix[:, :2].T + matrix[:, 2]
        assert np.allclose(mapped, [[0, 0], [149, 0], [0, 149]], atol=1e-6), path


def test_chip_transform_puts_landmarks_on_the_mean_face(faces: list[Face]) -> None:
    path, _, shape = faces[0]
    matrix = chip_transform(_points(shape))
    in_chip = _points(shape) @ matrix[:, :2].T + matrix[:, 2]
    template = (0.25 + MEAN_FACE_5) / 1.5 * 150
    # Within a few pixels: the fit's residual on one face, plus dlib's corner convention.
    assert np.abs(in_chip - template).max() < 6, path


def test_warp_affine_with_chip_transform_approximates_dlib(faces: list[Face]) -> None:
    # Without dlib's truncation (cv2 rounds) and pyramid, warpAffine is close, not equal.
    path, image, shape = faces[0]
    matrix = chip_transform(_points(shape))
    warped = cv2.warpAffine(image, matrix, (150, 150), flags=cv2.INTER_LINEAR)
    diff = _diff(warped, dlib.get_face_chip(image, shape))
    logger.info("cv2.warpAffine with chip_transform: mean abs difference %.3f", diff.mean())
    assert diff.mean() < 2, path


def test_time_per_chip(faces: list[Face]) -> None:
    _, image, shape = faces[0]
    landmarks = _points(shape)
    face_chip(image, landmarks)
    runs = []
    for _ in range(20):
        start = time.perf_counter()
        face_chip(image, landmarks)
        runs.append(time.perf_counter() - start)
    ms = 1000 * float(np.median(runs))
    logger.info("face chip: %.2f ms", ms)
    assert ms < MAX_MS_PER_CHIP


@pytest.mark.parametrize(
    ("image", "landmarks", "kwargs", "message"),
    [
        (np.zeros((50, 50, 3), np.float32), LANDMARKS, {}, "dtype uint8"),
        (np.zeros((50, 50, 4), np.uint8), LANDMARKS, {}, r"\(H, W, 3\) or \(H, W\)"),
        (np.zeros((50, 50, 3), np.uint8), np.zeros((68, 2)), {}, r"shape \(5, 2\)"),
        (np.zeros((50, 50, 3), np.uint8), np.full((5, 2), np.inf), {}, "NaN or infinite"),
        (np.zeros((50, 50, 3), np.uint8), np.full((5, 2), 20.0), {}, "one point"),
        (np.zeros((0, 50, 3), np.uint8), LANDMARKS, {}, "empty image"),
        (np.zeros((50, 50, 3), np.uint8), LANDMARKS, {"size": 1}, "at least 2"),
        (np.zeros((50, 50, 3), np.uint8), LANDMARKS, {"padding": -0.1}, "padding"),
    ],
)
def test_bad_input_is_refused(image: np.ndarray, landmarks: np.ndarray, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        face_chip(image, landmarks, **kwargs)

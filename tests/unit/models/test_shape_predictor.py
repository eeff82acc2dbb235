"""The numpy shape predictor gives dlib's own 5 landmarks, on real photos and at the edges.

The reference is dlib itself: ``dlib.shape_predictor`` on the rectangles of
``dlib.get_frontal_face_detector`` over photos of the shared face set from five source
repositories (single portraits from 63 to 666 pixels a face, group photos of up to 8 faces).
dlib returns whole pixels, so "within 0.5 px" means the same integers.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import dlib
import numpy as np
import pytest

from openlfr.models import sources
from openlfr.models.dlib_serialization import DlibReader
from openlfr.models.exceptions import DlibFormatError
from openlfr.models.shape_predictor import ShapePredictor, boxes_from_dlib_rects, dlib_rects_from_boxes
from openlfr.vision.images import load_image

logger = logging.getLogger(__name__)

#: (path, upsample): dlib's detector is run upsampled once on small images to find small faces.
PHOTOS = (
    ("face_recognition/examples/obama-720p.jpg", 0),
    ("face_recognition/examples/obama-240p.jpg", 1),
    ("face_recognition/examples/biden.jpg", 0),
    ("face_recognition/examples/two_people.jpg", 0),
    ("face_recognition/examples/alex-lacamoire.png", 1),
    ("face_recognition/examples/lin-manuel-miranda.png", 0),
    ("deepface/img1.jpg", 0),
    ("deepface/img5.jpg", 1),
    ("deepface/img12.jpg", 1),
    ("deepface/img25.jpg", 1),
    ("deepface/couple.jpg", 0),
    ("dlib/examples/faces/2008_002079.jpg", 1),
    ("dlib/examples/faces/2008_002470.jpg", 1),
    ("dlib/examples/faces/Tom_Cruise_avp_2014_4.jpg", 0),
    ("crowd_scenes/linzaer_MNN_imgs_1.jpg", 0),
    ("face_api_js/examples/images/bbt1.jpg", 0),
)

#: Loose ceiling on the time per face (measured about 0.9 ms on one core of the dev machine).
MAX_MS_PER_FACE = 20.0


def _dlib_parts(shape: dlib.full_object_detection) -> np.ndarray:
    return np.array([[shape.part(k).x, shape.part(k).y] for k in range(shape.num_parts)], dtype=np.float64)


def _rect_array(rects: list[dlib.rectangle]) -> np.ndarray:
    return np.array([[r.left(), r.top(), r.right(), r.bottom()] for r in rects], dtype=np.int64).reshape(-1, 4)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return sources.dlib_model_path("shape_predictor_5")


@pytest.fixture(scope="module")
def predictor(model_path: Path) -> ShapePredictor:
    return ShapePredictor.load(model_path)


@pytest.fixture(scope="module")
def reference(model_path: Path) -> dlib.shape_predictor:
    return dlib.shape_predictor(str(model_path))


@pytest.fixture(scope="module")
def detected(faces_dir: Path) -> list[tuple[str, np.ndarray, list[dlib.rectangle]]]:
    """(path, RGB image, dlib detector rectangles) of every photo."""
    detector = dlib.get_frontal_face_detector()
    out = []
    for path, upsample in PHOTOS:
        image = load_image(faces_dir / path)
        out.append((path, image, list(detector(image, upsample))))
    return out


def test_model_structure(predictor: ShapePredictor) -> None:
    assert predictor.num_parts == 5
    assert predictor.num_cascades == 15
    assert repr(predictor) == "ShapePredictor(parts=5, cascades=15, trees=7500)"


def test_landmarks_equal_dlib_on_real_photos(
    predictor: ShapePredictor, reference: dlib.shape_predictor, detected: list
) -> None:
    faces = exact = 0
    worst = 0.0
    for path, image, rects in detected:
        if not rects:
            continue
        ours = predictor.predict_many(image, boxes_from_dlib_rects(_rect_array(rects)))
        for i, rect in enumerate(rects):
            theirs = _dlib_parts(reference(image, rect))
            diff = float(np.abs(ours[i] - theirs).max())
            worst = max(worst, diff)
            faces += 1
            exact += diff == 0
            assert diff <= 0.5, f"{path} face {i}: ours {ours[i].tolist()} vs dlib {theirs.tolist()}"
    logger.info("landmarks: %d faces, %d identical to dlib, worst difference %.1f px", faces, exact, worst)
    assert faces >= 35, f"only {faces} faces detected in {len(detected)} photos"
    assert {len(rects) for _, _, rects in detected} >= {1, 2, 6}


def test_subpixel_positions_round_to_dlib(predictor: ShapePredictor, detected: list) -> None:
    for _, image, rects in detected[:6]:
        boxes = boxes_from_dlib_rects(_rect_array(rects))
        rounded = predictor.predict_many(image, boxes)
        fine = predictor.predict_many(image, boxes, subpixel=True)
        assert np.array_equal(np.floor(fine + 0.5), rounded)
        assert np.abs(fine - rounded).max() <= 0.5
        assert not np.array_equal(fine, rounded)


def test_grey_image_equals_dlib(predictor: ShapePredictor, reference: dlib.shape_predictor, detected: list) -> None:
    for path, image, rects in detected[:4]:
        grey = np.ascontiguousarray(image.mean(axis=2).astype(np.uint8))
        ours = predictor.predict_many(grey, boxes_from_dlib_rects(_rect_array(rects)))
        for i, rect in enumerate(rects):
            assert np.array_equal(ours[i], _dlib_parts(reference(grey, rect))), path


def test_predict_many_equals_predict(predictor: ShapePredictor, detected: list) -> None:
    path, image, rects = next(item for item in detected if len(item[2]) >= 6)
    boxes = boxes_from_dlib_rects(_rect_array(rects))
    many = predictor.predict_many(image, boxes)
    assert many.shape == (len(rects), 5, 2)
    for i, box in enumerate(boxes):
        assert np.array_equal(predictor.predict(image, box), many[i]), path


@pytest.mark.parametrize(
    "corner",
    [
        pytest.param((-60, 10), id="past the left edge"),
        pytest.param((30, -80), id="past the top edge"),
        pytest.param((None, None), id="past the bottom-right corner"),
        pytest.param((-2000, -2000), id="entirely outside"),
    ],
)
def test_box_partly_outside_the_image_equals_dlib(
    predictor: ShapePredictor, reference: dlib.shape_predictor, detected: list, corner: tuple
) -> None:
    # A detected face's rectangle moved so part of it lies off the image, where dlib reads
    # every feature pixel as 0.
    _, image, rects = detected[0]
    height, width = image.shape[:2]
    size = rects[0].width()
    left, top = corner if corner != (None, None) else (width - size // 2, height - size // 3)
    rect = dlib.rectangle(left, top, left + size - 1, top + size - 1)
    box = boxes_from_dlib_rects(_rect_array([rect]))[0]
    assert box[0] < 0 or box[1] < 0 or box[2] > width or box[3] > height
    assert np.array_equal(predictor.predict(image, box), _dlib_parts(reference(image, rect)))


def test_deep_tree_path_equals_leaf_table(predictor: ShapePredictor, detected: list) -> None:
    # Trees deeper than 16 splits take the level-by-level walk; the 5-point model's depth-4
    # trees use the lookup table. Forcing the walk on this model must change nothing.
    walking = ShapePredictor(
        initial_shape=predictor._initial.reshape(-1, 2),
        cascades=[
            dataclasses.replace(
                c,
                leaf_table=None,
                idx1=c.idx1.reshape(c.num_trees, -1)[:, : c.num_splits].reshape(-1),
                idx2=c.idx2.reshape(c.num_trees, -1)[:, : c.num_splits].reshape(-1),
                thresh=c.thresh.reshape(c.num_trees, -1)[:, : c.num_splits].reshape(-1),
                node_stride=c.num_splits,
            )
            for c in predictor._cascades
        ],
    )
    for _, image, rects in detected[:5]:
        boxes = boxes_from_dlib_rects(_rect_array(rects))
        assert np.array_equal(walking.predict_many(image, boxes), predictor.predict_many(image, boxes))


@pytest.mark.parametrize(
    ("box", "rect"),
    [
        ([10, 20, 110, 140], [10, 20, 109, 139]),
        ([10.4, 20.5, 110.5, 139.6], [10, 21, 110, 139]),
        ([-5.5, -0.6, 3.0, 2.49], [-5, -1, 2, 1]),
    ],
)
def test_box_to_dlib_rect_convention(box: list[float], rect: list[int]) -> None:
    assert dlib_rects_from_boxes(np.array([box])).tolist() == [rect]


def test_dlib_rect_round_trip() -> None:
    rects = np.array([[0, 0, 9, 9], [-4, 7, 100, 250]])
    assert np.array_equal(dlib_rects_from_boxes(boxes_from_dlib_rects(rects)), rects)


def test_time_per_face(predictor: ShapePredictor, detected: list) -> None:
    _, image, rects = detected[0]
    box = boxes_from_dlib_rects(_rect_array(rects))[0]
    predictor.predict(image, box)
    runs = []
    for _ in range(30):
        start = time.perf_counter()
        predictor.predict(image, box)
        runs.append(time.perf_counter() - start)
    ms = 1000 * float(np.median(runs))
    logger.info("shape predictor: %.2f ms per face", ms)
    assert ms < MAX_MS_PER_FACE


def test_no_boxes_gives_empty(predictor: ShapePredictor) -> None:
    image = np.zeros((20, 30, 3), dtype=np.uint8)
    assert predictor.predict_many(image, np.zeros((0, 4))).shape == (0, 5, 2)


@pytest.mark.parametrize(
    ("image", "boxes", "message"),
    [
        (np.zeros((20, 30, 3), dtype=np.float32), [[0, 0, 10, 10]], "dtype uint8"),
        (np.zeros((20, 30, 4), dtype=np.uint8), [[0, 0, 10, 10]], r"\(H, W\) or \(H, W, 3\)"),
        (np.zeros((0, 30, 3), dtype=np.uint8), [[0, 0, 10, 10]], "empty image"),
        (np.zeros((20, 30, 3), dtype=np.uint8), [0, 0, 10, 10], r"shape \(n, 4\)"),
        (np.zeros((20, 30, 3), dtype=np.uint8), [[0, 0, np.nan, 10]], "NaN"),
        (np.zeros((20, 30, 3), dtype=np.uint8), [[10, 0, 10, 10]], "x2 > x1"),
    ],
)
def test_bad_input_is_refused(
    predictor: ShapePredictor, image: np.ndarray, boxes: list, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        predictor.predict_many(image, np.asarray(boxes, dtype=np.float64))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(lambda data: data[: len(data) // 2], "unexpected end", id="truncated"),
        pytest.param(lambda data: b"\x01\x02" + data[2:], "version 2", id="version"),
        pytest.param(lambda data: data + b"\x00", "bytes left", id="trailing"),
        pytest.param(lambda data: b"", "unexpected end", id="empty"),
    ],
)
def test_corrupt_model_files_are_refused(model_path: Path, tmp_path: Path, edit, message: str) -> None:
    bad = tmp_path / "bad.dat"
    bad.write_bytes(edit(model_path.read_bytes()))
    with pytest.raises(DlibFormatError, match=message):
        ShapePredictor.load(bad)


def test_read_ints_equals_read_int_loop(model_path: Path) -> None:
    one, bulk = DlibReader.from_file(model_path), DlibReader.from_file(model_path)
    # The file opens with the version and the initial shape: 2 matrix dimensions, 10 floats
    # (a float is a mantissa and an exponent integer).
    assert bulk.read_ints(3).tolist() == [one.read_int() for _ in range(3)]
    assert bulk.read_floats(10).tolist() == [one.read_float() for _ in range(10)]
    expected = [one.read_int() for _ in range(30_000)]
    assert bulk.read_ints(30_000).tolist() == expected
    assert bulk.pos == one.pos


@pytest.mark.parametrize(
    ("data", "values"),
    [
        (b"\x00\x80\x01\x05\x81\x05", [0, 0, 5, -5]),
        (b"\x02\x34\x12\x88\xff\xff\xff\xff\xff\xff\xff\x7f", [0x1234, -(2**63 - 1)]),
    ],
)
def test_read_ints_decodes_sizes_and_signs(data: bytes, values: list[int]) -> None:
    reader = DlibReader(data)
    assert reader.read_ints(len(values)).tolist() == values
    assert reader.remaining == 0


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x05\x19", "control byte 0x19"),
        (b"\x01\x05\x03\x01", "unexpected end|control byte"),
        (b"\x08\xff\xff\xff\xff\xff\xff\xff\xff", "64 bits"),
    ],
)
def test_read_ints_refuses_bad_data(data: bytes, message: str) -> None:
    with pytest.raises(DlibFormatError, match=message):
        DlibReader(data).read_ints(2 if len(data) < 9 else 1)


def test_decode_floats_handles_reserved_exponents() -> None:
    values = DlibReader.decode_floats(np.array([3, -5, 0, 7, 1]), np.array([-1, 2, 32000, 32001, 32002]))
    assert values[:4].tolist() == [1.5, -20.0, np.inf, -np.inf]
    assert np.isnan(values[4])
    with pytest.raises(DlibFormatError, match="exponent is out of range"):
        DlibReader.decode_floats(np.array([1]), np.array([5000]))


def test_cached_parse_predicts_as_the_parse(
    model_path: Path, predictor: ShapePredictor, detected: list, tmp_path: Path
) -> None:
    first = ShapePredictor.load_cached(model_path, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("shape_predictor-*.npz")
    second = ShapePredictor.load_cached(model_path, cache_dir=tmp_path)
    for _, image, rects in detected:
        boxes = boxes_from_dlib_rects(_rect_array(rects))
        expected = predictor.predict_many(image, boxes)
        np.testing.assert_array_equal(first.predict_many(image, boxes), expected)
        np.testing.assert_array_equal(second.predict_many(image, boxes), expected)
    cached.write_bytes(b"not an npz")  # a damaged cache is parsed again, not trusted
    np.testing.assert_array_equal(
        ShapePredictor.load_cached(model_path, cache_dir=tmp_path).predict_many(image, boxes), expected
    )

"""ArcFace five-point alignment: the template, the estimated points, the fit and the warp."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from openlfr.vision.align_arcface import (
    ARCFACE_TEMPLATE_112,
    POINT_SETS,
    arcface_chips,
    estimate_points,
    fit_similarity,
    template,
    warp_chip,
)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = scale * math.cos(math.radians(angle_deg))
    b = scale * math.sin(math.radians(angle_deg))
    return np.array([[a, -b, tx], [b, a, ty]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def _smooth_image(size: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB texture (sums of wide Gaussian blobs), so interpolation errors stay small."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    img = np.zeros((size, size, 3))
    for _ in range(12):
        cx, cy = rng.uniform(0, size, 2)
        sigma = rng.uniform(0.08, 0.2) * size
        colour = rng.uniform(40, 215, 3)
        img += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))[..., None] * colour
    return np.clip(img / img.max() * 255, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("angle", "scale"), [(0.0, 1.0), (17.0, 2.3), (-35.0, 0.7), (90.0, 1.5)])
def test_fit_recovers_a_known_similarity(angle: float, scale: float) -> None:
    truth = _similarity(angle, scale, 123.4, -56.7)
    src = ARCFACE_TEMPLATE_112
    dst = _apply(truth, src)

    fitted = fit_similarity(src, dst)

    np.testing.assert_allclose(fitted, truth, atol=1e-9)


def test_fit_is_least_squares_on_noisy_points() -> None:
    truth = _similarity(12.0, 1.8, 40.0, 25.0)
    rng = np.random.default_rng(5)
    src = rng.uniform(0, 200, (60, 2))
    dst = _apply(truth, src) + rng.normal(0, 0.5, (60, 2))

    fitted = fit_similarity(src, dst)
    residual = np.linalg.norm(_apply(fitted, src) - dst, axis=1)
    truth_residual = np.linalg.norm(_apply(truth, src) - dst, axis=1)

    np.testing.assert_allclose(fitted[:, :2], truth[:, :2], atol=0.01)
    np.testing.assert_allclose(fitted[:, 2], truth[:, 2], atol=0.5)
    # Least squares: no worse on the points than the transform that generated them.
    assert np.sum(residual**2) <= np.sum(truth_residual**2)


def test_fit_never_reflects() -> None:
    src = ARCFACE_TEMPLATE_112
    mirrored = src * np.array([-1.0, 1.0])

    fitted = fit_similarity(src, mirrored)

    assert np.linalg.det(fitted[:, :2]) >= 0


@pytest.mark.parametrize(
    ("src", "dst", "message"),
    [
        (np.zeros((1, 2)), np.zeros((1, 2)), "k >= 2"),
        (np.zeros((3, 2)), np.zeros((4, 2)), "k >= 2"),
        (np.ones((3, 2)), np.zeros((3, 2)), "one place"),
        (np.array([[0.0, 0.0], [np.nan, 1.0]]), np.zeros((2, 2)), "NaN"),
    ],
)
def test_fit_refuses_bad_points(src: np.ndarray, dst: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_similarity(src, dst)


def test_chip_of_a_warped_face_recovers_the_original_view() -> None:
    chip = _smooth_image(112, seed=1)
    # Place the 112 view into a larger photo: rotated, scaled up, shifted.
    truth = _similarity(-23.0, 1.9, 180.0, 95.0)
    photo = cv2.warpAffine(chip, truth, (480, 400), flags=cv2.INTER_CUBIC)
    points = _apply(truth, ARCFACE_TEMPLATE_112)

    got = arcface_chips(photo, points[None], ARCFACE_TEMPLATE_112)[0]

    inner = (slice(8, -8), slice(8, -8))
    assert got.shape == (112, 112, 3)
    assert np.abs(got[inner].astype(int) - chip[inner].astype(int)).mean() < 2.0


def test_antialiased_shrink_keeps_the_geometry() -> None:
    chip = _smooth_image(112, seed=2)
    truth = _similarity(31.0, 6.0, 400.0, 120.0)  # the face is 6x the chip: shrunk past half
    photo = cv2.warpAffine(chip, truth, (1300, 1000), flags=cv2.INTER_CUBIC)
    m = fit_similarity(_apply(truth, ARCFACE_TEMPLATE_112), ARCFACE_TEMPLATE_112)

    smooth = warp_chip(photo, m, 112, antialias=True)
    plain = warp_chip(photo, m, 112, antialias=False)

    inner = (slice(8, -8), slice(8, -8))
    # On a smooth image both are the original view; a misplaced reduced crop would shift it.
    assert np.abs(smooth[inner].astype(int) - chip[inner].astype(int)).mean() < 2.0
    assert np.abs(plain[inner].astype(int) - chip[inner].astype(int)).mean() < 2.0


def test_antialiasing_averages_detail_finer_than_the_chip() -> None:
    # One-pixel stripes, shrunk 5x: sampling picks stripes, averaging gives mid-grey.
    stripes = np.zeros((600, 600, 3), np.uint8)
    stripes[:, ::2] = 255
    m = np.array([[0.2, 0.0, 0.0], [0.0, 0.2, 0.0]])

    smooth = warp_chip(stripes, m, 112, antialias=True)[10:-10, 10:-10]
    plain = warp_chip(stripes, m, 112, antialias=False)[10:-10, 10:-10]

    assert abs(float(smooth.mean()) - 127.5) < 8
    assert float(plain.std()) > 100  # every chip pixel lands on a stripe or a gap
    assert float(smooth.std()) < float(plain.std()) / 5


def test_template_scales_and_widens_about_the_centre() -> None:
    base = template("eyes_nose_mouth")
    np.testing.assert_allclose(base[:3], ARCFACE_TEMPLATE_112[:3])
    np.testing.assert_allclose(base[3], ARCFACE_TEMPLATE_112[3:].mean(axis=0))

    np.testing.assert_allclose(template("eyes_nose_mouth", size=224), base * 2)
    wide = template("eyes_nose_mouth", margin=2.0)
    np.testing.assert_allclose(wide - 56.0, (base - 56.0) / 2)


def _dlib_points(eye_left_centre: tuple, eye_right_centre: tuple, half: float = 6.0) -> np.ndarray:
    # dlib's order: outer/inner corner of the image-right eye, outer/inner of the image-left eye, nose.
    (lx, ly), (rx, ry) = eye_left_centre, eye_right_centre
    return np.array(
        [[[rx + half, ry], [rx - half, ry], [lx - half, ly], [lx + half, ly], [0.5 * (lx + rx), 80.0]]]
    )


def _blazeface_points() -> np.ndarray:
    return np.array([[[30.0, 40.0], [70.0, 41.0], [50.0, 60.0], [51.0, 80.0], [10.0, 45.0], [90.0, 45.0]]])


@pytest.mark.parametrize(
    ("points", "expected"),
    [
        ("eyes", [[32.0, 41.0], [72.0, 42.0]]),
        ("eyes_mouth", [[32.0, 41.0], [72.0, 42.0], [51.0, 80.0]]),
        ("eyes_nose_mouth", [[32.0, 41.0], [72.0, 42.0], [50.0, 60.0], [51.0, 80.0]]),
        ("blazeface", [[30.0, 40.0], [70.0, 41.0], [50.0, 60.0], [51.0, 80.0]]),
    ],
)
def test_estimated_points_follow_the_template_order(points: str, expected: list) -> None:
    got = estimate_points(
        points, landmarks5=_dlib_points((32.0, 41.0), (72.0, 42.0)), keypoints6=_blazeface_points()  # type: ignore[arg-type]
    )

    np.testing.assert_allclose(got[0], expected)
    assert got.shape[1] == template(points).shape[0]  # type: ignore[arg-type]


def test_every_point_set_aligns_a_frontal_face_onto_the_template() -> None:
    # A face whose points sit exactly where the template puts them, scaled by 3 and rotated.
    truth = _similarity(10.0, 3.0, 50.0, 20.0)
    t = ARCFACE_TEMPLATE_112
    eyes = _apply(truth, t[:2])
    half = 3.0 * 4.0
    direction = (eyes[1] - eyes[0]) / np.linalg.norm(eyes[1] - eyes[0])
    dlib = np.stack(
        [
            eyes[1] + half * direction,
            eyes[1] - half * direction,
            eyes[0] - half * direction,
            eyes[0] + half * direction,
            _apply(truth, t[2:3])[0] + [0, 10.0],
        ]
    )[None]
    nose, mouth = _apply(truth, t[2:3])[0], _apply(truth, t[3:].mean(axis=0, keepdims=True))[0]
    bf = np.array([[eyes[0], eyes[1], nose, mouth, [0, 0], [0, 0]]])

    for points in POINT_SETS:
        fitted = fit_similarity(estimate_points(points, landmarks5=dlib, keypoints6=bf)[0], template(points))
        np.testing.assert_allclose(fitted @ np.vstack([truth, [0, 0, 1]]), [[1, 0, 0], [0, 1, 0]], atol=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": "eyes", "keypoints6": _blazeface_points()}, "needs landmarks5"),
        ({"points": "eyes_mouth", "landmarks5": np.zeros((1, 5, 2))}, "needs keypoints6"),
        ({"points": "eyes", "landmarks5": np.zeros((1, 68, 2))}, r"expected shape \(n, 5, 2\)"),
        (
            {"points": "eyes_mouth", "landmarks5": np.zeros((2, 5, 2)), "keypoints6": np.zeros((1, 6, 2))},
            "2 faces",
        ),
        ({"points": "ears", "landmarks5": np.zeros((1, 5, 2))}, "expected one of"),
    ],
)
def test_estimate_points_refuses_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        estimate_points(**kwargs)


def test_chips_refuse_bad_shapes() -> None:
    img = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError, match="image"):
        arcface_chips(img.astype(np.float32), np.zeros((1, 4, 2)), template("blazeface"))
    with pytest.raises(ValueError, match="points"):
        arcface_chips(img, np.zeros((1, 3, 2)), template("blazeface"))
    with pytest.raises(ValueError, match="margin"):
        template("eyes", margin=0)

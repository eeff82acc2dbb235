"""112x112 face chips for ArcFace-style embedders, cut with the standard five-point template.

InsightFace-trained networks (and MobileFaceNet trained the same way) take faces warped by the
least-squares similarity transform of five detected points (eye centres, nose tip, mouth
corners) onto :data:`ARCFACE_TEMPLATE_112`. The project has no detector of exactly those five
points, so the template points it can estimate are fitted instead:

* the eye centres, as the mean of dlib's two corners of each eye (5-point predictor);
* the nose tip and the mouth centre from BlazeFace's keypoints (the template's mouth centre
  is the mean of its two mouth corners);
* BlazeFace's eye keypoints too, for a BlazeFace-only variant.

Which subset fits best was measured, not assumed (``benchmarks/compare_embedders.py``,
``docs/accuracy.md`` "A second embedder"): for the faceres descriptor the four sets were
within noise of each other, for MobileFace the eye centres with the mouth centre were clearly
best, so that is :data:`DEFAULT_POINTS`.

Large faces are first shrunk with area averaging to twice the chip's scale (``antialias``), as
dlib's chip extraction does with its pyramid, so the bilinear warp does not alias.
"""

from __future__ import annotations

import logging
from typing import Literal

import cv2
import numpy as np

logger = logging.getLogger(__name__)

ARCFACE_SIZE = 112

#: InsightFace's template for 112x112 chips, in image-x order of a frontal face: eye on the
#: image's left, eye on the image's right, nose tip, mouth corner on the image's left, mouth
#: corner on the image's right.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)

#: The template points the project can estimate, by name.
TEMPLATE_POINTS: dict[str, np.ndarray] = {
    "eye_image_left": ARCFACE_TEMPLATE_112[0],
    "eye_image_right": ARCFACE_TEMPLATE_112[1],
    "nose_tip": ARCFACE_TEMPLATE_112[2],
    "mouth_centre": ARCFACE_TEMPLATE_112[3:5].mean(axis=0),
}

PointSet = Literal["eyes_nose_mouth", "eyes_mouth", "eyes", "blazeface"]
"""Which estimated points the transform is fitted on.

* ``eyes_nose_mouth``: dlib eye centres, BlazeFace nose tip and mouth centre (4 points);
* ``eyes_mouth``: dlib eye centres, BlazeFace mouth centre (3 points);
* ``eyes``: dlib eye centres only (2 points: the similarity is determined exactly);
* ``blazeface``: BlazeFace's eyes, nose tip and mouth centre (4 points, no dlib).
"""

POINT_SETS: tuple[PointSet, ...] = ("eyes_nose_mouth", "eyes_mouth", "eyes", "blazeface")

#: The point set that measured best: dlib's eye centres and BlazeFace's mouth centre.
DEFAULT_POINTS: PointSet = "eyes_mouth"

_NAMES: dict[str, tuple[str, ...]] = {
    "eyes_nose_mouth": ("eye_image_left", "eye_image_right", "nose_tip", "mouth_centre"),
    "eyes_mouth": ("eye_image_left", "eye_image_right", "mouth_centre"),
    "eyes": ("eye_image_left", "eye_image_right"),
    "blazeface": ("eye_image_left", "eye_image_right", "nose_tip", "mouth_centre"),
}

# dlib's 5-point order (openlfr.vision.align.MEAN_FACE_5): outer and inner corner of the eye
# on the image's right, outer and inner corner of the eye on the image's left, nose bottom.
# BlazeFace's (openlfr.vision.detections.KEYPOINT_NAMES): the person's right eye (image left),
# left eye (image right), nose tip, mouth centre, two ear tragions.
_BF_EYE_IMAGE_LEFT, _BF_EYE_IMAGE_RIGHT, _BF_NOSE, _BF_MOUTH = 0, 1, 2, 3


def template(points: PointSet, *, size: int = ARCFACE_SIZE, margin: float = 1.0) -> np.ndarray:
    """The template positions of a point set in a ``size`` chip.

    Args:
        points: the point set.
        size: chip side in pixels; the 112 template is scaled by ``size / 112``.
        margin: how many times wider than the ArcFace crop the chip's view is (1.0 is the
            ArcFace crop; 1.5 shows half as much again around the same centre).

    Raises:
        ValueError: an unknown point set, a size below 8 or a margin that is not positive.
    """
    if points not in _NAMES:
        raise ValueError(f"points: expected one of {POINT_SETS}, got {points!r}")
    if size < 8:
        raise ValueError(f"size: expected at least 8, got {size}")
    if not margin > 0:
        raise ValueError(f"margin: expected > 0, got {margin}")
    base = np.stack([TEMPLATE_POINTS[n] for n in _NAMES[points]])
    centre = ARCFACE_SIZE / 2
    return ((base - centre) / margin + centre) * (size / ARCFACE_SIZE)


def estimate_points(
    points: PointSet, *, landmarks5: np.ndarray | None = None, keypoints6: np.ndarray | None = None
) -> np.ndarray:
    """The image positions of a point set's template points, per face.

    Args:
        points: which point set.
        landmarks5: ``(n, 5, 2)`` dlib 5-point landmarks (needed unless ``points`` is
            ``"blazeface"``).
        keypoints6: ``(n, 6, 2)`` BlazeFace keypoints (needed unless ``points`` is ``"eyes"``).

    Returns:
        ``(n, k, 2)`` float64, in the order of :func:`template`'s rows.

    Raises:
        ValueError: a needed array missing or of the wrong shape, or the two of different n.
    """
    if points not in _NAMES:
        raise ValueError(f"points: expected one of {POINT_SETS}, got {points!r}")
    if points == "blazeface":
        bf = _face_points("keypoints6", keypoints6, 6, points)
        return bf[:, [_BF_EYE_IMAGE_LEFT, _BF_EYE_IMAGE_RIGHT, _BF_NOSE, _BF_MOUTH]]
    dlib = _face_points("landmarks5", landmarks5, 5, points)
    eyes = np.stack([dlib[:, 2:4].mean(axis=1), dlib[:, 0:2].mean(axis=1)], axis=1)
    if points == "eyes":
        return eyes
    bf = _face_points("keypoints6", keypoints6, 6, points)
    if dlib.shape[0] != bf.shape[0]:
        raise ValueError(f"landmarks5 has {dlib.shape[0]} faces, keypoints6 {bf.shape[0]}")
    if points == "eyes_mouth":
        return np.concatenate([eyes, bf[:, [_BF_MOUTH]]], axis=1)
    return np.concatenate([eyes, bf[:, [_BF_NOSE, _BF_MOUTH]]], axis=1)


def _face_points(name: str, value: np.ndarray | None, count: int, points: str) -> np.ndarray:
    if value is None:
        raise ValueError(f"points={points!r} needs {name}")
    array = np.asarray(value, np.float64)
    if array.ndim != 3 or array.shape[1:] != (count, 2):
        raise ValueError(f"{name}: expected shape (n, {count}, 2), got {array.shape}")
    return array


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity (rotation, uniform scale, translation) taking ``src`` to ``dst``.

    Umeyama's solution without reflection, in closed form for 2-D: with both point sets
    centred, ``a = sum(d . s) / sum(|s|^2)`` and ``b = sum(s x d) / sum(|s|^2)`` give the
    matrix ``[[a, -b], [b, a]]``.

    Args:
        src, dst: ``(k, 2)`` corresponding points, k >= 2.

    Returns:
        ``(2, 3)`` float64 matrix ``M`` with ``dst ~ M @ [x, y, 1]``.

    Raises:
        ValueError: shapes differ, fewer than 2 points, non-finite values, or all ``src``
            points at one place.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise ValueError(f"src, dst: expected two (k, 2) arrays with k >= 2, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("src, dst: contain NaN or infinite values")
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    norm = float(np.sum(s * s))
    if norm <= 1e-12:
        raise ValueError("src: all points at one place; no transform is defined")
    a = float(np.sum(s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1])) / norm
    b = float(np.sum(s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0])) / norm
    rot = np.array([[a, -b], [b, a]])
    return np.concatenate([rot, (md - rot @ ms)[:, None]], axis=1)


def warp_chip(image: np.ndarray, matrix: np.ndarray, size: int, *, antialias: bool = True) -> np.ndarray:
    """Cut a ``size`` x ``size`` chip: chip pixel ``p`` shows image point ``M^-1 p``.

    Bilinear, black outside the image (as InsightFace's ``norm_crop``). With ``antialias``,
    a face shrunk by more than half is first reduced with area averaging to twice the chip's
    scale, so detail finer than the chip's pixels is averaged rather than aliased.
    """
    matrix = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if antialias and scale < 0.5:
        # Only the image region the chip sees is reduced.
        inv = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], np.float64) @ inv.T
        h, w = image.shape[:2]
        x0 = int(max(np.floor(corners[:, 0].min()) - 2, 0))
        y0 = int(max(np.floor(corners[:, 1].min()) - 2, 0))
        x1 = int(min(np.ceil(corners[:, 0].max()) + 2, w))
        y1 = int(min(np.ceil(corners[:, 1].max()) + 2, h))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = 2 * scale
            region = image[y0:y1, x0:x1]
            rw = max(int(round(region.shape[1] * factor)), 1)
            rh = max(int(round(region.shape[0] * factor)), 1)
            small = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
            fx, fy = rw / region.shape[1], rh / region.shape[0]
            # chip = M @ (offset + small_px / f): fold the crop offset and the reduction in.
            pre = np.array([[1 / fx, 0, x0 + 0.5 / fx - 0.5], [0, 1 / fy, y0 + 0.5 / fy - 0.5], [0, 0, 1]])
            matrix = matrix @ pre
            image = small
    return cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def arcface_chips(
    image: np.ndarray,
    points: np.ndarray,
    target: np.ndarray,
    *,
    size: int = ARCFACE_SIZE,
    antialias: bool = True,
) -> np.ndarray:
    """Chips of the faces whose estimated template points are ``points``.

    Args:
        image: ``(h, w, 3)`` uint8 RGB.
        points: ``(n, k, 2)`` image positions (:func:`estimate_points`).
        target: ``(k, 2)`` their chip positions (:func:`template` with the same size).
        size: chip side.
        antialias: see :func:`warp_chip`.

    Returns:
        ``(n, size, size, 3)`` uint8.

    Raises:
        ValueError: shapes that do not match or a degenerate point set.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image: expected (h, w, 3) uint8, got {image.shape} {image.dtype}")
    points = np.asarray(points, np.float64)
    target = np.asarray(target, np.float64)
    if points.ndim != 3 or points.shape[1:] != target.shape:
        raise ValueError(f"points: expected shape (n, {target.shape[0]}, 2), got {points.shape}")
    out = np.zeros((points.shape[0], size, size, 3), np.uint8)
    for i, face in enumerate(points):
        out[i] = warp_chip(image, fit_similarity(face, target), size, antialias=antialias)
    return out

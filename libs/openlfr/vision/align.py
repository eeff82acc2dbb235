"""Aligned face chips from 5 landmarks, as dlib's ``get_face_chip`` makes them, without dlib.

The dlib ResNet embedder was trained on chips cut by ``dlib::get_face_chip_details`` and
``dlib::extract_image_chip`` (``dlib/image_transforms/interpolation.h``), so the chips fed to it
are cut the same way, step by step:

* the chip's similarity transform is the least-squares fit (Umeyama) of dlib's 5-point mean
  face, padded by ``padding`` on every side and scaled to ``size``, onto the landmarks; dlib
  keeps only its angle and scale plus the image point of the chip's (size/2, size/2);
* that gives a rotated rectangle of ``size * scale - 1`` pixels a side (dlib's ``drectangle``
  counts corners inclusively), whose corners the chip's corner pixels map to;
* when that rectangle is over about twice the chip's size, dlib first shrinks a crop of the
  image around it with its ``pyramid_down<2>`` (a 5x5 [1 4 6 4 1] binomial filter, keeping
  every other pixel, truncating) until one more level would make it smaller than the chip;
* each chip pixel is a bilinear interpolation in that image, truncated to an integer, and
  black where its 2x2 neighbourhood is not inside the (cropped) image.

Positions follow dlib's float64 arithmetic; the transforms are solved in closed form where dlib
uses an SVD or a pseudo-inverse, so they can differ from dlib's in the last bits of a double,
which moves a pixel across an integer (one grey level) only rarely.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

logger = logging.getLogger(__name__)

#: dlib's 5-point mean face in the unit square (``get_face_chip_details``), in the order of the
#: 5-point predictor's parts: outer and inner corner of the eye on the image's right, outer and
#: inner corner of the eye on the image's left, bottom of the nose.
MEAN_FACE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ],
    dtype=np.float64,
)

# pyramid_down<2>'s separable kernel; a level sums 16 x 16 = 256 weighted pixels.
_BINOMIAL = np.array([1, 4, 6, 4, 1], dtype=np.float32)


@dataclass(frozen=True, slots=True)
class _ChipDetails:
    """dlib's ``chip_details`` of a face: the rotated rectangle a chip is cut from.

    Attributes:
        left, top, right, bottom: the unrotated rectangle, corners inclusive (``drectangle``).
        angle: rotation of the rectangle about its centre, radians.
        size: chip side in pixels.
    """

    left: float
    top: float
    right: float
    bottom: float
    angle: float
    size: int


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.shape != (5, 2):
        raise ValueError(f"landmarks: expected shape (5, 2), got {landmarks.shape}")
    if not np.isfinite(landmarks).all():
        raise ValueError("landmarks: contain NaN or infinite values")
    if (landmarks == landmarks[0]).all():
        raise ValueError("landmarks: all five at one point; no alignment is defined")
    return landmarks


def _check_chip_args(size: int, padding: float) -> float:
    if not isinstance(size, (int, np.integer)) or size < 2:
        raise ValueError(f"size: expected an integer of at least 2, got {size!r}")
    if not (math.isfinite(padding) and padding >= 0):
        raise ValueError(f"padding: expected a finite number >= 0, got {padding!r}")
    # dlib's Python get_face_chip takes padding as a C float; rounding the same way keeps
    # paddings such as 0.2 (not exact in binary) on dlib's geometry.
    return float(np.float32(padding))


def _chip_details(landmarks: np.ndarray, size: int, padding: float) -> _ChipDetails:
    """``get_face_chip_details`` for 5 landmarks (already checked)."""
    template = ((padding + MEAN_FACE_5) / (2 * padding + 1)) * size
    # Umeyama's least-squares similarity template -> landmarks, closed form (see module doc).
    mean_from = template.mean(axis=0)
    mean_to = landmarks.mean(axis=0)
    fc = template - mean_from
    tc = landmarks - mean_to
    sigma = float(np.sum(fc * fc))
    a = float(np.sum(tc[:, 0] * fc[:, 0] + tc[:, 1] * fc[:, 1])) / sigma
    b = float(np.sum(tc[:, 1] * fc[:, 0] - tc[:, 0] * fc[:, 1])) / sigma
    tx = mean_to[0] - (a * mean_from[0] - b * mean_from[1])
    ty = mean_to[1] - (b * mean_from[0] + a * mean_from[1])
    angle = math.atan2(b, a)
    scale = math.sqrt(a * a + b * b)
    # centered_drect(tform(point(size, size) / 2), size * scale, size * scale).
    half = size / 2.0
    cx = (a * half - b * half) + tx
    cy = (b * half + a * half) + ty
    extent = size * scale - 1
    return _ChipDetails(
        left=cx - extent / 2,
        top=cy - extent / 2,
        right=cx + extent / 2,
        bottom=cy + extent / 2,
        angle=angle,
        size=size,
    )


def _rect_down(rect: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    # pyramid_down<2>::rect_down: point_down(p) = p / 2 - (1.25, 0.75), both corners.
    left, top, right, bottom = rect
    return left / 2.0 - 1.25, top / 2.0 - 0.75, right / 2.0 - 1.25, bottom / 2.0 - 0.75


def _rect_area(rect: tuple[float, float, float, float]) -> float:
    left, top, right, bottom = rect
    if top > bottom or left > right:
        return 0.0
    return (right - left + 1) * (bottom - top + 1)


def _rotated_corners(
    rect: tuple[float, float, float, float], angle: float
) -> tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]:
    """tl, tr, bl, br of ``rect`` rotated by ``angle`` about its centre (``rotate_point``)."""
    left, top, right, bottom = rect
    cx, cy = (left + right) / 2.0, (top + bottom) / 2.0
    sin, cos = math.sin(angle), math.cos(angle)

    def rotate(x: float, y: float) -> tuple[float, float]:
        dx, dy = x - cx, y - cy
        return (cos * dx - sin * dy) + cx, (sin * dx + cos * dy) + cy

    return rotate(left, top), rotate(right, top), rotate(left, bottom), rotate(right, bottom)


def _chip_to_source(
    rect: tuple[float, float, float, float], angle: float, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Affine (m, b) taking chip pixel (c, r) to ``rect`` rotated by ``angle`` about its centre.

    dlib solves it from three corner pairs (chip tl, tr, bl -> rotated rect tl, tr, bl) with a
    pseudo-inverse; it is exactly linear, so it is written down here.
    """
    tl, tr, bl, _ = _rotated_corners(rect, angle)
    step = size - 1
    m = np.array(
        [
            [(tr[0] - tl[0]) / step, (bl[0] - tl[0]) / step],
            [(tr[1] - tl[1]) / step, (bl[1] - tl[1]) / step],
        ]
    )
    return m, np.array(tl)


def _pyramid_down(image: np.ndarray) -> np.ndarray:
    """dlib's ``pyramid_down<2>`` of a uint8 (H, W, C) image.

    Output pixel (r, c) is the [1 4 6 4 1] x [1 4 6 4 1] weighted sum of the input pixels
    (2r..2r+4, 2c..2c+4) divided by 256 and truncated; the output is ((H-3)//2, (W-3)//2), and
    empty for inputs of 8 pixels or fewer on a side.
    """
    rows, cols = image.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0, image.shape[2]), dtype=np.uint8)
    out_rows, out_cols = (rows - 3) // 2, (cols - 3) // 2
    # Integer sums below 2**24 are exact in float32, so the filter's rounding cannot differ.
    filtered = cv2.sepFilter2D(image, cv2.CV_32F, _BINOMIAL, _BINOMIAL, borderType=cv2.BORDER_REPLICATE)
    if filtered.ndim == 2:
        filtered = filtered[:, :, None]
    centres = filtered[2 : 2 + 2 * out_rows : 2, 2 : 2 + 2 * out_cols : 2]
    return np.floor(centres / 256.0).astype(np.uint8)


def _sample_bilinear(
    image: np.ndarray, window: tuple[int, int, int, int], m: np.ndarray, b: np.ndarray, size: int
) -> np.ndarray:
    """``transform_image`` with ``interpolate_bilinear`` into a (size, size, 3) uint8 chip.

    Args:
        image: C-contiguous (H, W, 3) uint8 array holding the source image.
        window: ``(top, left, rows, cols)`` of the source image within ``image`` (dlib samples a
            crop, whose edges bound the interpolation; indexing the whole array spares a copy).
        m: (2, 2) and ``b``: (2,): chip pixel (c, r) -> source (x, y) = m @ (c, r) + b.
        size: chip side.
    """
    top0, left0, src_rows, src_cols = window
    chip = np.zeros((size, size, 3), dtype=np.uint8)
    if src_rows < 2 or src_cols < 2:
        return chip
    c = np.arange(size, dtype=np.float64)[None, :]
    r = np.arange(size, dtype=np.float64)[:, None]
    # point_transform_affine: m * p + b, evaluated in dlib's order.
    x = (m[0, 0] * c + m[0, 1] * r) + b[0]
    y = (m[1, 0] * c + m[1, 1] * r) + b[1]
    left = np.floor(x)
    top = np.floor(y)
    inside = (left >= 0) & (top >= 0) & (left + 1 < src_cols) & (top + 1 < src_rows)
    all_inside = bool(inside.all())
    stride = image.shape[1]
    index = (top.astype(np.intp) + top0) * stride + (left.astype(np.intp) + left0)
    if not all_inside:
        index[~inside] = top0 * stride + left0
    pixels = image.reshape(-1, 3)

    def corner(offset: int) -> np.ndarray:
        # np.take on rows is several times faster than fancy indexing here, and planar float64
        # (3, size, size) keeps the arithmetic below on contiguous, same-type operands.
        return np.ascontiguousarray(np.take(pixels, index + offset, axis=0).transpose(2, 0, 1), dtype=np.float64)

    lr = x - left
    tb = y - top
    not_lr = 1 - lr
    # (1 - tb) * ((1 - lr) * tl + lr * tr) + tb * ((1 - lr) * bl + lr * br), dlib's grouping.
    upper = not_lr * corner(0)
    upper += lr * corner(1)
    lower = not_lr * corner(stride)
    lower += lr * corner(stride + 1)
    upper *= 1 - tb
    lower *= tb
    upper += lower
    # assign_pixel(unsigned char, double) truncates; the value cannot leave [0, 255] by more
    # than rounding, which truncation absorbs.
    chip[...] = upper.transpose(1, 2, 0)
    if not all_inside:
        chip[~inside] = 0
    return chip


def _as_rgb(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image: expected shape (H, W, 3) or (H, W), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image: empty image of shape {image.shape}")
    if image.ndim == 2:
        # Every step works per channel, so a grey image gives the grey chip in all three.
        return np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image)


def _extract(image: np.ndarray, details: _ChipDetails) -> np.ndarray:
    """``extract_image_chip(img, details, chip)`` with bilinear interpolation (dlib's default)."""
    size = details.size
    rect = (details.left, details.top, details.right, details.bottom)
    img_rows, img_cols = image.shape[:2]

    if details.angle == 0 and rect[3] - rect[1] + 1 == size and rect[2] - rect[0] + 1 == size:
        # dlib copies an unscaled, unrotated chip pixel for pixel (rect rounded to integers).
        chip = np.zeros((size, size, 3), dtype=np.uint8)
        left, top = math.floor(rect[0] + 0.5), math.floor(rect[1] + 0.5)
        y0, y1 = max(top, 0), min(top + size, img_rows)
        x0, x1 = max(left, 0), min(left + size, img_cols)
        if y0 < y1 and x0 < x1:
            chip[y0 - top : y1 - top, x0 - left : x1 - left] = image[y0:y1, x0:x1]
        return chip

    # The margin dlib crops around the chip: 2 pixels, and more for each pyramid level it needs
    # beyond the first (each halves the image, so the margin doubles plus 2).
    grow = 2.0
    down = _rect_down(rect)
    while _rect_area(down) > size * size:
        down = _rect_down(down)
        grow = grow * 2 + 2
    corners = _rotated_corners(rect, details.angle)
    xs = [p[0] for p in corners]
    ys = [p[1] for p in corners]
    # grow_rect(bounding box of the rotated corners).intersect(image), then to an integer
    # rectangle by rounding (drectangle -> rectangle).
    box = (
        max(min(xs) - grow, 0.0),
        max(min(ys) - grow, 0.0),
        min(max(xs) + grow, float(img_cols - 1)),
        min(max(ys) + grow, float(img_rows - 1)),
    )
    if box[0] > box[2] or box[1] > box[3]:
        return np.zeros((size, size, 3), dtype=np.uint8)
    bx0, by0, bx1, by1 = (math.floor(v + 0.5) for v in box)

    local = (rect[0] - bx0, rect[1] - by0, rect[2] - bx0, rect[3] - by0)
    level = -1
    while _rect_area(_rect_down(local)) > size * size:
        level += 1
        local = _rect_down(local)
    m, b = _chip_to_source(local, details.angle, size)
    if level < 0:
        return _sample_bilinear(image, (by0, bx0, by1 - by0 + 1, bx1 - bx0 + 1), m, b, size)
    source = image[by0 : by1 + 1, bx0 : bx1 + 1]
    for _ in range(level + 1):
        source = _pyramid_down(source)
    return _sample_bilinear(source, (0, 0, source.shape[0], source.shape[1]), m, b, size)


def chip_transform(landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The affine map from image pixels to chip pixels of ``face_chip`` (dlib's chip geometry).

    For ``cv2.warpAffine(image, M, (size, size))``, or to map points into the chip. It is the
    geometry of dlib's chip without its pyramid, which changes which pixels are sampled (and
    shifts the sampling by a fraction of a source pixel), not where the face lands.

    Args:
        landmarks: (5, 2) landmarks of dlib's 5-point model, ``(x, y)`` pixels.
        size: chip side in pixels.
        padding: margin around dlib's mean face, as a fraction of its extent, on each side.

    Returns:
        (2, 3) float64 ``M`` with ``chip_xy = M[:, :2] @ image_xy + M[:, 2]``.
    """
    padding = _check_chip_args(size, padding)
    details = _chip_details(_check_landmarks(landmarks), size, padding)
    m, b = _chip_to_source((details.left, details.top, details.right, details.bottom), details.angle, size)
    inverse = np.linalg.inv(m)
    return np.concatenate([inverse, (-inverse @ b)[:, None]], axis=1)


def face_chip(image: np.ndarray, landmarks: np.ndarray, *, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The aligned chip ``dlib.get_face_chip(image, shape, size, padding)`` cuts.

    Args:
        image: (H, W, 3) RGB or (H, W) grey uint8 image.
        landmarks: (5, 2) landmarks of dlib's 5-point model, ``(x, y)`` pixels; dlib passes
            whole pixels, any float is taken as given.
        size: chip side in pixels (150 for dlib's ResNet).
        padding: margin around dlib's mean face, as a fraction of its extent, on each side
            (0.25 for dlib's ResNet).

    Returns:
        (size, size, 3) uint8 RGB chip; black where it extends past the image.
    """
    padding = _check_chip_args(size, padding)
    rgb = _as_rgb(image)
    return _extract(rgb, _chip_details(_check_landmarks(landmarks), size, padding))


def face_chips(image: np.ndarray, landmarks: np.ndarray, *, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """:func:`face_chip` of each face of one image.

    Each chip is cut on its own, as ``dlib.get_face_chip`` does for one face. (dlib's batched
    ``get_face_chips`` shares one pyramid among the faces of an image, whose crop depends on
    all of them, so its chips can differ from these by a grey level here and there.)

    Args:
        image: (H, W, 3) RGB or (H, W) grey uint8 image.
        landmarks: (n, 5, 2) landmarks, ``(x, y)`` pixels.
        size: chip side in pixels.
        padding: margin around dlib's mean face, as a fraction of its extent, on each side.

    Returns:
        (n, size, size, 3) uint8 RGB chips.
    """
    padding = _check_chip_args(size, padding)
    rgb = _as_rgb(image)
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
        raise ValueError(f"landmarks: expected shape (n, 5, 2), got {landmarks.shape}")
    chips = np.zeros((landmarks.shape[0], size, size, 3), dtype=np.uint8)
    for i, points in enumerate(landmarks):
        chips[i] = _extract(rgb, _chip_details(_check_landmarks(points), size, padding))
    return chips

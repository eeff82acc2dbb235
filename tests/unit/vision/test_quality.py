"""Quality figures move the right way: size, sharpness and head turn."""

from __future__ import annotations

import cv2
import numpy as np

from openlfr.vision.quality import assess

# A frontal 5-point shape (dlib order: eye on image right outer/inner, other eye outer/inner, nose).
FRONTAL = np.array([[130, 100], [112, 101], [70, 100], [88, 101], [100, 135]], np.float32)


def _chip(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)


def _assess(landmarks: np.ndarray, chips: np.ndarray, score: float = 0.9):
    n = landmarks.shape[0]
    boxes = np.tile(np.array([[50, 60, 150, 170]], np.float32), (n, 1))
    return assess(boxes=boxes, scores=np.full((n,), score, np.float32), landmarks=landmarks, chips=chips)


def test_frontal_face_has_small_yaw_and_roll() -> None:
    q = _assess(FRONTAL[None], _chip()[None])
    assert abs(q.yaw[0]) < 0.05 and abs(q.roll_deg[0]) < 2
    assert q.inter_eye_px[0] == np.float32(np.hypot(121 - 79, 0.0))


def test_turned_face_scores_lower_than_frontal() -> None:
    turned = FRONTAL.copy()
    turned[4, 0] += 18  # nose towards one eye: the head is turned
    q = _assess(np.stack([FRONTAL, turned]), np.stack([_chip(), _chip()]))
    assert q.yaw[1] > 0.5 and q.score[1] < q.score[0]


def test_blurred_chip_is_less_sharp_and_scores_lower() -> None:
    sharp = _chip()
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3)
    q = _assess(np.stack([FRONTAL, FRONTAL]), np.stack([sharp, blurred]))
    assert q.blur[1] < q.blur[0] / 10 and q.score[1] < q.score[0]


def test_small_face_scores_lower() -> None:
    small = (FRONTAL - 100) * 0.25 + 100
    q = _assess(np.stack([FRONTAL, small]), np.stack([_chip(), _chip()]))
    assert q.inter_eye_px[1] < 12 and q.score[1] < q.score[0]


def test_tilted_face_reports_roll() -> None:
    theta = np.radians(30)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]], np.float32)
    tilted = (FRONTAL - 100) @ rot.T + 100
    q = _assess(tilted[None], _chip()[None])
    assert abs(q.roll_deg[0] - 30) < 1.5

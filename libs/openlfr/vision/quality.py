"""Per-face quality from landmarks, the aligned chip and the detector score.

Later stages gate on these (a face too small, blurred or turned away is not worth matching)
and use ``score`` to pick the best face of a track. Landmark order is dlib's 5-point model:
points 0-1 the corners of the eye on the image's right, 2-3 the other eye, 4 the nose base.
"""

from __future__ import annotations

import cv2
import numpy as np

from openlfr.vision.faces import FaceQuality

#: Inter-eye distance (pixels) from which size no longer limits the quality score.
FULL_SIZE_INTER_EYE_PX = 40.0
#: Laplacian variance at which the sharpness term reaches one half.
HALF_SHARPNESS_BLUR = 100.0


def eye_centres(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 2) centres of the eye on the image's left and on its right."""
    right = landmarks[:, 0:2].mean(axis=1)
    left = landmarks[:, 2:4].mean(axis=1)
    return left, right


def laplacian_variance(chips: np.ndarray) -> np.ndarray:
    """(n,) variance of the Laplacian of each grey chip: a standard focus measure."""
    out = np.empty((chips.shape[0],), np.float32)
    for i, chip in enumerate(chips):
        grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY)
        out[i] = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    return out


def assess(*, boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, chips: np.ndarray) -> FaceQuality:
    """Compute the quality record of ``n`` faces.

    Args:
        boxes: (n, 4) detector boxes [x1, y1, x2, y2].
        scores: (n,) detector scores in 0..1.
        landmarks: (n, 5, 2) landmarks in pixels.
        chips: (n, s, s, 3) aligned RGB chips.

    Returns:
        The faces' quality; ``score`` = detector score x size term x pose term x sharpness
        term, each in 0..1 (size saturates at ``FULL_SIZE_INTER_EYE_PX``, pose is
        ``1 - |yaw|``, sharpness is ``0.5 + 0.5 * blur / (blur + HALF_SHARPNESS_BLUR)``).
    """
    n = boxes.shape[0]
    if n == 0:
        return FaceQuality.empty()
    left, right = eye_centres(landmarks)
    eye_vec = right - left
    inter_eye = np.linalg.norm(eye_vec, axis=1)
    safe = np.maximum(inter_eye, 1e-6)
    direction = eye_vec / safe[:, None]
    # The nose base sits on the perpendicular bisector of the eyes in a frontal face; its offset
    # along the eye line, relative to half the eye distance, tracks the head's turn.
    offset = ((landmarks[:, 4] - (left + right) / 2) * direction).sum(axis=1)
    yaw = np.clip(offset / (safe / 2), -1.0, 1.0)
    roll = np.degrees(np.arctan2(eye_vec[:, 1], eye_vec[:, 0]))
    blur = laplacian_variance(chips)
    size_term = np.clip(inter_eye / FULL_SIZE_INTER_EYE_PX, 0.0, 1.0)
    pose_term = 1.0 - np.abs(yaw)
    sharp_term = 0.5 + 0.5 * blur / (blur + HALF_SHARPNESS_BLUR)
    score = np.clip(scores, 0.0, 1.0) * size_term * pose_term * sharp_term
    return FaceQuality(
        face_px=boxes[:, 2] - boxes[:, 0],
        inter_eye_px=inter_eye,
        blur=blur,
        yaw=yaw,
        roll_deg=roll,
        detector_score=scores,
        score=score,
    )

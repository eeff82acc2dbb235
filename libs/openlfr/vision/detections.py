"""The detector's output for one image: parallel arrays of boxes, scores and keypoints."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: BlazeFace's keypoints in the model's order. Sides are the person's: in an unmirrored photo
#: of a frontal face ``right_eye`` (index 0) lies on the image's left.
KEYPOINT_NAMES: tuple[str, ...] = (
    "right_eye",
    "left_eye",
    "nose_tip",
    "mouth_centre",
    "right_ear_tragion",
    "left_ear_tragion",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)


def _as_float_array(name: str, value: object, expected: Sequence[int | None]) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"Detections.{name}: expected a numeric array, got dtype {array.dtype}")
    shown = "(" + ", ".join("n" if d is None else str(d) for d in expected) + ")"
    if array.ndim != len(expected) or any(
        d is not None and a != d for a, d in zip(array.shape, expected, strict=True)
    ):
        raise ValueError(f"Detections.{name}: expected shape {shown}, got {array.shape}")
    out = np.array(array, dtype=np.float32, copy=True)
    # Frozen means the arrays too: a caller mutating boxes in place would corrupt other holders.
    out.setflags(write=False)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Detections:
    """Faces found in one image, in that image's pixel coordinates.

    Attributes:
        boxes: ``(n, 4)`` float32 ``[x1, y1, x2, y2]``, clipped to the image.
        scores: ``(n,)`` float32 confidence in 0..1.
        keypoints: ``(n, 6, 2)`` float32 ``(x, y)`` in :data:`KEYPOINT_NAMES` order; not
            clipped, so a keypoint of a face cut by the image border may lie outside it.
    """

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray

    def __post_init__(self) -> None:
        boxes = _as_float_array("boxes", self.boxes, (None, 4))
        n = boxes.shape[0]
        scores = _as_float_array("scores", self.scores, (n,))
        keypoints = _as_float_array("keypoints", self.keypoints, (n, NUM_KEYPOINTS, 2))
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "keypoints", keypoints)

    @classmethod
    def empty(cls) -> Detections:
        """No faces."""
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            keypoints=np.zeros((0, NUM_KEYPOINTS, 2), np.float32),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def select(self, index: np.ndarray | Sequence[int] | slice) -> Detections:
        """A new value with the faces chosen by a boolean mask, indices or a slice."""
        if isinstance(index, slice):
            idx: np.ndarray | slice = index
        else:
            idx = np.asarray(index)
            if idx.dtype == bool and idx.shape != (len(self),):
                raise ValueError(f"Detections.select: mask shape {idx.shape}, expected ({len(self)},)")
            if idx.dtype != bool:
                idx = idx.astype(np.intp).reshape(-1)
        return Detections(boxes=self.boxes[idx], scores=self.scores[idx], keypoints=self.keypoints[idx])

    @property
    def widths(self) -> np.ndarray:
        """``(n,)`` box widths in pixels."""
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        """``(n,)`` box heights in pixels."""
        return self.boxes[:, 3] - self.boxes[:, 1]

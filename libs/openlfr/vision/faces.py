"""The one value type faces travel as inside a process: parallel arrays, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

EMBEDDING_DIM = 128


def _check(name: str, array: np.ndarray, shape: tuple[int | None, ...]) -> np.ndarray:
    """Return ``array`` as float32 after checking its shape (None = any size)."""
    array = np.asarray(array, dtype=np.float32)
    ok = array.ndim == len(shape) and all(s is None or s == a for s, a in zip(shape, array.shape))
    if not ok:
        want = "(" + ", ".join("n" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"Faces.{name}: expected shape {want}, got {array.shape}")
    return array


@dataclass(frozen=True, slots=True)
class FaceQuality:
    """Per-face quality figures (each an (n,) array) used to gate faces and pick a track's best.

    Attributes:
        face_px: detector box width in pixels.
        inter_eye_px: distance between the eye centres from the 5 landmarks, in pixels.
        blur: variance of the Laplacian of the grey aligned chip (higher is sharper).
        yaw: signed left/right turn estimate from the landmarks, -1..1 (0 frontal).
        roll_deg: in-plane rotation of the eye line in degrees.
        detector_score: the detector's confidence.
        score: combined quality in 0..1.
    """

    face_px: np.ndarray
    inter_eye_px: np.ndarray
    blur: np.ndarray
    yaw: np.ndarray
    roll_deg: np.ndarray
    detector_score: np.ndarray
    score: np.ndarray

    def __post_init__(self) -> None:
        n = None
        for name in ("face_px", "inter_eye_px", "blur", "yaw", "roll_deg", "detector_score", "score"):
            value = _check(name, getattr(self, name), (n,))
            n = value.shape[0] if n is None else n
            object.__setattr__(self, name, value)

    @classmethod
    def empty(cls) -> FaceQuality:
        """No faces."""
        z = np.zeros((0,), np.float32)
        return cls(z, z, z, z, z, z, z)

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def row(self, i: int) -> dict[str, float]:
        """Face ``i``'s figures as plain floats."""
        return {
            name: float(getattr(self, name)[i])
            for name in ("face_px", "inter_eye_px", "blur", "yaw", "roll_deg", "detector_score", "score")
        }

    def take(self, index: np.ndarray) -> FaceQuality:
        """The faces selected by ``index``."""
        return FaceQuality(**{name: getattr(self, name)[index] for name in self.__slots__})


@dataclass(frozen=True, slots=True)
class Faces:
    """The faces of one image.

    Attributes:
        boxes: (n, 4) [x1, y1, x2, y2] in pixels.
        scores: (n,) detector confidence.
        landmarks: (n, 5, 2) dlib 5-point landmarks in pixels (two corners per eye, nose base).
        quality: per-face quality.
        embeddings: (n, d) descriptors (d: the embedder's, 128 for the default), or None before embedding.
        chips: (n, 150, 150, 3) aligned RGB chips, or None when not kept.
    """

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    quality: FaceQuality
    embeddings: np.ndarray | None = None
    chips: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        boxes = _check("boxes", self.boxes, (None, 4))
        n = boxes.shape[0]
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", _check("scores", self.scores, (n,)))
        object.__setattr__(self, "landmarks", _check("landmarks", self.landmarks, (n, 5, 2)))
        if len(self.quality) != n:
            raise ValueError(f"Faces.quality: expected {n} rows, got {len(self.quality)}")
        if self.embeddings is not None:
            object.__setattr__(self, "embeddings", _check("embeddings", self.embeddings, (n, None)))
        if self.chips is not None:
            chips = np.asarray(self.chips)
            if chips.dtype != np.uint8 or chips.ndim != 4 or chips.shape[0] != n or chips.shape[3] != 3:
                raise ValueError(f"Faces.chips: expected uint8 shape ({n}, s, s, 3), got {chips.dtype} {chips.shape}")

    @classmethod
    def empty(cls) -> Faces:
        """An image with no faces."""
        return cls(
            boxes=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            landmarks=np.zeros((0, 5, 2), np.float32),
            quality=FaceQuality.empty(),
            embeddings=np.zeros((0, EMBEDDING_DIM), np.float32),
        )

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def with_embeddings(self, embeddings: np.ndarray) -> Faces:
        """A copy with descriptors attached."""
        return replace(self, embeddings=embeddings)

    def without_chips(self) -> Faces:
        """A copy that no longer holds the pixels of the faces."""
        return replace(self, chips=None)

    def to_records(self) -> list[dict[str, Any]]:
        """Plain JSON-ready records, one per face."""
        out = []
        for i in range(len(self)):
            record: dict[str, Any] = {
                "box": [round(float(v), 2) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 5),
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks[i]],
                "quality": {k: round(v, 4) for k, v in self.quality.row(i).items()},
            }
            if self.embeddings is not None:
                record["embedding"] = [float(v) for v in self.embeddings[i]]
            out.append(record)
        return out

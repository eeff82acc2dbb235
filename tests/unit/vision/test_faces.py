"""The Faces value type refuses inconsistent arrays with a message naming the shapes."""

from __future__ import annotations

import numpy as np
import pytest

from openlfr.vision.faces import FaceQuality, Faces


def _quality(n: int) -> FaceQuality:
    z = np.zeros((n,), np.float32)
    return FaceQuality(z, z, z, z, z, z, z)


def _faces(n: int, **overrides: object) -> Faces:
    fields = dict(
        boxes=np.zeros((n, 4)),
        scores=np.zeros((n,)),
        landmarks=np.zeros((n, 5, 2)),
        quality=_quality(n),
        embeddings=np.zeros((n, 128)),
    )
    fields.update(overrides)
    return Faces(**fields)  # type: ignore[arg-type]


def test_empty_has_no_faces_and_serialises() -> None:
    faces = Faces.empty()
    assert len(faces) == 0 and faces.to_records() == []


def test_records_carry_every_field() -> None:
    rec = _faces(2).to_records()
    assert len(rec) == 2
    assert set(rec[0]) == {"box", "score", "landmarks", "quality", "embedding"}
    assert len(rec[0]["embedding"]) == 128 and len(rec[0]["landmarks"]) == 5


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"boxes": np.zeros((2, 3))}, r"boxes: expected shape \(n, 4\), got \(2, 3\)"),
        ({"scores": np.zeros((3,))}, r"scores: expected shape \(2\), got \(3,\)"),
        ({"landmarks": np.zeros((2, 68, 2))}, r"landmarks: expected shape \(2, 5, 2\)"),
        ({"embeddings": np.zeros((3, 128))}, r"embeddings: expected shape \(2, n\)"),
        ({"quality": _quality(1)}, r"quality: expected 2 rows, got 1"),
        ({"chips": np.zeros((2, 150, 150, 3), np.float32)}, r"chips: expected uint8"),
    ],
)
def test_inconsistent_arrays_are_refused(override: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _faces(2, **override)


def test_quality_columns_must_agree() -> None:
    with pytest.raises(ValueError, match="blur"):
        FaceQuality(*(np.zeros(2),) * 2, np.zeros(3), *(np.zeros(2),) * 4)

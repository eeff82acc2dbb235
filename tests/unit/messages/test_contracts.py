"""Wire contracts: round trips, clear validation errors, and schemas that match the models."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from openlfr.messages.codec import DecodeError, decode, encode, headers_for
from openlfr.messages.models import (
    Alert,
    DetectedFace,
    EmbeddedFace,
    Embeddings,
    FaceQualityRecord,
    Frame,
)
from openlfr.messages.schemas import SCHEMA_DIR, render

NOW = time.time()
HEAD = dict(camera_id="cam-1", frame_id="cam-1:7", capture_ts=NOW, trace_id=uuid.uuid4().hex)
QUALITY = FaceQualityRecord(
    face_px=80, inter_eye_px=30, blur=50, yaw=0.1, roll_deg=2, detector_score=0.9, score=0.5
)


def _face(**extra: object) -> dict[str, object]:
    return dict(
        index=0, box=(1.0, 2.0, 3.0, 4.0), score=0.9, landmarks=((1.0, 1.0),) * 5, quality=QUALITY,
        chip_png=b"\x89PNG\r\n\x1a\n....", **extra,
    )


def test_frame_round_trip_keeps_binary_data_exactly() -> None:
    jpeg = bytes(range(256)) * 4
    frame = Frame(**HEAD, width=640, height=480, jpeg=jpeg, ingest_ts=NOW)
    back = decode(encode(frame), Frame)
    assert back == frame and back.jpeg == jpeg
    assert dict(headers_for(frame))["camera_id"] == b"cam-1"


def test_embeddings_round_trip_keeps_vectors_bit_exact() -> None:
    vec = np.random.default_rng(0).standard_normal(128).astype(np.float32)
    msg = Embeddings(
        **HEAD, width=10, height=10, detector_model="d", embedder_model="e",
        faces=(EmbeddedFace(**_face(embedding=EmbeddedFace.pack(vec))),),
    )
    back = decode(encode(msg), Embeddings)
    np.testing.assert_array_equal(back.faces[0].vector(), vec)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (b"", "empty value"),
        (b"not json", "invalid Frame"),
        (b'{"v": 2}', "v: Input should be 1"),
        (b'{"v": 1, "camera_id": "a b"}', "camera_id: String should match pattern"),
    ],
)
def test_bad_values_raise_decode_errors_that_say_why(value: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(value, Frame)


def test_unknown_fields_and_bad_vectors_are_refused() -> None:
    frame = Frame(**HEAD, width=1, height=1, jpeg=b"\xff\xd8\xff\xe0", ingest_ts=NOW)
    data = encode(frame)[:-1] + b', "extra": 1}'
    with pytest.raises(DecodeError, match="extra"):
        decode(data, Frame)
    with pytest.raises(ValueError, match="16-4096 finite"):
        EmbeddedFace.pack(np.full(128, np.nan))
    with pytest.raises(ValueError, match="16-4096 finite"):
        EmbeddedFace.pack(np.zeros(8))
    with pytest.raises(ValueError):
        EmbeddedFace(**_face(embedding=b"\x00" * 16))
    with pytest.raises(ValueError, match="whole number of float32"):
        EmbeddedFace(**_face(embedding=b"\x00" * 514))
    # Any embedder's length travels: 1,024 values (faceres_v1) as well as dlib's 128.
    wide = EmbeddedFace(**_face(embedding=EmbeddedFace.pack(np.ones(1024))))
    assert wide.vector().shape == (1024,)
    with pytest.raises(ValueError):
        DetectedFace(**{**_face(), "landmarks": ((1.0, 1.0),) * 4})


def test_alert_ids_are_32_hex() -> None:
    with pytest.raises(ValueError):
        Alert(
            **HEAD, alert_id="not-hex", track_id="t", subject_id="s", watchlist_id="w", score=0.9,
            margin=0.1, threshold=0.5, probe_chip_jpeg=b"\xff\xd8\xff\xe0", embedder_model="e", alert_ts=NOW,
        )


def test_committed_schemas_match_the_models() -> None:
    for name, text in render().items():
        path = SCHEMA_DIR / name
        assert path.is_file(), f"{path} missing: run python -m openlfr.messages.schemas"
        assert path.read_text() == text, f"{path} is stale: run python -m openlfr.messages.schemas"

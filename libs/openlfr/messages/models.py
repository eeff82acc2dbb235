"""The messages of every topic. Pydantic models, frozen, ``extra="forbid"``, versioned.

Binary fields (JPEG frames and chips, float32 vectors) travel base64-encoded inside JSON, so a
message is one self-describing UTF-8 document that any consumer can read. Each message carries
the frame's capture time and a trace id, so latency per stage can be measured end to end.
"""

from __future__ import annotations

import base64
from typing import Annotated, Literal, Self

import numpy as np
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, field_validator, model_validator

SCHEMA_VERSION = 1
#: The ``Faces`` and ``Embeddings`` schema: 2 since a face may carry its ``scene_jpeg``. Version-1
#: messages (no scene crop) are still read, so consumers can be upgraded before producers.
FACES_SCHEMA_VERSION = 2
#: The ``Alert`` schema: 2 since an alert may carry the probe's ``scene_jpeg``; 1 is still read.
ALERT_SCHEMA_VERSION = 2
#: The most bytes of one scene crop (JPEG): ``openlfr.vision.scene`` keeps under it.
MAX_SCENE_JPEG_BYTES = 131_072


def _b64decode(value: object) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise ValueError(f"not valid base64: {exc}") from exc
    raise ValueError(f"expected base64 text, got {type(value).__name__}")


#: Raw bytes in Python, base64 text on the wire.
B64Bytes = Annotated[
    bytes,
    BeforeValidator(_b64decode),
    PlainSerializer(lambda b: base64.b64encode(b).decode("ascii"), return_type=str, when_used="json"),
]

Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]


def _jpeg(value: bytes) -> bytes:
    if not value.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG (no start-of-image marker)")
    return value


#: A scene crop: the face with its surroundings (the face box enlarged, clipped to the frame,
#: downscaled), a JPEG of at most ``MAX_SCENE_JPEG_BYTES``; base64 on the wire.
SceneJpeg = Annotated[B64Bytes, Field(min_length=4, max_length=MAX_SCENE_JPEG_BYTES), AfterValidator(_jpeg)]


def _scene_needs(message: BaseModel, version: int, scenes: bool) -> None:
    """Refuse a scene crop in a message of a version that has none (a v1 reader would refuse it)."""
    v = getattr(message, "v")
    if scenes and v < version:
        raise ValueError(f"scene_jpeg needs schema version {version} or later, the message says v={v}")


class Message(BaseModel):
    """Base of every wire message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = SCHEMA_VERSION
    camera_id: Id
    frame_id: Id
    #: Capture time of the frame, seconds since the Unix epoch (UTC).
    capture_ts: float = Field(gt=0)
    trace_id: Annotated[str, Field(min_length=8, max_length=64)]


class Frame(Message):
    """``openlfr.frames.v1``: one sampled camera frame."""

    kind: Literal["frame"] = "frame"
    width: int = Field(gt=0, le=16384)
    height: int = Field(gt=0, le=16384)
    jpeg: B64Bytes = Field(min_length=4)
    #: Wall time when ingest published it (for ingest's own latency).
    ingest_ts: float = Field(gt=0)


class FaceQualityRecord(BaseModel):
    """Per-face quality (see ``openlfr.vision.quality``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    face_px: float
    inter_eye_px: float
    blur: float
    yaw: float
    roll_deg: float
    detector_score: float
    score: float


class DetectedFace(BaseModel):
    """One face of a frame, as detect publishes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    index: int = Field(ge=0)
    box: tuple[float, float, float, float]
    score: float = Field(ge=0, le=1)
    landmarks: tuple[tuple[float, float], ...] = Field(min_length=5, max_length=5)
    quality: FaceQualityRecord
    #: The aligned 150x150 RGB chip, PNG-encoded: lossless, so the embedder sees exactly the
    #: pixels enrolment sees.
    chip_png: B64Bytes = Field(min_length=8)
    #: The face in its scene (``openlfr.vision.scene``), for a reviewer; None when scene crops are
    #: off (``OPENLFR_SCENE_CROP``). Only the match stage's Match of a matched face carries it on.
    scene_jpeg: SceneJpeg | None = None


class FramePart(Message):
    """Base of the per-frame face messages (``Faces``, ``Embeddings``): which part of the frame's
    faces a message holds, and how late the frame was taken up."""

    #: A crowded frame's faces travel in several messages, each under the byte budget
    #: (``OPENLFR_FACES_MESSAGE_MAX_BYTES``): this is part ``part`` (0-based) of ``parts``; the
    #: match stage puts the frame together again before tracking.
    part: int = Field(default=0, ge=0, le=511)
    parts: int = Field(default=1, ge=1, le=512)
    #: Catch-up after an outage: how far behind live (seconds from ``capture_ts``) the frame was
    #: when a stage took it from a backlog past its freshness limit, within the bounded lateness
    #: (``OPENLFR_CATCHUP_LATENESS_S``); None when every stage took it within its limits.
    lateness_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _part_of_parts(self) -> Self:
        if self.part >= self.parts:
            raise ValueError(f"part {self.part} of {self.parts}: part must be below parts")
        faces = getattr(self, "faces", ())
        _scene_needs(self, FACES_SCHEMA_VERSION, any(f.scene_jpeg is not None for f in faces))
        return self


class Faces(FramePart):
    """``openlfr.faces.v1``: the faces detect found in one frame (frames with none are not sent)."""

    v: Literal[1, 2] = FACES_SCHEMA_VERSION  # type: ignore[assignment]
    kind: Literal["faces"] = "faces"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    faces: tuple[DetectedFace, ...] = Field(min_length=1, max_length=512)
    detector_model: str


class EmbeddedFace(DetectedFace):
    """One face with its descriptor."""

    #: float32 little-endian, as many values as the message's ``embedder_model`` gives (16-4096:
    #: 128 for the default dlib ResNet); the match stage checks them against its watchlist's model.
    embedding: B64Bytes = Field(min_length=64, max_length=16384)

    def vector(self) -> np.ndarray:
        """The descriptor as a (d,) float32 array."""
        return np.frombuffer(self.embedding, dtype="<f4").copy()

    @staticmethod
    def pack(vector: np.ndarray) -> bytes:
        """Bytes of a (d,) descriptor for the ``embedding`` field (16 <= d <= 4096)."""
        vector = np.asarray(vector, dtype="<f4").reshape(-1)
        if not 16 <= vector.shape[0] <= 4096 or not np.isfinite(vector).all():
            raise ValueError(f"embedding: expected 16-4096 finite float32 values, got shape {vector.shape}")
        return vector.tobytes()

    @field_validator("embedding")
    @classmethod
    def _finite(cls, value: bytes) -> bytes:
        if len(value) % 4:
            raise ValueError(f"embedding: {len(value)} bytes is not a whole number of float32 values")
        if not np.isfinite(np.frombuffer(value, dtype="<f4")).all():
            raise ValueError("embedding holds NaN or infinity")
        return value


class Embeddings(FramePart):
    """``openlfr.embeddings.v1``: faces of one frame with their descriptors."""

    v: Literal[1, 2] = FACES_SCHEMA_VERSION  # type: ignore[assignment]
    kind: Literal["embeddings"] = "embeddings"
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    faces: tuple[EmbeddedFace, ...] = Field(min_length=1, max_length=512)
    detector_model: str
    embedder_model: str


#: The ``Match`` schema: 2 since matches are signed (``sig``) and always name their deployment,
#: 3 since a match may carry the probe's ``scene_jpeg`` (2 is still read and verified). A
#: version-1 match (unsigned) is refused by the alert stage, to the dead-letter topic.
MATCH_SCHEMA_VERSION = 3


class Match(Message):
    """``openlfr.matches.v1``, schema 2: a track-level decision that a tracked face matches a
    subject, signed by the match stage (``openlfr.messages.signing``).

    ``frame_id``/``capture_ts`` are those of the track's best face (the probe).
    """

    v: Literal[2, 3] = MATCH_SCHEMA_VERSION  # type: ignore[assignment]
    kind: Literal["match"] = "match"
    track_id: Id
    subject_id: Id
    watchlist_id: Id
    #: Similarity of the probe to the subject (1 - distance / 2 for dlib distances, 0..1).
    score: float = Field(ge=0, le=1)
    #: Score minus the second-best subject's score (1.0 when there is none).
    margin: float = Field(ge=-1, le=1)
    #: Frames of the track that voted for this subject, and the track's frames in all.
    votes: int = Field(ge=1)
    track_frames: int = Field(ge=1)
    threshold: float = Field(ge=0, le=1)
    first_seen_ts: float = Field(gt=0)
    probe_chip_jpeg: B64Bytes = Field(min_length=4)
    reference_image_id: Id | None = None
    embedder_model: str
    #: The deployment the match was made in (the alert stage checks the match against it).
    deployment_id: Id
    #: The watchlist reference's aligned chip (JPEG), shown beside the probe for review.
    reference_chip_jpeg: B64Bytes | None = Field(default=None, min_length=4)
    #: The probe's score normalised against the background cohort, and the normalised
    #: threshold it had to reach (the subject's own threshold); None when decided on ``threshold`` alone.
    normalised_score: float | None = Field(default=None, allow_inf_nan=False)
    normalised_threshold: float | None = Field(default=None, allow_inf_nan=False)
    #: The cohort the normalisation came from (``cohort@<fingerprint>``).
    cohort: str | None = Field(default=None, max_length=64)
    #: Catch-up after an outage: how far behind live (seconds from its ``capture_ts``) the frame
    #: that led to this decision was when a stage took it from a backlog past its freshness limit
    #: (``OPENLFR_CATCHUP_LATENESS_S``); None when every stage took it within its limits.
    lateness_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    #: The probe face in its scene (the detect stage's crop of the probe's frame); None when scene
    #: crops are off. Only a face that matched reaches a Match, so only its scene crop does.
    scene_jpeg: SceneJpeg | None = None
    #: HMAC-SHA256 (hex) of the record's other fields under ``OPENLFR_MATCH_SIGNING_KEY``
    #: (``openlfr.messages.signing.canonical_bytes``): the alert stage refuses a match without a valid one.
    sig: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]

    @model_validator(mode="after")
    def _scene_version(self) -> Self:
        _scene_needs(self, MATCH_SCHEMA_VERSION, self.scene_jpeg is not None)
        return self


class Alert(Message):
    """``openlfr.alerts.v1``: a deduplicated alert for human review (the subscribers' contract)."""

    v: Literal[1, 2] = ALERT_SCHEMA_VERSION  # type: ignore[assignment]
    kind: Literal["alert"] = "alert"
    #: Deterministic: the same track and subject always give the same id, so replays dedupe.
    alert_id: Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
    track_id: Id
    subject_id: Id
    watchlist_id: Id
    score: float = Field(ge=0, le=1)
    margin: float = Field(ge=-1, le=1)
    threshold: float = Field(ge=0, le=1)
    probe_chip_jpeg: B64Bytes = Field(min_length=4)
    reference_image_id: Id | None = None
    embedder_model: str
    alert_ts: float = Field(gt=0)
    status: Literal["pending"] = "pending"
    #: The deployment the match was made in.
    deployment_id: Id | None = None
    #: The watchlist reference's aligned chip (JPEG), shown beside the probe for review.
    reference_chip_jpeg: B64Bytes | None = Field(default=None, min_length=4)
    #: The probe's score normalised against the background cohort, and the normalised
    #: threshold it had to reach (the subject's own threshold); None when decided on ``threshold`` alone.
    normalised_score: float | None = Field(default=None, allow_inf_nan=False)
    normalised_threshold: float | None = Field(default=None, allow_inf_nan=False)
    #: The cohort the normalisation came from (``cohort@<fingerprint>``).
    cohort: str | None = Field(default=None, max_length=64)
    #: Catch-up after an outage: how far behind live (seconds from its ``capture_ts``) the frame
    #: that led to this decision was when a stage took it from a backlog past its freshness limit
    #: (``OPENLFR_CATCHUP_LATENESS_S``); None when every stage took it within its limits.
    lateness_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    #: The probe face in its scene (from the Match), kept by the review store under the crop
    #: retention like the chips; None when scene crops are off.
    scene_jpeg: SceneJpeg | None = None

    @model_validator(mode="after")
    def _scene_version(self) -> Self:
        _scene_needs(self, ALERT_SCHEMA_VERSION, self.scene_jpeg is not None)
        return self


#: The dead-letter record's format: 2 since records carry a reference to the original and at
#: most a truncated copy of its bytes (1 kept the whole value and could exceed the broker's limit).
DEADLETTER_FORMAT_VERSION = 2


class DeadLetter(BaseModel):
    """``openlfr.deadletter.v1``, format 2: a message a stage could not accept, why, and where the
    original is (topic, partition, offset, its size and SHA-256), with at most a truncated copy of
    its bytes: none for topics that carry faces (``payload="omitted"``), else the first bytes up
    to the stage's limit. A record always fits the broker's message limit.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[2] = DEADLETTER_FORMAT_VERSION
    kind: Literal["deadletter"] = "deadletter"
    stage: str = Field(max_length=128)
    reason: str = Field(max_length=4000)
    topic: str = Field(max_length=249)
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    #: The original key, cut to 256 bytes; ``key_bytes`` is its whole length.
    key: B64Bytes | None = Field(default=None, max_length=256)
    key_bytes: int = Field(default=0, ge=0)
    #: Length and SHA-256 (hex) of the whole original value (0 bytes: empty or missing).
    value_bytes: int = Field(ge=0)
    value_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    #: What ``value`` holds: the whole original, its first bytes, or nothing (metadata only).
    payload: Literal["whole", "truncated", "omitted"]
    value: B64Bytes = b""
    #: The original headers as text, at most 32, each value cut to 256 characters.
    headers: dict[str, str] = Field(default_factory=dict, max_length=32)
    failed_ts: float = Field(gt=0)

"""A crowded frame's faces in several messages, each under a byte budget, and the frame again.

Chips (and scene crops, ``openlfr.vision.scene``) travel inside the messages (lossless PNG and
JPEG, base64 in JSON), so a ``Faces`` message grows with its frame's crowd: ~31 KB a face on the
shared crowd scenes without scene crops, so about 30 faces fill the broker's 1 MB limit (docs/pipeline.md, "Crowds"). The detect stage therefore cuts a frame's
faces into parts (:func:`split_faces`), each small enough that the ``Embeddings`` message it
becomes at embed still fits: every face is counted with the largest descriptor the schema allows.
Each part says ``part`` of ``parts``; embed handles the parts one by one (its output keeps the
numbering); the match stage puts the frame together again (:class:`FrameAssembler`) so the
tracker sees a frame's faces at once, as it would have without the split.

Parts of one frame follow each other on one partition (keyed by camera, published in order by
one replica). A part can still go missing (dropped as stale at embed between two batches, or
dead-lettered): a frame whose parts are not all in by the time a newer frame of its camera
arrives, or its partition's event time has moved ``max_wait_s`` past it, goes on with the faces
it has (counted ``partial_frame``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from openlfr.messages.codec import encode
from openlfr.messages.models import DetectedFace, Embeddings, FramePart
from openlfr.pipeline.stage import Incoming

#: Most bytes one descriptor may take in an ``Embeddings`` message: the schema's bound
#: (``EmbeddedFace.embedding``, 16 KiB of float32), base64-encoded, with its JSON key.
MAX_EMBEDDING_JSON_BYTES = 4 * math.ceil(16384 / 3) + len(',"embedding":""')
#: What an ``Embeddings`` envelope may add to its ``Faces`` part besides the descriptors
#: (``embedder_model`` and the longer ``kind``), with room to spare.
EMBEDDINGS_ENVELOPE_BYTES = 2048
#: The broker's (and librdkafka's) default limit on one message: 1,000,000 bytes.
BROKER_MESSAGE_MAX_BYTES = 1_000_000
#: Default budget of one faces or embeddings message: under the limit, with room for the key,
#: the headers and the record's framing.
DEFAULT_MESSAGE_MAX_BYTES = 900_000


def face_budget_bytes(face: DetectedFace) -> int:
    """Bytes ``face`` takes in an ``Embeddings`` message at most: its JSON, a separator and
    the largest descriptor."""
    return len(face.model_dump_json()) + 1 + MAX_EMBEDDING_JSON_BYTES


def worst_face_bytes(chip_size: int, *, scene_max_bytes: int = 0) -> int:
    """Most bytes one face with a ``chip_size`` square chip can take in an ``Embeddings``
    message: an incompressible PNG (raw pixels plus per-row filter bytes and ~1 KB of
    framing), base64, the largest descriptor, ~1 KB of box, landmarks and quality, and its
    scene crop of at most ``scene_max_bytes`` (0: scene crops off), base64."""
    png = chip_size * (3 * chip_size + 1) + 1024
    return 4 * math.ceil(png / 3) + MAX_EMBEDDING_JSON_BYTES + 1024 + 4 * math.ceil(scene_max_bytes / 3)


def split_faces(faces: Sequence[DetectedFace], *, envelope: FramePart, max_bytes: int) -> list[list[DetectedFace]]:
    """Cut a frame's faces (in order) into the fewest consecutive groups whose messages stay
    under ``max_bytes``, even once they carry descriptors.

    Args:
        faces: the frame's faces, at least one.
        envelope: the frame's message with its first face only (its size without faces is
            measured from it).
        max_bytes: budget of one message.

    Raises:
        ValueError: a single face does not fit the budget (the budget is too small for the
            chips; the detect stage refuses such a budget at start).
    """
    if not faces:
        raise ValueError("split_faces needs at least one face")
    base = len(encode(envelope)) - len(envelope.faces[0].model_dump_json()) + EMBEDDINGS_ENVELOPE_BYTES
    groups: list[list[DetectedFace]] = [[]]
    used = base
    for face in faces:
        size = face_budget_bytes(face)
        if base + size > max_bytes:
            raise ValueError(f"face {face.index}: {base + size} bytes alone, over the {max_bytes}-byte budget")
        if groups[-1] and used + size > max_bytes:
            groups.append([])
            used = base
        groups[-1].append(face)
        used += size
    return groups


@dataclass(slots=True)
class _Pending:
    """The parts of one frame received so far."""

    parts: int
    capture_ts: float
    partition: int
    received: dict[int, Incoming[Embeddings]] = field(default_factory=dict)

    @property
    def first_offset(self) -> int:
        return min(item.offset for item in self.received.values())


@dataclass(frozen=True, slots=True)
class AssembledFrame:
    """A frame ready for the tracker.

    Attributes:
        incoming: the frame as one message (all its faces in index order, ``part=0, parts=1``),
            at the partition and offset of the part that completed it (the last one received).
        first_offset: the offset of its first part (where a replay must start to see it whole).
        partial: some of its parts never came.
    """

    incoming: Incoming[Embeddings]
    first_offset: int
    partial: bool = False


@dataclass(frozen=True, slots=True)
class Assembly:
    """What one input gave: frames now complete (in the order to apply them), or a duplicate."""

    frames: tuple[AssembledFrame, ...] = ()
    duplicate: bool = False


class FrameAssembler:
    """Puts frames split into parts together again, per camera, in event time.

    Transactional: :meth:`plan` works on a copy and returns it; :meth:`commit` makes it the
    state, so a batch that fails later (the store is down) can be handed over again unchanged.
    Deterministic in the input order.
    """

    def __init__(self, *, max_wait_s: float) -> None:
        """Args:
            max_wait_s: event time after which an incomplete frame goes on with the parts it has.
        """
        if not max_wait_s > 0:
            raise ValueError(f"max_wait_s must be positive, got {max_wait_s}")
        self.max_wait_s = max_wait_s
        self._state = AssemblerState()

    def hold(self) -> dict[int, int]:
        """Per partition, the first offset of the oldest incomplete frame (commit no further)."""
        return self._state.hold()

    def begin(self) -> AssemblerState:
        """A copy of the state for a batch: :meth:`add` to it, then :meth:`commit` it."""
        return self._state.copy()

    def add(self, state: AssemblerState, item: Incoming[Embeddings]) -> Assembly:
        """What ``item`` gives, changing ``state`` (not the assembler's until committed)."""
        return state.add(item, self.max_wait_s)

    def commit(self, state: AssemblerState) -> None:
        """Make a batch's state the assembler's."""
        self._state = state

    def __len__(self) -> int:
        """Incomplete frames held."""
        return len(self._state.pending)


@dataclass(slots=True)
class AssemblerState:
    pending: dict[tuple[str, str], _Pending] = field(default_factory=dict)
    #: per partition: the highest offset of a part taken, and the newest capture time seen
    high: dict[int, int] = field(default_factory=dict)
    newest: dict[int, float] = field(default_factory=dict)

    def copy(self) -> AssemblerState:
        return AssemblerState(
            pending={k: _Pending(p.parts, p.capture_ts, p.partition, dict(p.received)) for k, p in self.pending.items()},
            high=dict(self.high),
            newest=dict(self.newest),
        )

    def hold(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for pending in self.pending.values():
            first = pending.first_offset
            out[pending.partition] = min(first, out.get(pending.partition, first))
        return out

    def add(self, item: Incoming[Embeddings], max_wait_s: float) -> Assembly:
        message = item.message
        if message.parts > 1:
            # (a whole frame's offset is checked by the match stage, as it always was)
            last = self.high.get(item.partition)
            if last is not None and item.offset <= last:
                return Assembly(duplicate=True)  # a part read again after a seek back: already taken
            self.high[item.partition] = item.offset
        newest = max(self.newest.get(item.partition, message.capture_ts), message.capture_ts)
        self.newest[item.partition] = newest
        key = (message.camera_id, message.frame_id)
        frames: list[AssembledFrame] = []
        # A newer frame of the camera, or the partition's clock moving on, ends a wait.
        for other in sorted(self.pending, key=lambda k: self.pending[k].first_offset):
            pending = self.pending[other]
            # (an older frame's part sent again by a retried batch ends no wait)
            newer = other[0] == message.camera_id and other != key and message.capture_ts > pending.capture_ts
            if newer or (pending.partition == item.partition and newest - pending.capture_ts > max_wait_s):
                frames.append(_merge(self.pending.pop(other), partial=True))
        if message.parts == 1:
            frames.append(AssembledFrame(item, item.offset))
            return Assembly(tuple(frames))
        pending = self.pending.get(key)
        if pending is None or pending.parts != message.parts:
            pending = self.pending[key] = _Pending(message.parts, message.capture_ts, item.partition)
        pending.received[message.part] = item  # a part sent twice (a retried batch) counts once
        if len(pending.received) == pending.parts:
            frames.append(_merge(self.pending.pop(key), partial=False))
        return Assembly(tuple(frames))


def _merge(pending: _Pending, *, partial: bool) -> AssembledFrame:
    """The parts received of one frame as one message, at the last part's offset."""
    items = [pending.received[p] for p in sorted(pending.received)]
    last = max(items, key=lambda item: item.offset)
    faces = tuple(sorted((f for item in items for f in item.message.faces), key=lambda f: f.index))
    lateness = [item.message.lateness_s for item in items if item.message.lateness_s is not None]
    message = last.message.model_copy(update={
        "faces": faces, "part": 0, "parts": 1, "lateness_s": max(lateness) if lateness else None,
    })
    return AssembledFrame(Incoming(message=message, partition=last.partition, offset=last.offset),
                          first_offset=pending.first_offset, partial=partial)

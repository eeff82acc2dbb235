"""Per-camera face tracking in event time: which faces of successive frames are one person.

Pure and deterministic: given the same messages in the same order it makes the same tracks
with the same ids, so a stage that replays its input after a restart rebuilds them exactly.
Time is the frames' ``capture_ts``, never the wall clock.

Association: a face may join an open track of its camera whose last box overlaps it (IoU at
least ``min_iou``) when it is within ``max_distance`` of the track, or, overlapping it or not
(a fast move, a low frame rate, frames shed under load), when it is within the stricter
``reacquire_distance``. "Within d of the track" means within d of *both* the track's last
embedding and the mean of all its embeddings: the last one follows a face that turns, the
mean holds who the track is, so a drift from one person to another in small steps (A, then
A', then B, each step short, A to B long) cannot chain, since B is far from the mean of A and
A'. The distance of a face to a track is the larger of the two. Pairs are taken greedily,
cheapest first, one face per track, at a cost of that distance minus :data:`IOU_WEIGHT` x IoU:
the descriptor decides, so a person entering where another just left joins their own track,
not the other's; overlap breaks near-ties. Any face left over starts a track.

The defaults come from ``benchmarks/tracker_distances.py`` (docs/pipeline.md, "The tracker"):
on the shared face set no two people's faces were 0.45 or less apart (closest 0.47 of 276k
pairs), while one person's successive video frames were over 0.45 apart in at most 12% of
steps (head turns); a queue of people through one spot, each face where the last one was, is
then kept apart by the descriptor alone.

A track ends when its camera's newest ``capture_ts`` is more than ``max_gap_s`` past the
track's last face, when it has lasted ``max_track_s`` (so no track pins its first offset for
ever), or when its camera has sent nothing while its partition's newest ``capture_ts`` moved
``camera_idle_s`` ahead (a camera that went quiet; frames without faces are never sent).

A track keeps only what the decision needs: its last box, its last embedding and the running
sum of its embeddings (two vectors, whatever the track's length), the partition and offset of
its first frame, and its best face (by quality) with the chip *only if the caller passed one*.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

logger = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
EndReason = Literal["gap", "max_age", "camera_idle"]

#: How much box overlap counts against embedding distance when faces are paired with tracks
#: (cost = distance - IOU_WEIGHT x IoU): the descriptor decides (the same face from one frame
#: to the next is ~0.05-0.15 apart, two people rarely under 0.45), position breaks near-ties
#: (look-alikes side by side). A full overlap is worth 0.2 of distance.
IOU_WEIGHT = 0.2

#: Track ids travel in messages as ``Id`` (at most 128 characters).
MAX_TRACK_ID_LEN = 128


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when either is empty)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    area_a = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1])
    area_b = max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1])
    union = area_a + area_b - inter
    return float(inter / union) if union > 0 else 0.0


def make_track_id(camera_id: str, frame_id: str, index: int) -> str:
    """``"<first frame_id>:<face index>"``, with ``"<camera_id>:"`` in front unless the frame id
    already starts with it (ingest's do); hashed when that would pass 128 characters."""
    prefix = "" if frame_id.startswith(f"{camera_id}:") else f"{camera_id}:"
    track_id = f"{prefix}{frame_id}:{index}"
    if len(track_id) <= MAX_TRACK_ID_LEN:
        return track_id
    return "t:" + hashlib.sha256(track_id.encode()).hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Observation:
    """One face of a frame, as offered to the tracker.

    Attributes:
        index: the face's index in its frame (makes the track id of a track it starts).
        box: [x1, y1, x2, y2] in pixels.
        embedding: (128,) descriptor.
        quality: quality score (higher is better) used to pick the track's best face.
        chip: encoded chip to keep if this becomes the best face; None keeps no pixels.
    """

    index: int
    box: Box
    embedding: np.ndarray = field(repr=False)
    quality: float
    chip: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class BestFace:
    """The best-quality face a track has seen."""

    frame_id: str
    capture_ts: float
    index: int
    quality: float
    box: Box
    chip: bytes | None = field(default=None, repr=False)


@dataclass(slots=True, eq=False)
class Track:
    """An open track. Owned and changed by ``FaceTracker``; read-only to everyone else."""

    track_id: str
    camera_id: str
    partition: int
    first_offset: int
    first_frame_id: str
    first_ts: float
    last_ts: float
    last_box: Box
    last_embedding: np.ndarray = field(repr=False)
    #: Sum of the embeddings of the track's faces, float64 (their mean is this over ``frames``).
    embedding_sum: np.ndarray = field(repr=False)
    best: BestFace
    frames: int = 1

    @property
    def mean_embedding(self) -> np.ndarray:
        """The mean of the embeddings of the track's faces (float64)."""
        return self.embedding_sum / self.frames


@dataclass(frozen=True, slots=True)
class FrameUpdate:
    """What one frame did to the tracks.

    Attributes:
        assigned: per observation, in the order given, the track it now belongs to.
        started: tracks this frame started.
        ended: tracks that ended before this frame was associated, with the reason.
    """

    assigned: tuple[Track, ...]
    started: tuple[Track, ...]
    ended: tuple[tuple[Track, EndReason], ...]


@dataclass(slots=True)
class _Camera:
    partition: int
    newest_ts: float
    tracks: dict[str, Track] = field(default_factory=dict)


class FaceTracker:
    """Tracks of faces per camera, driven by the frames' capture times.

    Args:
        max_gap_s: a track ends this long (camera event time) after its last face.
        max_track_s: a track ends this long after its first face.
        min_iou: least box overlap for a face to join a track by position.
        max_distance: largest embedding distance for a face to join a track at all (to the
            track's last embedding and to its mean).
        reacquire_distance: largest embedding distance for a face to join a track it does
            not overlap (0 disables joining without overlap).
        check_mean: also require the distance to the track's mean embedding (``False`` compares
            with the last embedding only, as the tracker did before; for comparisons).
        camera_idle_s: a camera's tracks end once its partition's newest capture time is
            this far past the camera's newest.

    Raises:
        ValueError: a setting out of range.
    """

    def __init__(
        self,
        *,
        max_gap_s: float = 2.0,
        max_track_s: float = 600.0,
        min_iou: float = 0.1,
        max_distance: float = 0.45,
        reacquire_distance: float = 0.4,
        camera_idle_s: float = 60.0,
        check_mean: bool = True,
    ) -> None:
        checks = {
            "max_gap_s": max_gap_s > 0,
            "max_track_s": max_track_s >= max_gap_s,
            "min_iou": 0.0 < min_iou <= 1.0,
            "max_distance": max_distance > 0,
            "reacquire_distance": 0.0 <= reacquire_distance <= max_distance,
            "camera_idle_s": camera_idle_s >= max_gap_s,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                f"FaceTracker: out of range: {', '.join(bad)} (need max_gap_s > 0, max_track_s >= max_gap_s, "
                f"0 < min_iou <= 1, max_distance > 0, 0 <= reacquire_distance <= max_distance, "
                f"camera_idle_s >= max_gap_s)"
            )
        self.max_gap_s = max_gap_s
        self.max_track_s = max_track_s
        self.min_iou = min_iou
        self.max_distance = max_distance
        self.reacquire_distance = reacquire_distance
        self.camera_idle_s = camera_idle_s
        self.check_mean = check_mean
        self._cameras: dict[str, _Camera] = {}
        self._partition_newest: dict[int, float] = {}

    def __len__(self) -> int:
        return sum(len(cam.tracks) for cam in self._cameras.values())

    def tracks(self, camera_id: str | None = None) -> list[Track]:
        """Open tracks (of one camera, or all), oldest first per camera."""
        if camera_id is None:
            cams = list(self._cameras.values())
        else:
            cam = self._cameras.get(camera_id)
            cams = [cam] if cam is not None else []
        return [t for cam in cams for t in cam.tracks.values()]

    def hold(self) -> dict[int, int]:
        """Per partition, the lowest first-frame offset among open tracks (partitions without
        open tracks are absent)."""
        out: dict[int, int] = {}
        for cam in self._cameras.values():
            for track in cam.tracks.values():
                current = out.get(track.partition)
                if current is None or track.first_offset < current:
                    out[track.partition] = track.first_offset
        return out

    def update(
        self,
        *,
        camera_id: str,
        frame_id: str,
        capture_ts: float,
        partition: int,
        offset: int,
        observations: Sequence[Observation],
    ) -> FrameUpdate:
        """Advance the camera's event time to ``capture_ts`` and associate a frame's faces.

        A frame with no observations still advances time (and can end tracks).

        Raises:
            ValueError: two observations with one index, or an embedding of the wrong shape.
        """
        indexes = [o.index for o in observations]
        if len(set(indexes)) != len(indexes):
            raise ValueError(f"frame {frame_id}: face indexes repeat: {indexes}")
        embeddings = np.zeros((0, 0), np.float32)
        if observations:
            try:
                embeddings = np.stack([np.asarray(o.embedding, np.float32).reshape(-1) for o in observations])
            except ValueError as exc:
                raise ValueError(f"frame {frame_id}: embeddings of unequal size ({exc})") from exc
        existing = self._cameras.get(camera_id)
        if existing is not None:
            for index in indexes:
                if make_track_id(camera_id, frame_id, index) in existing.tracks:
                    raise ValueError(f"frame {frame_id} of camera {camera_id} was already tracked")

        cam = self._cameras.get(camera_id)
        if cam is None:
            cam = self._cameras[camera_id] = _Camera(partition=partition, newest_ts=capture_ts)
        cam.partition = partition
        cam.newest_ts = max(cam.newest_ts, capture_ts)
        newest = self._partition_newest[partition] = max(self._partition_newest.get(partition, capture_ts), capture_ts)

        ended: list[tuple[Track, EndReason]] = []
        for track in list(cam.tracks.values()):
            if cam.newest_ts - track.last_ts > self.max_gap_s:
                ended.append((track, "gap"))
            elif cam.newest_ts - track.first_ts > self.max_track_s:
                ended.append((track, "max_age"))
        for other_id, other in self._cameras.items():
            if other_id != camera_id and other.partition == partition and newest - other.newest_ts > self.camera_idle_s:
                ended.extend((track, "camera_idle") for track in other.tracks.values())
        for track, reason in ended:
            del self._cameras[track.camera_id].tracks[track.track_id]
            logger.debug('track ended track_id="%s" reason="%s" frames="%d"', track.track_id, reason, track.frames)
        for other_id in [c for c, other in self._cameras.items() if c != camera_id and not other.tracks]:
            del self._cameras[other_id]

        open_tracks = list(cam.tracks.values())
        pairs: list[tuple[float, float, int, int]] = []
        if open_tracks and observations:
            distances = self._distances(open_tracks, embeddings)
            for ti, track in enumerate(open_tracks):
                for oi, obs in enumerate(observations):
                    d = float(distances[ti, oi])
                    if d > self.max_distance:
                        continue
                    iou = box_iou(track.last_box, obs.box)
                    if iou < self.min_iou and d > self.reacquire_distance:
                        continue
                    pairs.append((d - IOU_WEIGHT * iou, -iou, ti, oi))
        pairs.sort()
        assigned: list[Track | None] = [None] * len(observations)
        taken: set[int] = set()
        for _cost, _neg_iou, ti, oi in pairs:
            if ti in taken or assigned[oi] is not None:
                continue
            taken.add(ti)
            track = open_tracks[ti]
            self._extend(track, observations[oi], embeddings[oi], frame_id=frame_id, capture_ts=capture_ts)
            assigned[oi] = track

        started: list[Track] = []
        for oi, obs in enumerate(observations):
            if assigned[oi] is not None:
                continue
            track = Track(
                track_id=make_track_id(camera_id, frame_id, obs.index),
                camera_id=camera_id,
                partition=partition,
                first_offset=offset,
                first_frame_id=frame_id,
                first_ts=capture_ts,
                last_ts=capture_ts,
                last_box=_box(obs.box),
                last_embedding=embeddings[oi].copy(),
                embedding_sum=embeddings[oi].astype(np.float64),
                best=BestFace(frame_id, capture_ts, obs.index, float(obs.quality), _box(obs.box), obs.chip),
            )
            cam.tracks[track.track_id] = track
            started.append(track)
            assigned[oi] = track
        return FrameUpdate(
            assigned=tuple(t for t in assigned if t is not None), started=tuple(started), ended=tuple(ended)
        )

    def _distances(self, tracks: Sequence[Track], embeddings: np.ndarray) -> np.ndarray:
        """(tracks, faces): each face's distance to each track, the larger of the distances to
        the track's last embedding and (with ``check_mean``) to its mean."""
        faces = embeddings.astype(np.float64)[None, :, :]
        last = np.stack([t.last_embedding for t in tracks]).astype(np.float64)
        distances = np.linalg.norm(last[:, None, :] - faces, axis=2)
        if self.check_mean:
            mean = np.stack([t.mean_embedding for t in tracks])
            distances = np.maximum(distances, np.linalg.norm(mean[:, None, :] - faces, axis=2))
        return distances

    @staticmethod
    def _extend(track: Track, obs: Observation, embedding: np.ndarray, *, frame_id: str, capture_ts: float) -> None:
        track.frames += 1
        track.last_ts = max(track.last_ts, capture_ts)
        track.last_box = _box(obs.box)
        track.last_embedding = embedding.copy()
        track.embedding_sum = track.embedding_sum + embedding
        if obs.quality > track.best.quality:
            track.best = BestFace(frame_id, capture_ts, obs.index, float(obs.quality), _box(obs.box), obs.chip)


def _box(box: Sequence[float]) -> Box:
    if len(box) != 4:
        raise ValueError(f"box: expected 4 values, got {len(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    return (x1, y1, x2, y2)

"""Which of the detector's fine tiles are worth running on a frame of a fixed camera.

The tiled pyramid (see :mod:`openlfr.vision.detector`) runs ~23 crops of 192x192 per frame,
nearly all of them fine tiles that exist only to find small faces. On a fixed camera most of
the frame is the same background from one frame to the next, and a face that is already being
followed sits where it sat a moment ago. :class:`MotionGate` keeps, per camera, a small grey
copy of the previous frame and the boxes of the faces found in the last few frames, and selects:

* every tile that spans the whole frame (the coarse whole-frame pass and the close-up crop);
* the fine tiles that intersect a moving region (absolute difference of the downscaled grey
  frames, after undoing the global shift between them, above a threshold, opened to drop
  lone cells, then dilated);
* the fine tiles that intersect a face found in the last ``face_memory`` frames (grown by
  ``face_margin``), so a face standing still is re-found without motion;
* everything, on every ``keyframe_interval``-th frame of a camera (and on its first frame, or
  after its frame size changes), so a still face the gate has never seen is found within that
  many frames.

Frames of one camera must be given in capture order (they arrive so on one partition). Faces
found in a batch are remembered with :meth:`MotionGate.remember` once the batch is detected, so
within one batch the later frames of a camera lean on motion and on faces of earlier batches.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from openlfr.vision.detector import CLOSE_UP_LEVEL, Tile, roi_tile

logger = logging.getLogger(__name__)

#: Default pixels of the full frame per pixel of the motion grid.
DEFAULT_MOTION_SCALE = 8

#: Default grey-level difference (0..255, after the area downscale) that counts as motion.
#: The downscale averages 64 pixels, so JPEG and sensor noise stay well below it.
DEFAULT_MOTION_THRESHOLD = 20

#: Default dilation of the motion mask, in motion-grid cells (a face's edge moves first).
DEFAULT_MOTION_DILATE = 1

#: Default: every this-many frames of a camera run every tile.
DEFAULT_KEYFRAME_INTERVAL = 10

#: Default: faces found in this many of a camera's last frames keep their tiles running.
DEFAULT_FACE_MEMORY = 10

#: Default growth of a remembered face box on each side, as a fraction of its size.
DEFAULT_FACE_MARGIN = 0.5

#: Most cameras whose state is kept; the least recently seen is forgotten first.
DEFAULT_MAX_CAMERAS = 1024


@dataclass(slots=True)
class _CameraState:
    size: tuple[int, int]
    grey: np.ndarray
    frames_seen: int = 0
    #: Face boxes of recent frames, oldest first, at most ``face_memory`` entries.
    faces: list[np.ndarray] = field(default_factory=list)


def is_whole_frame(tile: Tile) -> bool:
    """Whether a crop spans the whole frame (the coarse pass and the close-up crop)."""
    return tile.x0 == 0 and tile.y0 == 0 and tile.x1 == tile.frame_width and tile.y1 == tile.frame_height


class MotionGate:
    """Per-camera selection of the detector's tiles: coarse always, fine where motion or faces are."""

    def __init__(
        self,
        *,
        motion_scale: int = DEFAULT_MOTION_SCALE,
        motion_threshold: int = DEFAULT_MOTION_THRESHOLD,
        motion_dilate: int = DEFAULT_MOTION_DILATE,
        keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL,
        face_memory: int = DEFAULT_FACE_MEMORY,
        face_margin: float = DEFAULT_FACE_MARGIN,
        max_cameras: int = DEFAULT_MAX_CAMERAS,
        compensate_shift: bool = True,
    ) -> None:
        """Set up a gate with no camera seen yet.

        Args:
            motion_scale: frame pixels per motion-grid cell (>= 1).
            motion_threshold: grey-level change of a cell that counts as motion, 1..255.
            motion_dilate: cells the motion mask is grown by (>= 0).
            keyframe_interval: every this-many frames of a camera run all tiles (>= 1; 1 turns
                the gate into a no-op).
            face_memory: frames a found face keeps its tiles running (>= 0).
            face_margin: growth of a remembered face box on each side, fraction of its size.
            max_cameras: cameras whose state is kept (>= 1).
            compensate_shift: undo the global shift between frames (camera shake or pan)
                before differencing them.

        Raises:
            ValueError: an argument out of range, naming it.
        """
        if motion_scale < 1:
            raise ValueError(f"motion_scale must be >= 1, got {motion_scale}")
        if not 1 <= motion_threshold <= 255:
            raise ValueError(f"motion_threshold must be in 1..255, got {motion_threshold}")
        if motion_dilate < 0:
            raise ValueError(f"motion_dilate must be >= 0, got {motion_dilate}")
        if keyframe_interval < 1:
            raise ValueError(f"keyframe_interval must be >= 1, got {keyframe_interval}")
        if face_memory < 0:
            raise ValueError(f"face_memory must be >= 0, got {face_memory}")
        if face_margin < 0:
            raise ValueError(f"face_margin must be >= 0, got {face_margin}")
        if max_cameras < 1:
            raise ValueError(f"max_cameras must be >= 1, got {max_cameras}")
        self.motion_scale = int(motion_scale)
        self.motion_threshold = int(motion_threshold)
        self.motion_dilate = int(motion_dilate)
        self.keyframe_interval = int(keyframe_interval)
        self.face_memory = int(face_memory)
        self.face_margin = float(face_margin)
        self.max_cameras = int(max_cameras)
        self.compensate_shift = bool(compensate_shift)
        self._cameras: OrderedDict[str, _CameraState] = OrderedDict()

    def _grey(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        small = (max(1, width // self.motion_scale), max(1, height // self.motion_scale))
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, small, interpolation=cv2.INTER_AREA)

    def select(self, camera_id: str, image: np.ndarray, tiles: Sequence[Tile]) -> np.ndarray:
        """Which of ``tiles`` to run on this frame of ``camera_id``; updates the camera's state.

        Args:
            camera_id: the camera the frame comes from.
            image: the frame, ``HxWx3`` RGB uint8 (``HxW`` grey also works).
            tiles: the detector's crops for this frame (``FaceDetector.tiles_for``).

        Returns:
            ``(len(tiles),)`` bool: True for the tiles to run.
        """
        height, width = image.shape[:2]
        grey = self._grey(image)
        state = self._cameras.get(camera_id)
        if state is None or state.size != (width, height):
            state = _CameraState(size=(width, height), grey=grey)
            self._cameras[camera_id] = state
            while len(self._cameras) > self.max_cameras:
                self._cameras.popitem(last=False)
            keyframe = True
            moving = None
        else:
            self._cameras.move_to_end(camera_id)
            keyframe = state.frames_seen % self.keyframe_interval == 0
            moving = self._motion(state.grey, grey)
            state.grey = grey
        state.frames_seen += 1
        if keyframe:
            return np.ones(len(tiles), bool)
        chosen = np.array([is_whole_frame(t) for t in tiles], bool)
        regions = self._face_regions(state, width=width, height=height)
        for k, tile in enumerate(tiles):
            if chosen[k]:
                continue
            chosen[k] = self._touches_motion(moving, tile) or _touches_any(regions, tile)
        return chosen

    def remember(self, camera_id: str, boxes: np.ndarray) -> None:
        """Record the face boxes (``(n, 4)`` frame pixels) found in the camera's latest frame."""
        state = self._cameras.get(camera_id)
        if state is None or self.face_memory == 0:
            return
        state.faces.append(np.asarray(boxes, np.float32).reshape(-1, 4).copy())
        del state.faces[: max(0, len(state.faces) - self.face_memory)]

    def forget(self, camera_id: str) -> None:
        """Drop a camera's state; its next frame is a keyframe."""
        self._cameras.pop(camera_id, None)

    @property
    def cameras(self) -> int:
        """Number of cameras whose state is kept."""
        return len(self._cameras)

    def _motion(self, previous: np.ndarray, current: np.ndarray) -> np.ndarray:
        if self.compensate_shift and min(previous.shape) >= 8:
            # A handheld or panning camera moves every edge of the background; undo the
            # global shift first (phase correlation, sub-cell) so only the scene's own motion stays.
            (dx, dy), _ = cv2.phaseCorrelate(previous.astype(np.float32), current.astype(np.float32))
            shift = np.float32([[1, 0, dx], [0, 1, dy]])
            previous = cv2.warpAffine(
                previous, shift, (previous.shape[1], previous.shape[0]), borderMode=cv2.BORDER_REPLICATE
            )
        moving = (cv2.absdiff(previous, current) > self.motion_threshold).astype(np.uint8)
        # Lone cells are noise or texture shimmer; a face of ~32 px spans 4x4 cells.
        moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        if self.motion_dilate and moving.any():
            size = 2 * self.motion_dilate + 1
            moving = cv2.dilate(moving, np.ones((size, size), np.uint8))
        return moving

    def _touches_motion(self, moving: np.ndarray | None, tile: Tile) -> bool:
        if moving is None:
            return False
        s = self.motion_scale
        # Floor the start and ceil the end so a cell partly inside the tile counts.
        x0, y0 = tile.x0 // s, tile.y0 // s
        x1, y1 = -(-tile.x1 // s), -(-tile.y1 // s)
        return bool(moving[y0:y1, x0:x1].any())

    def _face_regions(self, state: _CameraState, *, width: int, height: int) -> np.ndarray:
        if not state.faces:
            return np.zeros((0, 4), np.float32)
        boxes = np.concatenate(state.faces)
        if boxes.shape[0] == 0:
            return boxes
        grow = np.maximum(boxes[:, 2:] - boxes[:, :2], 0) * self.face_margin
        grown = np.concatenate([boxes[:, :2] - grow, boxes[:, 2:] + grow], axis=1)
        grown[:, [0, 2]] = np.clip(grown[:, [0, 2]], 0, width)
        grown[:, [1, 3]] = np.clip(grown[:, [1, 3]], 0, height)
        return grown


def _touches_any(regions: np.ndarray, tile: Tile) -> bool:
    if regions.shape[0] == 0:
        return False
    return bool(
        (
            (regions[:, 0] < tile.x1)
            & (regions[:, 2] > tile.x0)
            & (regions[:, 1] < tile.y1)
            & (regions[:, 3] > tile.y0)
        ).any()
    )


# -- the scale pyramid gate --------------------------------------------------------------------

#: Default: a face narrower than this fraction of a pyramid level's crop side is "small" for
#: that level, so the next finer level is needed to find it reliably. The full-range model
#: finds faces from ~7% of its crop's side (see ``DEFAULT_TILE_GRIDS``); the margin above
#: that keeps faces the coarser level finds only some of the time.
DEFAULT_SMALL_FACE = 0.12

#: Default: a face narrower than this fraction of a level's crop side is one that level finds
#: in fewer than about half of the frames (measured on the shared videos: 55-65% from 4-8%,
#: 75% from 8-12%, all from 12%), so a new one would go unseen for frames on end: the tiles of
#: the finer level where keyframes found such faces keep running.
DEFAULT_TINY_FACE = 0.06

#: A face at least this fraction of the frame's long side is large: the close-up crop (which
#: finds faces filling most of the frame, from 0.3 of its long side) runs after a keyframe or
#: a frame found one, and otherwise only on keyframes.
LARGE_FACE = 0.2

#: Default: a fine tile keeps running for this many keyframe intervals after a keyframe found
#: a face there that needs its level.
DEFAULT_SCALE_MEMORY = 2

#: Default side of a crop around a followed face, in face sizes (the face then fills about a
#: quarter of the crop, where the model finds it best).
DEFAULT_ROI_FACTOR = 4.0

#: Default: faces of a camera's last frames that get a crop of their own (more run as tiles).
DEFAULT_MAX_ROIS = 8

#: Default: faces found in this many of a camera's last frames are followed.
DEFAULT_TRACK_MEMORY = 2

#: Default mean grey-level change (0..255) between a camera's frames, at 1/16 scale, that counts
#: as a new scene (a cut, a camera moved or re-aimed): the frame is then a keyframe.
DEFAULT_SCENE_CHANGE = 25.0

#: Pixels of the full frame per pixel of the scene-change thumbnail.
SCENE_SCALE = 16


@dataclass(frozen=True, slots=True)
class GatePlan:
    """What to run on one frame: which of the detector's crops, and crops of the gate's own."""

    mask: np.ndarray
    extra: tuple[Tile, ...] = ()

    @property
    def crops(self) -> int:
        """Crops the detector runs for this frame."""
        return int(self.mask.sum()) + len(self.extra)


@dataclass(slots=True)
class _PyramidState:
    size: tuple[int, int]
    frames_seen: int = 0
    keyframes_seen: int = 0
    last_was_keyframe: bool = True
    #: Per crop of the detector's plan: the keyframe count up to which it keeps running.
    active_until: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: Face boxes of the camera's last frames, oldest first.
    faces: list[np.ndarray] = field(default_factory=list)
    #: A small grey copy of the camera's last frame (scene-change test).
    thumb: np.ndarray | None = None


class PyramidGate:
    """Per-camera selection of the detector's crops by face size: fine tiles only where small
    faces can be, and a crop of its own around each small face already being followed.

    The detector's pyramid (see :mod:`openlfr.vision.detector`) runs every level everywhere
    because it cannot know in advance where the small faces are. On a camera it can learn it:

    * every ``keyframe_interval``-th frame of a camera (and its first, and after a size change)
      runs every crop; each face it finds marks the tiles of every level that face *needs to
      be found at all* (it is narrower than ``tiny_face`` times the next coarser level's crop
      side) and that hold its centre. A marked tile runs on every frame for the next ``scale_memory``
      keyframe intervals: this is where small faces are, on this camera (far field, a doorway),
      and a new one walking in is found at once. Tiles where only large faces (or none) were
      seen stop running until a keyframe finds a small face there;
    * the whole-frame level always runs (large faces, any time); the close-up crop (faces
      filling most of the frame) runs like a tile marked by faces of at least ``LARGE_FACE``
      of the frame's long side, and on the frame after one;
    * a small face (narrower than ``small_face`` times the next coarser level's side: the
      coarser level finds it only some of the time) found in the camera's last
      ``track_memory`` frames that no running tile of a fine enough level holds whole gets a
      square crop of its own, ``roi_factor`` times its
      size (:func:`openlfr.vision.detector.roi_tile`): a face that is followed is re-found at a
      zoom where it is easy to see, for one crop instead of a level's ten or more. Past
      ``max_rois`` such faces, the fine tiles holding them run instead.

    A frame that differs from its camera's last one by more than ``scene_change`` (mean grey
    level at 1/16 scale: a cut, a camera re-aimed) is a keyframe too. Otherwise a new small face
    outside the known small-face region waits for the next keyframe, at most
    ``keyframe_interval - 1`` frames. Frames of one camera must be given in capture order;
    the faces found are handed back with :meth:`remember` once detected.
    """

    def __init__(
        self,
        *,
        keyframe_interval: int = DEFAULT_KEYFRAME_INTERVAL,
        scale_memory: int = DEFAULT_SCALE_MEMORY,
        small_face: float = DEFAULT_SMALL_FACE,
        tiny_face: float = DEFAULT_TINY_FACE,
        roi_factor: float = DEFAULT_ROI_FACTOR,
        max_rois: int = DEFAULT_MAX_ROIS,
        track_memory: int = DEFAULT_TRACK_MEMORY,
        scene_change: float = DEFAULT_SCENE_CHANGE,
        max_cameras: int = DEFAULT_MAX_CAMERAS,
    ) -> None:
        """Set up a gate with no camera seen yet.

        Args:
            keyframe_interval: every this-many frames of a camera run every crop (>= 1; 1
                turns the gate into a no-op).
            scene_change: mean grey-level change (at 1/16 scale) that makes a frame a keyframe,
                in (0, 255]; 255 never does.
            scale_memory: keyframe intervals a tile keeps running after a small face (>= 1).
            small_face: face width, as a fraction of a level's crop side, below which a
                followed face is re-found with a crop of its own, in (0, 1].
            tiny_face: face width, as a fraction of a level's crop side, below which the finer
                level's tiles where keyframes found it keep running, in (0, small_face].
            roi_factor: side of a followed face's own crop in face sizes, in [2, 16].
            max_rois: most followed faces with a crop of their own per frame (>= 0).
            track_memory: frames whose faces are followed (>= 0; 0 follows none).
            max_cameras: cameras whose state is kept (>= 1).

        Raises:
            ValueError: an argument out of range, naming it.
        """
        checks = {
            "keyframe_interval": keyframe_interval >= 1,
            "scale_memory": scale_memory >= 1,
            "small_face": 0 < small_face <= 1,
            "tiny_face": 0 < tiny_face <= small_face,
            "roi_factor": 2 <= roi_factor <= 16,
            "max_rois": max_rois >= 0,
            "track_memory": track_memory >= 0,
            "scene_change": 0 < scene_change <= 255,
            "max_cameras": max_cameras >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            values = {"keyframe_interval": keyframe_interval, "scale_memory": scale_memory,
                      "small_face": small_face, "tiny_face": tiny_face, "roi_factor": roi_factor, "max_rois": max_rois,
                      "track_memory": track_memory, "scene_change": scene_change, "max_cameras": max_cameras}
            raise ValueError("PyramidGate: out of range: " + ", ".join(f"{n}={values[n]}" for n in bad))
        self.keyframe_interval = int(keyframe_interval)
        self.scale_memory = int(scale_memory)
        self.small_face = float(small_face)
        self.tiny_face = float(tiny_face)
        self.roi_factor = float(roi_factor)
        self.max_rois = int(max_rois)
        self.track_memory = int(track_memory)
        self.scene_change = float(scene_change)
        self.max_cameras = int(max_cameras)
        self._cameras: OrderedDict[str, _PyramidState] = OrderedDict()
        self._tiles: dict[str, list[Tile]] = {}

    def plan(self, camera_id: str, image: np.ndarray, tiles: Sequence[Tile], *, input_size: int) -> GatePlan:
        """The crops to run on this frame of ``camera_id``; updates the camera's state.

        Args:
            camera_id: the camera the frame comes from.
            image: the frame (only its size is used).
            tiles: the detector's crops for this frame (``FaceDetector.tiles_for``).
            input_size: the detector's input side (``FaceDetector.input_size``), the smallest
                crop of a followed face.
        """
        height, width = image.shape[:2]
        thumb = _thumbnail(image)
        state = self._cameras.get(camera_id)
        if state is None or state.size != (width, height) or len(state.active_until) != len(tiles):
            state = _PyramidState(size=(width, height), active_until=np.zeros(len(tiles), np.int64))
            self._cameras[camera_id] = state
            while len(self._cameras) > self.max_cameras:
                gone, _ = self._cameras.popitem(last=False)
                self._tiles.pop(gone, None)
            keyframe = True
        else:
            self._cameras.move_to_end(camera_id)
            keyframe = state.frames_seen % self.keyframe_interval == 0 or (
                state.thumb is not None
                and float(cv2.absdiff(state.thumb, thumb).mean()) > self.scene_change
            )
            if keyframe:
                state.frames_seen = 0  # the next keyframe_interval counts from here
        state.thumb = thumb
        state.frames_seen += 1
        state.last_was_keyframe = keyframe
        self._tiles[camera_id] = list(tiles)
        if keyframe:
            state.keyframes_seen += 1
            return GatePlan(np.ones(len(tiles), bool))
        levels = np.array([t.level for t in tiles])
        mask = (levels == 0) | (state.active_until >= state.keyframes_seen)
        reach = _coarser_sides(tiles)
        followed = _recent_boxes(state.faces)
        if any(_is_large(box, width, height) for box in followed):
            mask |= levels == CLOSE_UP_LEVEL
        extra: list[Tile] = []
        spill: list[np.ndarray] = []
        for box in followed:
            need = _needed_level(box, reach, self.small_face)
            if need <= 0 or _held_whole(box, tiles, mask, need):
                continue
            if len(extra) < self.max_rois:
                extra.append(roi_tile(box, frame_width=width, frame_height=height, input_size=input_size,
                                      factor=self.roi_factor, min_side=input_size))
            else:
                spill.append(box)
        for box in spill:
            need = _needed_level(box, reach, self.small_face)
            for k, tile in enumerate(tiles):
                if tile.level >= need and _touches_any(box[None, :], tile):
                    mask[k] = True
        return GatePlan(mask, tuple(extra))

    def remember(self, camera_id: str, boxes: np.ndarray) -> None:
        """Record the face boxes (``(n, 4)`` frame pixels) found in the camera's latest frame."""
        state = self._cameras.get(camera_id)
        if state is None:
            return
        found = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        if self.track_memory:
            state.faces.append(found)
            del state.faces[: max(0, len(state.faces) - self.track_memory)]
        if not state.last_was_keyframe or found.shape[0] == 0:
            return
        tiles = self._tiles.get(camera_id, [])
        reach = _coarser_sides(tiles)
        until = state.keyframes_seen + self.scale_memory - 1
        width, height = state.size
        for box in found:
            if _is_large(box, width, height):
                for k, tile in enumerate(tiles):
                    if tile.level == CLOSE_UP_LEVEL:
                        state.active_until[k] = max(state.active_until[k], until)
            need = _needed_level(box, reach, self.tiny_face)
            if need <= 0:
                continue
            cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
            for k, tile in enumerate(tiles):
                if 1 <= tile.level <= need and tile.x0 <= cx < tile.x1 and tile.y0 <= cy < tile.y1:
                    state.active_until[k] = max(state.active_until[k], until)

    def forget(self, camera_id: str) -> None:
        """Drop a camera's state; its next frame is a keyframe."""
        self._cameras.pop(camera_id, None)
        self._tiles.pop(camera_id, None)

    @property
    def cameras(self) -> int:
        """Number of cameras whose state is kept."""
        return len(self._cameras)


def _is_large(box: np.ndarray, width: int, height: int) -> bool:
    return float(max(box[2] - box[0], box[3] - box[1])) >= LARGE_FACE * max(width, height)


def _thumbnail(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    size = (max(1, width // SCENE_SCALE), max(1, height // SCENE_SCALE))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _coarser_sides(tiles: Sequence[Tile]) -> dict[int, int]:
    """For each fine level L >= 1 of the plan, the crop side of level L - 1."""
    sides: dict[int, int] = {}
    for tile in tiles:
        if tile.level >= 0:
            sides[tile.level] = max(sides.get(tile.level, 0), tile.side)
    return {level: sides[level - 1] for level in sides if level >= 1 and level - 1 in sides}


def _needed_level(box: np.ndarray, coarser: dict[int, int], small_face: float) -> int:
    """The finest level a face of this size needs (0: the whole frame finds it)."""
    width = float(max(box[2] - box[0], box[3] - box[1]))
    need = 0
    for level in sorted(coarser):
        if width < small_face * coarser[level]:
            need = level
    return need


def _held_whole(box: np.ndarray, tiles: Sequence[Tile], mask: np.ndarray, need: int) -> bool:
    """Whether a running tile of level ``need`` or finer holds the box whole, clear of its edges."""
    for tile, on in zip(tiles, mask):
        if not on or tile.level < need:
            continue
        margin = 0.05 * tile.side
        if (box[0] >= tile.x0 + margin and box[1] >= tile.y0 + margin
                and box[2] <= tile.x1 - margin and box[3] <= tile.y1 - margin):
            return True
    return False


def _recent_boxes(history: Sequence[np.ndarray], iou: float = 0.3) -> list[np.ndarray]:
    """Faces of the last frames, newest first, without the older copies of one face."""
    kept: list[np.ndarray] = []
    for frame in reversed(history):
        for box in frame:
            if all(_iou(box, other) < iou for other in kept):
                kept.append(box)
    return kept


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
    iy = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
    inter = ix * iy
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0

"""The default detect gate: the detector's crops chosen per camera by face size and by what moved.

The detector's pyramid (see :mod:`openlfr.vision.detector`) runs ~23 crops of 192x192 per 720p
frame, nearly all of them fine tiles that exist only to find small faces. :class:`PyramidGate`
learns, per camera, where small faces are and follows the faces it has found with crops of
their own; its still-scene rules (below) stop spending crops on what has not changed since
the detector last looked: a poster, a face-like pattern in the background, a person standing
still.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from openlfr.vision.detector import CLOSE_UP_LEVEL, Tile, roi_tile
from openlfr.vision.gating import DEFAULT_KEYFRAME_INTERVAL, DEFAULT_MAX_CAMERAS, _touches_any

logger = logging.getLogger(__name__)

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

#: Pixels of the full frame per cell of the still-scene motion grid (a 40 px face spans 5 cells).
STILL_SCALE = 8

#: Default grey-level change of a motion-grid cell (0..255, after the area downscale, which
#: averages 64 pixels and so keeps JPEG and sensor noise well below it) that counts as a change.
DEFAULT_STILL_THRESHOLD = 20

#: Default: periodic keyframes in a row that run only the fine tiles where the frame changed
#: since the camera's last keyframe; the next one runs every crop.
DEFAULT_STILL_KEYFRAMES = 2

#: Default: a followed face whose surroundings did not change since the frame before gets its
#: own crop on every this-many-th frame only (the pixels the detector would see are the ones it
#: saw: a new look gives the same face, the same vector).
DEFAULT_STILL_REFRESH = 4

#: Growth of a face box on each side, as a fraction of its size, when asking whether it moved.
STILL_MARGIN = 0.25


@dataclass(frozen=True, slots=True)
class GatePlan:
    """What to run on one frame: which of the detector's crops, and crops of the gate's own."""

    mask: np.ndarray
    extra: tuple[Tile, ...] = ()

    @property
    def crops(self) -> int:
        """Crops the detector runs for this frame."""
        return int(self.mask.sum()) + len(self.extra)


#: Frames of a camera planned and not yet remembered that are kept (a bound: the detect stage
#: remembers every frame it planned, in order, once its batch is detected).
MAX_PLANNED = 256


@dataclass(frozen=True, slots=True)
class _Planned:
    """What :meth:`PyramidGate.remember` needs of the plan of one frame: several frames of a
    camera may be planned before the first is remembered (a batch detected in one call)."""

    #: The frame's keyframe number, or None when it was not a keyframe.
    keyframe_no: int | None = None
    #: Cells changed since the keyframe before (keyframes; None: unknown, all count as changed).
    changed: np.ndarray | None = None
    #: Still followed faces left without a crop on this frame: carried as found.
    carried: tuple[np.ndarray, ...] = ()
    #: The frame's motion grid.
    grid: np.ndarray | None = None


@dataclass(slots=True)
class _PyramidState:
    size: tuple[int, int]
    frames_seen: int = 0
    keyframes_seen: int = 0
    #: Keyframes in a row that ran only where the frame changed.
    still_keyframes_run: int = 0
    #: Per crop of the detector's plan: the keyframe count up to which it keeps running.
    active_until: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    #: Face boxes of the camera's last frames, oldest first.
    faces: list[np.ndarray] = field(default_factory=list)
    #: A small grey copy of the camera's last frame (scene-change test).
    thumb: np.ndarray | None = None
    #: The motion grid of the camera's last keyframe, and of the last frame whose faces were
    #: remembered (where the followed faces were seen).
    keyframe_grid: np.ndarray | None = None
    faces_grid: np.ndarray | None = None
    #: Still faces left without a crop of their own on the latest frames, with how many frames
    #: in a row; they stay followed (the gate carries them into the faces of the frame).
    carried: list[tuple[np.ndarray, int]] = field(default_factory=list)
    #: The frames planned and not yet remembered, oldest first.
    planned: deque[_Planned] = field(default_factory=lambda: deque(maxlen=MAX_PLANNED))


class PyramidGate:
    """Per-camera selection of the detector's crops by face size: fine tiles only where small
    faces can be, and a crop of its own around each small face already being followed.

    The detector's pyramid runs every level everywhere because it cannot know in advance where
    the small faces are. On a camera it can learn it:

    * every ``keyframe_interval``-th frame of a camera (and its first, and after a size change)
      is a keyframe; each face it finds marks the tiles of every level that face *needs to be
      found at all* (it is narrower than ``tiny_face`` times the next coarser level's crop side)
      and that hold its centre. A marked tile runs on every frame for the next ``scale_memory``
      keyframe intervals: this is where small faces are, on this camera (far field, a doorway),
      and a new one walking in is found at once. Tiles where only large faces (or none) were
      seen stop running until a keyframe finds a small face there;
    * the whole-frame level always runs (large faces, any time); the close-up crop (faces
      filling most of the frame) runs like a tile marked by faces of at least ``LARGE_FACE``
      of the frame's long side, and on the frame after one;
    * a small face (narrower than ``small_face`` times the next coarser level's side: the
      coarser level finds it only some of the time) found in the camera's last
      ``track_memory`` frames that no running tile of a fine enough level holds whole gets a
      square crop of its own, ``roi_factor`` times its size
      (:func:`openlfr.vision.detector.roi_tile`): a face that is followed is re-found at a zoom
      where it is easy to see, for one crop instead of a level's ten or more. Past
      ``max_rois`` such faces, the fine tiles holding them run instead.

    Still-scene rules (a grey motion grid at 1/8 scale, a cell changed when it differs by more
    than ``still_threshold``):

    * a periodic keyframe runs the fine tiles only where the frame changed since the camera's
      last keyframe (a new face has to come from somewhere); after ``still_keyframes`` such
      keyframes in a row the next one runs every crop, so a face the detector missed on a
      still part of the scene is looked for again within ``(still_keyframes + 1) *
      keyframe_interval`` frames. 0 makes every keyframe run everything;
    * a face found on a keyframe marks fine tiles only if its box changed since the keyframe
      before (a new face that needs them): a face-like pattern in the background does not keep
      a level's tiles running. With ``still_keyframes=0`` this rule is off too (keyframes
      behave as before the still-scene rules);
    * a followed face whose surroundings did not change since the frame before gets its own
      crop only on every ``still_refresh``-th frame, and is carried as found on the others, so
      it stays followed and its track stays open. 1 gives every followed face a crop on every
      frame.

    A frame that differs from its camera's last one by more than ``scene_change`` (mean grey
    level at 1/16 scale: a cut, a camera re-aimed) is a keyframe that runs everything. Otherwise
    a new small face outside the known small-face region waits for the next keyframe, at most
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
        still_keyframes: int = DEFAULT_STILL_KEYFRAMES,
        still_refresh: int = DEFAULT_STILL_REFRESH,
        still_threshold: int = DEFAULT_STILL_THRESHOLD,
    ) -> None:
        """Set up a gate with no camera seen yet.

        Args:
            keyframe_interval: every this-many frames of a camera is a keyframe (>= 1; 1 with
                ``still_keyframes=0`` turns the gate into a no-op).
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
            still_keyframes: periodic keyframes in a row that run fine tiles only where the
                frame changed (>= 0; 0: every keyframe runs every crop and every small face it
                finds marks its tiles, changed or not).
            still_refresh: a still followed face gets its own crop every this-many frames (>= 1;
                1: every frame).
            still_threshold: grey-level change of a motion-grid cell that counts, 1..255.

        Raises:
            ValueError: an argument out of range, naming it.
        """
        values = {"keyframe_interval": keyframe_interval, "scale_memory": scale_memory,
                  "small_face": small_face, "tiny_face": tiny_face, "roi_factor": roi_factor,
                  "max_rois": max_rois, "track_memory": track_memory, "scene_change": scene_change,
                  "max_cameras": max_cameras, "still_keyframes": still_keyframes,
                  "still_refresh": still_refresh, "still_threshold": still_threshold}
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
            "still_keyframes": still_keyframes >= 0,
            "still_refresh": still_refresh >= 1,
            "still_threshold": 1 <= still_threshold <= 255,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
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
        self.still_keyframes = int(still_keyframes)
        self.still_refresh = int(still_refresh)
        self.still_threshold = int(still_threshold)
        self._cameras: OrderedDict[str, _PyramidState] = OrderedDict()
        self._tiles: dict[str, list[Tile]] = {}

    def plan(self, camera_id: str, image: np.ndarray, tiles: Sequence[Tile], *, input_size: int) -> GatePlan:
        """The crops to run on this frame of ``camera_id``; updates the camera's state.

        Args:
            camera_id: the camera the frame comes from.
            image: the frame.
            tiles: the detector's crops for this frame (``FaceDetector.tiles_for``).
            input_size: the input side of the model that runs crops around followed faces
                (``FaceDetector.follow_input_size``), the smallest crop of a followed face.
        """
        height, width = image.shape[:2]
        grid = _motion_grid(image)
        thumb = cv2.resize(grid, (max(1, width // SCENE_SCALE), max(1, height // SCENE_SCALE)),
                           interpolation=cv2.INTER_AREA)
        state = self._cameras.get(camera_id)
        full = fresh = False
        if state is None or state.size != (width, height) or len(state.active_until) != len(tiles):
            state = _PyramidState(size=(width, height), active_until=np.zeros(len(tiles), np.int64))
            self._cameras[camera_id] = state
            while len(self._cameras) > self.max_cameras:
                gone, _ = self._cameras.popitem(last=False)
                self._tiles.pop(gone, None)
            keyframe = full = fresh = True
        else:
            self._cameras.move_to_end(camera_id)
            cut = state.thumb is not None and float(cv2.absdiff(state.thumb, thumb).mean()) > self.scene_change
            keyframe = full = fresh = cut
            if not keyframe and state.frames_seen % self.keyframe_interval == 0:
                keyframe = True
                full = state.still_keyframes_run >= self.still_keyframes
            if keyframe:
                state.frames_seen = 0  # the next keyframe_interval counts from here
        state.thumb = thumb
        state.frames_seen += 1
        self._tiles[camera_id] = list(tiles)
        levels = np.array([t.level for t in tiles])
        if keyframe:
            state.keyframes_seen += 1
            changed = None if fresh or state.keyframe_grid is None else self._changed(state.keyframe_grid, grid)
            state.keyframe_grid = grid
            state.carried = []
            state.planned.append(_Planned(keyframe_no=state.keyframes_seen, changed=changed, grid=grid))
            if full or changed is None:
                state.still_keyframes_run = 0
                return GatePlan(np.ones(len(tiles), bool))
            state.still_keyframes_run += 1
            mask = np.array([t.level <= 0 or _touches_cells(changed, _tile_box(t)) for t in tiles])
            return GatePlan(mask | (state.active_until >= state.keyframes_seen))
        mask = (levels == 0) | (state.active_until >= state.keyframes_seen)
        reach = _coarser_sides(tiles)
        carried_before = state.carried
        followed = _recent_boxes([*state.faces, *([np.stack([b for b, _ in carried_before])] if carried_before else [])])
        if any(_is_large(box, width, height) for box in followed):
            mask |= levels == CLOSE_UP_LEVEL
        # Changed since the frame the followed faces were last seen in (the frame before, unless
        # several frames of the camera are planned before their faces are remembered).
        moved = None if state.faces_grid is None else self._changed(state.faces_grid, grid)
        extra: list[Tile] = []
        spill: list[np.ndarray] = []
        carried: list[tuple[np.ndarray, int]] = []
        for box in followed:
            need = _needed_level(box, reach, self.small_face)
            if need <= 0 or _held_whole(box, tiles, mask, need):
                continue
            if moved is not None and self.still_refresh > 1 and not _touches_cells(moved, _grown(box)):
                times = 1 + max((n for b, n in carried_before if _iou(b, box) >= 0.5), default=0)
                if times < self.still_refresh:
                    carried.append((box, times))
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
        state.carried = carried
        state.planned.append(_Planned(carried=tuple(box for box, _ in carried), grid=grid))
        return GatePlan(mask, tuple(extra))

    def remember(self, camera_id: str, boxes: np.ndarray) -> None:
        """Record the face boxes (``(n, 4)`` frame pixels) found in the oldest frame of the camera
        planned and not yet remembered (frames are remembered in the order they were planned)."""
        state = self._cameras.get(camera_id)
        if state is None:
            return
        planned = state.planned.popleft() if state.planned else _Planned()
        if planned.grid is not None:
            state.faces_grid = planned.grid
        found = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        if self.track_memory:
            still = [b for b in planned.carried if all(_iou(b, f) < 0.3 for f in found)]
            state.faces.append(np.concatenate([found, np.asarray(still, np.float32).reshape(-1, 4)]))
            del state.faces[: max(0, len(state.faces) - self.track_memory)]
        if planned.keyframe_no is None or found.shape[0] == 0:
            return
        tiles = self._tiles.get(camera_id, [])
        reach = _coarser_sides(tiles)
        until = planned.keyframe_no + self.scale_memory - 1
        width, height = state.size
        changed = planned.changed if self.still_keyframes else None
        for box in found:
            if _is_large(box, width, height):
                for k, tile in enumerate(tiles):
                    if tile.level == CLOSE_UP_LEVEL:
                        state.active_until[k] = max(state.active_until[k], until)
            need = _needed_level(box, reach, self.tiny_face)
            if need <= 0:
                continue
            if changed is not None and not _touches_cells(changed, _grown(box)):
                continue  # there since the keyframe before, unchanged: not a new small face
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

    def _changed(self, before: np.ndarray, now: np.ndarray) -> np.ndarray:
        """Cells of the motion grid that changed by more than ``still_threshold``, lone cells
        (noise, shimmer) dropped, grown by one cell (a face's edge moves first)."""
        changed = (cv2.absdiff(before, now) > self.still_threshold).astype(np.uint8)
        changed = cv2.morphologyEx(changed, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
        if changed.any():
            changed = cv2.dilate(changed, np.ones((3, 3), np.uint8))
        return changed.astype(bool)


def _motion_grid(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    size = (max(1, width // STILL_SCALE), max(1, height // STILL_SCALE))
    return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)


def _tile_box(tile: Tile) -> np.ndarray:
    return np.array([tile.x0, tile.y0, tile.x1, tile.y1], np.float32)


def _grown(box: np.ndarray) -> np.ndarray:
    grow = np.maximum(box[2:] - box[:2], 0) * STILL_MARGIN
    return np.concatenate([box[:2] - grow, box[2:] + grow])


def _touches_cells(cells: np.ndarray, box: np.ndarray) -> bool:
    """Whether any set cell of the motion grid lies in ``box`` (frame pixels)."""
    s = STILL_SCALE
    x0, y0 = max(0, int(box[0]) // s), max(0, int(box[1]) // s)
    x1, y1 = max(0, -(-int(np.ceil(box[2])) // s)), max(0, -(-int(np.ceil(box[3])) // s))
    return bool(cells[y0:y1, x0:x1].any())


def _is_large(box: np.ndarray, width: int, height: int) -> bool:
    return float(max(box[2] - box[0], box[3] - box[1])) >= LARGE_FACE * max(width, height)


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

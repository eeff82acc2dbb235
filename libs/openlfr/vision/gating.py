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

The default gate, :class:`openlfr.vision.pyramid_gate.PyramidGate`, selects by face size
instead; it uses this module's motion grid for its still-scene rules.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from openlfr.vision.detector import Tile

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

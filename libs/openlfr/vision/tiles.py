"""The crops a detector runs on a frame: pyramid tiles, the close-up crop, crops around followed
faces, and how each is letterboxed into the model's input.

Split from :mod:`openlfr.vision.detector` (which re-exports these names); the detector's
docstring says why it tiles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Detections of the close-up crop smaller than this fraction of the frame's long side are
#: dropped: at half scale the model hallucinates a few large low-score boxes on busy scenes,
#: and faces that small are the plain whole-frame crop's job anyway.
CLOSE_UP_MIN_FACE = 0.3

#: ``Tile.level`` of the close-up crop (the whole frame shrunk into the middle of the input).
CLOSE_UP_LEVEL = -1

@dataclass(frozen=True, slots=True)
class Tile:
    """One crop of a frame and where it sits in the model input after letterboxing.

    Attributes:
        level: index of the pyramid level (the ``tile_grids`` entry) it belongs to.
        x0, y0, x1, y1: the crop in frame pixels. Tiles are square except where the frame is
            smaller than the tile (the whole-frame level, small images).
        width, height: the crop's size once resized into the input square.
        scale_x, scale_y: input pixels per frame pixel (``width / (x1 - x0)``, ...).
        pad_x, pad_y: letterbox margins in input pixels (the resized crop is centred).
        frame_width, frame_height: size of the frame the crop was cut from.
        min_face: detections from this crop whose box's longer side is below this many frame
            pixels are dropped (used by the close-up crop).
    """

    level: int
    x0: int
    y0: int
    x1: int
    y1: int
    width: int
    height: int
    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    frame_width: int
    frame_height: int
    min_face: float = 0.0

    @property
    def side(self) -> int:
        """The longer side of the crop in frame pixels."""
        return max(self.x1 - self.x0, self.y1 - self.y0)


def _axis_positions(length: int, tile: int, overlap: float) -> list[int]:
    if tile >= length:
        return [0]
    step = tile * (1.0 - overlap)
    # The slack keeps a rounding hair from adding a whole row of tiles (overlap then shrinks
    # by at most a tenth of a step), but never so far that neighbours stop touching.
    slack = math.ceil((length - tile) / step - 0.1) + 1
    touching = math.ceil((length - tile) / tile - 1e-9) + 1
    count = max(2, slack, touching)
    return [round(v) for v in np.linspace(0, length - tile, count)]


def plan_tiles(
    width: int,
    height: int,
    *,
    input_size: int,
    grids: Sequence[tuple[int, int]],
    overlap: float,
    min_tile_px: int,
    close_up_margin: float = 0.0,
) -> list[Tile]:
    """The crops of one frame: for each grid level, overlapping square tiles covering it.

    A grid ``(n_long, n_short)`` asks for that many tiles along the frame's long and short
    side (so the same setting suits landscape and portrait frames). The tile side is the
    smallest square that covers the frame with those counts and the given overlap, but never
    below ``min_tile_px`` (a smaller tile would only be upscaled); the counts are then
    recomputed for that side. A level whose tiles repeat an earlier level's is skipped. With
    ``close_up_margin`` > 0 one more crop, at level -1, shows the whole frame with that margin
    of blank on each side.
    """
    tiles: list[Tile] = []
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    long_side, short_side = max(width, height), min(width, height)
    for level, (n_long, n_short) in enumerate(grids):
        along_long = long_side / (n_long - (n_long - 1) * overlap)
        along_short = short_side / (n_short - (n_short - 1) * overlap)
        side = max(along_long, along_short, float(min_tile_px))
        side = min(int(math.ceil(side)), long_side)
        xs = _axis_positions(width, side, overlap)
        ys = _axis_positions(height, side, overlap)
        key = (side, tuple(xs), tuple(ys))
        if key in seen:
            continue
        seen.add(key)
        for y0 in ys:
            for x0 in xs:
                x1, y1 = min(x0 + side, width), min(y0 + side, height)
                tiles.append(_tile(level, (x0, y0, x1, y1), (width, height), input_size))
    if close_up_margin > 0:
        tiles.append(
            _tile(
                CLOSE_UP_LEVEL,
                (0, 0, width, height),
                (width, height),
                input_size,
                margin=close_up_margin,
                min_face=CLOSE_UP_MIN_FACE * long_side,
            )
        )
    return tiles


def _tile(
    level: int,
    box: tuple[int, int, int, int],
    frame: tuple[int, int],
    input_size: int,
    *,
    margin: float = 0.0,
    min_face: float = 0.0,
) -> Tile:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    scale = input_size / (max(w, h) * (1.0 + 2.0 * margin))
    rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
    return Tile(
        level=level,
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
        width=rw,
        height=rh,
        scale_x=rw / w,
        scale_y=rh / h,
        pad_x=(input_size - rw) // 2,
        pad_y=(input_size - rh) // 2,
        frame_width=frame[0],
        frame_height=frame[1],
        min_face=min_face,
    )


#: ``Tile.level`` of a region-of-interest crop (:func:`roi_tile`).
ROI_LEVEL = -2


def roi_tile(
    box: Sequence[float], *, frame_width: int, frame_height: int, input_size: int, factor: float, min_side: int
) -> Tile:
    """A square crop centred on ``box`` (``[x1, y1, x2, y2]`` frame pixels), ``factor`` times its
    longer side (at least ``min_side``), moved inside the frame and clipped to it.

    Used to re-find a face that is being followed at a zoom where it is easy to see, without
    running the whole fine level of the pyramid (see :class:`openlfr.vision.pyramid_gate.PyramidGate`).

    Raises:
        ValueError: the box is empty or outside the frame, or ``factor``/``min_side`` < 1.
    """
    if factor < 1 or min_side < 1:
        raise ValueError(f"roi_tile: factor and min_side must be >= 1, got {factor}, {min_side}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (x2 > x1 and y2 > y1) or x2 <= 0 or y2 <= 0 or x1 >= frame_width or y1 >= frame_height:
        raise ValueError(f"roi_tile: box {tuple(box)} is empty or outside a {frame_width}x{frame_height} frame")
    side = int(math.ceil(max(factor * max(x2 - x1, y2 - y1), min_side)))
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    w, h = min(side, frame_width), min(side, frame_height)
    x0 = int(round(min(max(cx - w / 2.0, 0.0), frame_width - w)))
    y0 = int(round(min(max(cy - h / 2.0, 0.0), frame_height - h)))
    return _tile(ROI_LEVEL, (x0, y0, x0 + w, y0 + h), (frame_width, frame_height), input_size)


def _letterbox_into(out: np.ndarray, image: np.ndarray, tile: Tile, scaled: _ScaledFrames | None = None) -> None:
    resized = scaled.crop(tile) if scaled is not None else None
    if resized is None:
        crop = image[tile.y0 : tile.y1, tile.x0 : tile.x1]
        shrinking = tile.width < crop.shape[1] or tile.height < crop.shape[0]
        # INTER_AREA averages when shrinking (no aliasing of small faces); linear when enlarging.
        resized = cv2.resize(
            crop, (tile.width, tile.height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        )
    out[...] = 0
    out[tile.pad_y : tile.pad_y + tile.height, tile.pad_x : tile.pad_x + tile.width] = resized


class _ScaledFrames:
    """One image shrunk once per scale that several of its crops share (a pyramid level's
    tiles, the whole-frame and close-up crops), so each crop is a slice of it rather than a
    resize of its own: overlapping tiles are not resized twice, and ``INTER_AREA`` runs on
    the whole frame once per level. A smaller scale is made from the nearest larger one."""

    def __init__(self, image: np.ndarray, tiles: Sequence[Tile]) -> None:
        self.image = image
        counts: dict[float, int] = {}
        for tile in tiles:
            if tile.scale_x < 1.0 and _square_scale(tile):
                counts[tile.scale_x] = counts.get(tile.scale_x, 0) + 1
        self.shared = {scale for scale, n in counts.items() if n > 1}
        #: A lone whole-frame crop shares its scale's image with nothing, but the close-up
        #: crop (a smaller scale) is made from it cheaply.
        for tile in tiles:
            if tile.x0 == 0 and tile.y0 == 0 and tile.x1 == tile.frame_width and tile.y1 == tile.frame_height:
                if tile.scale_x < 1.0 and _square_scale(tile):
                    self.shared.add(tile.scale_x)
        self.cache: dict[float, np.ndarray] = {}

    def crop(self, tile: Tile) -> np.ndarray | None:
        """The tile's pixels at its input size, or None when its scale is not shared."""
        scale = tile.scale_x
        if scale not in self.shared or not _square_scale(tile):
            return None
        scaled = self.cache.get(scale)
        if scaled is None:
            height, width = self.image.shape[:2]
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            larger = [s for s in self.cache if s > scale]
            source = self.cache[min(larger)] if larger else self.image
            scaled = cv2.resize(source, size, interpolation=cv2.INTER_AREA)
            self.cache[scale] = scaled
        x = min(max(round(tile.x0 * scale), 0), max(scaled.shape[1] - tile.width, 0))
        y = min(max(round(tile.y0 * scale), 0), max(scaled.shape[0] - tile.height, 0))
        out = scaled[y : y + tile.height, x : x + tile.width]
        if out.shape[:2] != (tile.height, tile.width):
            return None  # rounding left the slice short: resize this crop on its own
        return out


def _square_scale(tile: Tile) -> bool:
    """Whether a crop shrinks equally along both axes (within the rounding of its size)."""
    return abs(tile.scale_x - tile.scale_y) <= 1.0 / max(tile.x1 - tile.x0, tile.y1 - tile.y0, 1) * 2


def _masked_plans(plans: list[list[Tile]], tile_masks: Sequence[np.ndarray | None]) -> list[list[Tile]]:
    if len(tile_masks) != len(plans):
        raise ValueError(f"tile_masks: expected one entry per image ({len(plans)}), got {len(tile_masks)}")
    masked: list[list[Tile]] = []
    for i, (plan, mask) in enumerate(zip(plans, tile_masks)):
        if mask is None:
            masked.append(plan)
            continue
        chosen = np.asarray(mask)
        if chosen.dtype != np.bool_ or chosen.shape != (len(plan),):
            raise ValueError(
                f"tile_masks[{i}]: expected a bool array of shape ({len(plan)},), "
                f"got {chosen.dtype} {chosen.shape}"
            )
        masked.append([tile for tile, keep in zip(plan, chosen) if keep])
    return masked


def _extended_plans(
    plans: list[list[Tile]], extra_tiles: Sequence[Sequence[Tile]], images: Sequence[np.ndarray]
) -> list[list[Tile]]:
    if len(extra_tiles) != len(plans):
        raise ValueError(f"extra_tiles: expected one entry per image ({len(plans)}), got {len(extra_tiles)}")
    out: list[list[Tile]] = []
    for i, (plan, extra) in enumerate(zip(plans, extra_tiles)):
        height, width = images[i].shape[:2]
        for tile in extra:
            if (tile.frame_width, tile.frame_height) != (width, height) or not (
                0 <= tile.x0 < tile.x1 <= width and 0 <= tile.y0 < tile.y1 <= height
            ):
                raise ValueError(
                    f"extra_tiles[{i}]: crop ({tile.x0}, {tile.y0}, {tile.x1}, {tile.y1}) of a "
                    f"{tile.frame_width}x{tile.frame_height} frame does not fit image {width}x{height}"
                )
        out.append([*plan, *extra])
    return out

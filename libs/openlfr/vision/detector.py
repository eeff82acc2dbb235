"""BlazeFace face detection: letterbox, tiling, anchor decoding and weighted NMS, in numpy.

The model itself runs on an :class:`~openlfr.inference.base.InferenceBackend`, so the local
onnxruntime and Triton backends give the same detections for the same frames.

Small faces: the full-range model sees a 192x192 square, so a 1080p frame letterboxed whole is
shrunk ten times and a 40 px face becomes 4 px, below what the model can find. The detector
therefore runs a small pyramid: the whole frame, plus overlapping square tiles at one or more
finer scales (``tile_grids``). All crops of all images go to the backend as one batch
(chunked at ``max_batch``); the detections are mapped back to frame pixels and merged by
MediaPipe's weighted NMS. A face cut by an interior tile edge is dropped when another crop sees
it whole, so the merged box is not pulled towards a half-face.

Large faces: the model also misses faces that fill most of its input (aligned chips, close-ups),
so one more crop shows the whole frame shrunk into the middle of the input; only its large
detections are kept (:data:`CLOSE_UP_MARGIN`, :data:`CLOSE_UP_MIN_FACE`).

Anchor generation, decoding and NMS follow MediaPipe's ``SsdAnchorsCalculator``,
``TensorsToDetectionsCalculator`` and ``NonMaxSuppressionCalculator`` (weighted algorithm,
IoU overlap) with the options of ``face_detection_{full,short}_range_common.pbtxt``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openlfr.inference.base import InferenceBackend
from openlfr.inference.exceptions import ModelMismatchError
from openlfr.models.specs import BLAZEFACE_FULL, BLAZEFACE_SHORT, ModelSpec
from openlfr.vision.detections import NUM_KEYPOINTS, Detections
from openlfr.vision.exceptions import ImageError
from openlfr.vision.images import to_rgb
from openlfr.vision.tiles import (  # re-exported: the tiles were defined here before
    CLOSE_UP_LEVEL,
    CLOSE_UP_MIN_FACE,
    ROI_LEVEL,
    Tile,
    _extended_plans,
    _letterbox_into,
    _masked_plans,
    _ScaledFrames,
    plan_tiles,
    roi_tile,
)

logger = logging.getLogger(__name__)

__all__ = [
    "ANCHOR_OPTIONS", "CLOSE_UP_LEVEL", "CLOSE_UP_MARGIN", "CLOSE_UP_MIN_FACE", "DEFAULT_TILE_GRIDS", "ROI_LEVEL",
    "AnchorOptions", "FaceDetector", "Tile", "box_iou", "decode", "generate_anchors", "plan_tiles", "roi_tile",
    "sigmoid_scores", "suppress_duplicates", "weighted_nms",
]

#: Larger sides are refused: the caller decodes, and such a frame is a bug, not a photo.
MAX_IMAGE_SIDE = 16384

#: MediaPipe clips raw scores at +-100; float32 exp() overflows past ~88, so clip lower.
RAW_SCORE_CLIP = 80.0

#: A box reaching within this fraction of a tile's side of an interior tile edge counts as cut.
EDGE_MARGIN = 0.01

#: A cut box is dropped when a whole box covers this much of the smaller of the two.
CUT_COVER = 0.5

#: The full-range model misses faces that fill most of its input (aligned face chips, close-up
#: webcam frames): measured on the shared set, 429 of 499 UTKFace crops and 100 of 597 Glint
#: crops went undetected. One extra crop of the whole frame shrunk into the middle of the input,
#: with this margin of blank on each side (as a fraction of the frame's long side), finds
#: all but 2 and 0 of them.
CLOSE_UP_MARGIN = 0.5

#: Default pyramid, as (tiles along the long side, tiles along the short side) per level.
#: The full-range model finds faces from about 8% of its input's side (~15 of 192 px), so a
#: 1920x1080 frame seen whole yields faces from ~130 px; its (3, 2) tiles (~740 px square) from
#: ~50 px and its (5, 3) tiles (~480 px) from ~32 px (measured: a 36 px face is found at 9 of 10
#: random places, 44 px and up at all). 22 crops per 720p or 1080p frame, plus the close-up one.
DEFAULT_TILE_GRIDS: tuple[tuple[int, int], ...] = ((1, 1), (3, 2), (5, 3))


@dataclass(frozen=True, slots=True)
class AnchorOptions:
    """The subset of MediaPipe's ``SsdAnchorsCalculatorOptions`` BlazeFace uses.

    Both models use ``fixed_anchor_size: true``, so every anchor is 1x1 (normalised) and
    only its centre matters.
    """

    input_size: int
    strides: tuple[int, ...]
    anchor_offset: float = 0.5
    interpolated_scale_aspect_ratio: float = 1.0


#: face_detection_full_range_common.pbtxt and face_detection_short_range_common.pbtxt.
ANCHOR_OPTIONS: dict[str, AnchorOptions] = {
    BLAZEFACE_FULL.name: AnchorOptions(input_size=192, strides=(4,), interpolated_scale_aspect_ratio=0.0),
    BLAZEFACE_SHORT.name: AnchorOptions(input_size=128, strides=(8, 16, 16, 16)),
}
# The int8 models (openlfr.models.quantize) keep their fp32 model's anchors.
ANCHOR_OPTIONS |= {f"{name}_int8": options for name, options in ANCHOR_OPTIONS.items()}


def generate_anchors(options: AnchorOptions) -> np.ndarray:
    """Anchor centres, normalised to the input square, in the model's output order.

    Consecutive layers with the same stride share one feature map; each of them adds one
    anchor per cell (aspect ratio 1.0) plus one for the interpolated scale when
    ``interpolated_scale_aspect_ratio`` is 1.0 (MediaPipe's ``SsdAnchorsCalculator``).

    Returns:
        ``(A, 2)`` float32 ``(x, y)`` centres.
    """
    anchors: list[np.ndarray] = []
    strides = options.strides
    layer = 0
    while layer < len(strides):
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 2 if options.interpolated_scale_aspect_ratio == 1.0 else 1
            last += 1
        cells = math.ceil(options.input_size / strides[layer])
        centres = (np.arange(cells, dtype=np.float32) + options.anchor_offset) / cells
        ys, xs = np.meshgrid(centres, centres, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        anchors.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    return np.concatenate(anchors, axis=0).astype(np.float32)


def sigmoid_scores(raw: np.ndarray) -> np.ndarray:
    """Scores in 0..1 from raw logits, clipped first as MediaPipe does (``score_clipping_thresh``)."""
    clipped = np.clip(raw.astype(np.float32, copy=False), -RAW_SCORE_CLIP, RAW_SCORE_CLIP)
    return (1.0 / (1.0 + np.exp(-clipped))).astype(np.float32)


def decode(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode regressor rows into boxes and keypoints, normalised to the input square.

    Args:
        raw: ``(k, 16)`` rows ``[dx, dy, w, h, kp0x, kp0y, ..., kp5x, kp5y]`` in input pixels
            relative to the anchor centre (``x_scale = w_scale = input_size``).
        anchors: ``(k, 2)`` the rows' anchor centres.
        input_size: side of the model input.

    Returns:
        ``(k, 4)`` boxes ``[x1, y1, x2, y2]`` and ``(k, 6, 2)`` keypoints, both in 0..1 units.
    """
    values = raw.astype(np.float32, copy=False).reshape(-1, 2 + NUM_KEYPOINTS, 2) / np.float32(input_size)
    centre = values[:, 0] + anchors
    half = values[:, 1] / 2.0
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    keypoints = values[:, 2:] + anchors[:, None, :]
    return boxes, keypoints


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(len(a), len(b))`` intersection over union of ``[x1, y1, x2, y2]`` boxes."""
    inter = _intersection(a, b)
    area_a = _areas(a)[:, None]
    area_b = _areas(b)[None, :]
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _intersection(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def weighted_nms(
    boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, *, iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's weighted non-maximum suppression.

    Take the best remaining detection; every remaining detection whose IoU with it exceeds
    ``iou_threshold`` (itself included) is removed and blended into one, box and keypoints
    averaged with the scores as weights. The blended detection keeps the best score. Blending
    steadies boxes across the many anchors (and tiles) that fire on one face.

    Returns:
        The merged ``boxes``, ``scores`` and ``keypoints``, best score first.
    """
    order = np.argsort(-scores, kind="stable")
    boxes, scores, keypoints = boxes[order], scores[order], keypoints[order]
    out_boxes: list[np.ndarray] = []
    out_scores: list[float] = []
    out_keypoints: list[np.ndarray] = []
    remaining = np.arange(len(scores))
    while remaining.size:
        top = remaining[0]
        iou = box_iou(boxes[top : top + 1], boxes[remaining])[0]
        members = remaining[iou > iou_threshold]
        if members.size == 0:
            # A degenerate top box has IoU 0 even with itself; keep it alone.
            members = remaining[:1]
        weights = scores[members][:, None]
        total = float(weights.sum())
        out_boxes.append((boxes[members] * weights).sum(axis=0) / total)
        out_keypoints.append((keypoints[members] * weights[:, :, None]).sum(axis=0) / total)
        out_scores.append(float(scores[top]))
        remaining = np.setdiff1d(remaining, members, assume_unique=True)
        # setdiff1d sorts by index, which is score order here, so remaining[0] stays the best.
    if not out_scores:
        return boxes[:0], scores[:0], keypoints[:0]
    return (
        np.stack(out_boxes).astype(np.float32),
        np.asarray(out_scores, np.float32),
        np.stack(out_keypoints).astype(np.float32),
    )


def suppress_duplicates(boxes: np.ndarray, *, iou_threshold: float) -> np.ndarray:
    """Indices (best first) of boxes kept by greedy hard NMS; boxes must be sorted by score.

    Runs after the weighted NMS: anchors of one face from crops at different scales can form
    two clusters that each survive blending yet still overlap each other well above the
    threshold once blended.
    """
    keep: list[int] = []
    for i in range(len(boxes)):
        if keep and (box_iou(boxes[i : i + 1], boxes[keep])[0] > iou_threshold).any():
            continue
        keep.append(i)
    return np.asarray(keep, dtype=np.int64)


def _check_image(image: object, name: str) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.ndim >= 2 and max(image.shape[:2]) > MAX_IMAGE_SIDE:
        raise ImageError(
            f"{name}: image is {image.shape[1]}x{image.shape[0]}, over the limit of "
            f"{MAX_IMAGE_SIDE} px on a side"
        )
    return to_rgb(image, name=name)  # type: ignore[arg-type]  # to_rgb reports non-arrays


@dataclass(frozen=True, slots=True)
class _Model:
    """One BlazeFace model as the detector uses it: its spec, anchor options and anchors."""

    spec: ModelSpec
    options: AnchorOptions
    anchors: np.ndarray

    @classmethod
    def of(cls, spec: ModelSpec) -> _Model:
        """The model of ``spec``, checked against its anchors.

        Raises:
            ValueError: ``spec`` is not a BlazeFace model or its tensors do not match.
        """
        if spec.name not in ANCHOR_OPTIONS:
            raise ValueError(
                f"spec {spec.name!r} is not a BlazeFace model; expected one of {sorted(ANCHOR_OPTIONS)}"
            )
        options = ANCHOR_OPTIONS[spec.name]
        anchors = generate_anchors(options)
        if len(spec.inputs) != 1 or spec.inputs[0].shape != (options.input_size, options.input_size, 3):
            raise ValueError(f"spec {spec.name!r} input {spec.inputs} does not match a {options.input_size}px model")
        out_shapes = {t.name: t.shape for t in spec.outputs}
        expected = {"regressors": (len(anchors), 16), "classificators": (len(anchors), 1)}
        if out_shapes != expected:
            raise ValueError(f"spec {spec.name!r} outputs {out_shapes} do not match its {len(anchors)} anchors")
        return cls(spec, options, anchors)

    @property
    def input_size(self) -> int:
        return self.options.input_size


@dataclass(slots=True)
class _Candidates:
    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray
    cut: np.ndarray


class FaceDetector:
    """Finds faces with BlazeFace on an inference backend; pre/post-processing run here.

    The backend must already serve ``spec`` (see ``InferenceBackend.load``).
    """

    def __init__(
        self,
        *,
        backend: InferenceBackend,
        spec: ModelSpec = BLAZEFACE_FULL,
        score_threshold: float = 0.5,
        nms_iou: float = 0.3,
        min_face_px: float = 0.0,
        tiling: bool = True,
        tile_grids: Sequence[tuple[int, int]] = DEFAULT_TILE_GRIDS,
        tile_overlap: float = 0.25,
        min_tile_px: int | None = None,
        close_up_margin: float = CLOSE_UP_MARGIN,
        max_batch: int | None = None,
        follow_spec: ModelSpec | None = None,
    ) -> None:
        """Set up a detector.

        Args:
            backend: where the model runs.
            spec: ``BLAZEFACE_FULL`` (default; faces from ~8% of a crop's side up) or
                ``BLAZEFACE_SHORT`` (faces from ~15% up; selfie range, cheaper).
            score_threshold: minimum confidence, 0..1 (MediaPipe uses 0.5).
            nms_iou: IoU above which detections merge (MediaPipe uses 0.3).
            min_face_px: drop faces whose box is narrower than this, in frame pixels.
            tiling: ``False`` looks at the whole frame only (same as ``tile_grids=[(1, 1)]``);
                faces below about 8% of the frame's long side are then missed.
            tile_grids: pyramid levels as ``(tiles along the long side, along the short side)``;
                ``(1, 1)`` is the whole frame letterboxed. ``[(1, 1)]`` turns tiling off.
            tile_overlap: fraction of a tile's side shared with its neighbour, in [0, 0.9].
                Faces up to about this fraction of a tile are seen whole by some tile.
            min_tile_px: smallest tile side in frame pixels; defaults to the model input size,
                so tiles are never upscaled (small images then get fewer or no tiles).
            close_up_margin: blank margin around the extra whole-frame crop that finds faces
                filling most of the frame (see :data:`CLOSE_UP_MARGIN`); 0 leaves it out.
            max_batch: most crops per backend call; defaults to ``spec.max_batch_size``.
            follow_spec: the model for crops around followed faces (``ROI_LEVEL`` crops cut for
                its input size, :attr:`follow_input_size`): there the face fills about a quarter
                of the crop, which the short-range model (128 px, a third of the full-range
                model's CPU) finds as well; ``None`` or ``spec`` runs them on ``spec``.

        Raises:
            ValueError: an argument is out of range or ``spec`` is not a BlazeFace spec.
        """
        main = _Model.of(spec)
        follow = _Model.of(follow_spec) if follow_spec is not None and follow_spec != spec else None
        if not 0.0 <= score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
        if not 0.0 < nms_iou < 1.0:
            raise ValueError(f"nms_iou must be in (0, 1), got {nms_iou}")
        if min_face_px < 0:
            raise ValueError(f"min_face_px must be >= 0, got {min_face_px}")
        grids = tuple((int(a), int(b)) for a, b in tile_grids) if tiling else ((1, 1),)
        if not grids or any(a < 1 or b < 1 for a, b in grids):
            raise ValueError(f"tile_grids must be non-empty (long, short) counts >= 1, got {tile_grids!r}")
        if not 0.0 <= tile_overlap <= 0.9:
            raise ValueError(f"tile_overlap must be in [0, 0.9], got {tile_overlap}")
        if not 0.0 <= close_up_margin <= 2.0:
            raise ValueError(f"close_up_margin must be in [0, 2], got {close_up_margin}")
        self._main = main
        self._follow = follow
        self.options = main.options
        self.anchors = main.anchors
        self.backend = backend
        self.spec = spec
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.min_face_px = float(min_face_px)
        self.tile_grids = grids
        self.tile_overlap = float(tile_overlap)
        self.close_up_margin = float(close_up_margin)
        self.min_tile_px = int(min_tile_px if min_tile_px is not None else self.options.input_size)
        if self.min_tile_px < 1:
            raise ValueError(f"min_tile_px must be >= 1, got {min_tile_px}")
        self.max_batch = int(max_batch if max_batch is not None else spec.max_batch_size)
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")

    @property
    def input_size(self) -> int:
        """Side of the model's square input, in pixels."""
        return self.options.input_size

    @property
    def follow_input_size(self) -> int:
        """Input side of the model that runs crops around followed faces: cut them for it
        (:func:`roi_tile`'s ``input_size``)."""
        return (self._follow or self._main).input_size

    @property
    def specs(self) -> tuple[ModelSpec, ...]:
        """Every model this detector runs (the backend must serve each)."""
        return (self.spec,) if self._follow is None else (self.spec, self._follow.spec)

    def tiles_for(self, width: int, height: int) -> list[Tile]:
        """The crops this detector runs for a frame of the given size."""
        return plan_tiles(
            width,
            height,
            input_size=self.input_size,
            grids=self.tile_grids,
            overlap=self.tile_overlap,
            min_tile_px=self.min_tile_px,
            close_up_margin=self.close_up_margin,
        )

    def detect(self, image: np.ndarray) -> Detections:
        """Faces of one image.

        Args:
            image: ``HxWx3`` RGB uint8 (``HxW`` grey and ``HxWx4`` RGBA are converted).

        Raises:
            ImageError: (a ``ValueError``) empty, wrong dtype/rank/channels, or a side over
                :data:`MAX_IMAGE_SIDE`.
        """
        return self.detect_many([image])[0]

    def detect_many(
        self,
        images: Sequence[np.ndarray],
        *,
        tile_masks: Sequence[np.ndarray | None] | None = None,
        extra_tiles: Sequence[Sequence[Tile]] | None = None,
    ) -> list[Detections]:
        """Faces of several images, with every crop of every image in as few backend calls as possible.

        Args:
            images: as for :meth:`detect`.
            tile_masks: optional, one entry per image: ``None`` runs every crop of
                :meth:`tiles_for`, a ``(len(tiles_for(...)),)`` bool array runs only the crops
                marked True (see :mod:`openlfr.vision.gating`). Leaving it out runs every crop
                of every image.
            extra_tiles: optional, one sequence per image of further crops to run on it (e.g.
                :func:`roi_tile` around faces being followed); their detections are merged
                with the others'.

        Returns:
            One :class:`Detections` per image, in order, in that image's pixel coordinates.

        Raises:
            ValueError: ``tile_masks`` or ``extra_tiles`` does not have one entry per image, a
                mask does not have one entry per crop, or an extra crop was cut from a frame of
                another size.
        """
        rgb = [_check_image(img, f"image[{i}]") for i, img in enumerate(images)]
        plans = [self.tiles_for(img.shape[1], img.shape[0]) for img in rgb]
        if tile_masks is not None:
            plans = _masked_plans(plans, tile_masks)
        if extra_tiles is not None:
            plans = _extended_plans(plans, extra_tiles, rgb)
        total = sum(len(p) for p in plans)
        if total == 0:
            return [Detections.empty() for _ in rgb]
        owners: list[tuple[int, Tile]] = [(i, t) for i, plan in enumerate(plans) for t in plan]
        scaled = [_ScaledFrames(img, plan) for img, plan in zip(rgb, plans)]
        candidates: list[_Candidates | None] = [None] * total
        for model, positions in self._by_model(owners):
            size = model.input_size
            for start in range(0, len(positions), self.max_batch):
                chunk = positions[start : start + self.max_batch]
                batch = np.empty((len(chunk), size, size, 3), np.uint8)
                for slot, pos in enumerate(chunk):
                    i, tile = owners[pos]
                    _letterbox_into(batch[slot], rgb[i], tile, scaled[i])
                out = self._infer(model, batch.astype(np.float32))
                found = self._candidates(model, out["regressors"], out["classificators"][:, :, 0],
                                         [owners[pos][1] for pos in chunk])
                for pos, c in zip(chunk, found):
                    candidates[pos] = c
        results: list[Detections] = []
        start = 0
        for i, plan in enumerate(plans):
            per_image = [c for c in candidates[start : start + len(plan)] if c is not None]
            start += len(plan)
            results.append(self._merge(per_image, width=rgb[i].shape[1], height=rgb[i].shape[0]))
        return results

    def _by_model(self, owners: Sequence[tuple[int, Tile]]) -> list[tuple[_Model, list[int]]]:
        """The crops' positions grouped by the model that runs them: crops around followed faces
        cut for the follow model's input go to it, every other crop to the main model."""
        if self._follow is None:
            return [(self._main, list(range(len(owners))))]
        size = self._follow.input_size
        follow = [k for k, (_, t) in enumerate(owners) if t.level == ROI_LEVEL and max(t.width, t.height) == size]
        chosen = set(follow)
        main = [k for k in range(len(owners)) if k not in chosen]
        return [(m, ks) for m, ks in ((self._main, main), (self._follow, follow)) if ks]

    def _infer(self, model: _Model, batch: np.ndarray) -> dict[str, np.ndarray]:
        spec = model.spec
        out = self.backend.infer(spec, {spec.inputs[0].name: batch})
        n = batch.shape[0]
        for t in spec.outputs:
            value = out.get(t.name)
            if value is None or value.shape != (n, *t.shape):
                got = None if value is None else value.shape
                raise ModelMismatchError(
                    f"model {spec.name!r} output {t.name!r}: expected shape {(n, *t.shape)}, got {got}"
                )
        return out

    def _candidates(
        self, model: _Model, raw_boxes: np.ndarray, raw_scores: np.ndarray, tiles: list[Tile]
    ) -> list[_Candidates]:
        """Per crop: decoded detections above the threshold, in frame pixels, with a cut flag."""
        scores = sigmoid_scores(raw_scores)
        keep = scores >= self.score_threshold
        size = float(model.input_size)
        found: list[_Candidates] = []
        for k, tile in enumerate(tiles):
            idx = np.flatnonzero(keep[k])
            boxes, keypoints = decode(raw_boxes[k, idx], model.anchors[idx], model.input_size)
            # Input units -> crop pixels -> frame pixels.
            sx, sy = 1.0 / tile.scale_x, 1.0 / tile.scale_y
            offset = np.array([tile.x0 - tile.pad_x * sx, tile.y0 - tile.pad_y * sy], np.float32)
            factor = np.array([size * sx, size * sy], np.float32)
            keypoints = keypoints * factor + offset
            boxes = boxes * np.tile(factor, 2) + np.tile(offset, 2)
            widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            valid = (widths > 0) & (heights > 0) & (np.maximum(widths, heights) >= tile.min_face)
            boxes, keypoints = boxes[valid], keypoints[valid]
            found.append(
                _Candidates(
                    boxes=boxes,
                    scores=scores[k, idx][valid],
                    keypoints=keypoints,
                    cut=self._cut(boxes, tile),
                )
            )
        return found

    @staticmethod
    def _cut(boxes: np.ndarray, tile: Tile) -> np.ndarray:
        """Whether each box reaches an edge of the tile that lies inside the frame."""
        margin = EDGE_MARGIN * tile.side
        cut = np.zeros(len(boxes), bool)
        if tile.x0 > 0:
            cut |= boxes[:, 0] < tile.x0 + margin
        if tile.y0 > 0:
            cut |= boxes[:, 1] < tile.y0 + margin
        if tile.x1 < tile.frame_width:
            cut |= boxes[:, 2] > tile.x1 - margin
        if tile.y1 < tile.frame_height:
            cut |= boxes[:, 3] > tile.y1 - margin
        return cut

    def _merge(self, per_tile: list[_Candidates], *, width: int, height: int) -> Detections:
        if not per_tile:
            return Detections.empty()
        boxes = np.concatenate([c.boxes for c in per_tile])
        if len(boxes) == 0:
            return Detections.empty()
        scores = np.concatenate([c.scores for c in per_tile])
        keypoints = np.concatenate([c.keypoints for c in per_tile])
        cut = np.concatenate([c.cut for c in per_tile])
        if cut.any() and (~cut).any():
            # Cover of the cut box by a whole one (intersection over the smaller area): a half
            # face seen by one tile and the whole face seen by another overlap little by IoU.
            inter = _intersection(boxes[cut], boxes[~cut])
            smaller = np.minimum(_areas(boxes[cut])[:, None], _areas(boxes[~cut])[None, :])
            covered = (inter > CUT_COVER * np.maximum(smaller, 1e-6)).any(axis=1)
            drop = np.zeros(len(boxes), bool)
            drop[np.flatnonzero(cut)[covered]] = True
            boxes, scores, keypoints = boxes[~drop], scores[~drop], keypoints[~drop]
        boxes, scores, keypoints = weighted_nms(boxes, scores, keypoints, iou_threshold=self.nms_iou)
        kept = suppress_duplicates(boxes, iou_threshold=self.nms_iou)
        boxes, scores, keypoints = boxes[kept], scores[kept], keypoints[kept]
        boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
        boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
        keep = (boxes[:, 2] - boxes[:, 0] >= max(self.min_face_px, 1e-3)) & (boxes[:, 3] > boxes[:, 1])
        return Detections(boxes=boxes[keep], scores=scores[keep], keypoints=keypoints[keep])

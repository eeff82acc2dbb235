"""The one path from an image to faces with embeddings, shared by enrolment and live queries.

detect (BlazeFace, on the backend) -> 5 landmarks (dlib's shape predictor, in-process) ->
aligned 150x150 chip (dlib's face-chip transform) -> quality -> embedding (dlib ResNet, on the
backend). Enrolment and live matching must call this same code, or their vectors drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from openlfr.models.shape_predictor import ShapePredictor
from openlfr.vision import quality
from openlfr.vision.align import face_chips
from openlfr.vision.align_arcface import arcface_chips, estimate_points
from openlfr.vision.align_arcface import template as arcface_template
from openlfr.vision.detector import FaceDetector, Tile
from openlfr.vision.embedder import FaceEmbedder
from openlfr.vision.faces import Faces
from openlfr.vision.images import to_rgb

logger = logging.getLogger(__name__)

CHIP_PADDING = 0.25
#: Side of the dlib chip every face's quality is judged on (the default embedder's chip).
QUALITY_CHIP_SIZE = 150

#: (dx, dy, sw, sh): centre shift as a fraction of the BlazeFace box size, then size scales.
#: Fitted on 86 faces by benchmarks/calibrate_predictor_box.py; the landmarks' mean error
#: against those found from dlib's own boxes is 0.7% of the inter-eye distance (p90 1.1%).
PREDICTOR_BOX_FIT = (0.005, 0.02, 0.914, 0.907)


def predictor_boxes(boxes: np.ndarray) -> np.ndarray:
    """Map BlazeFace boxes to the boxes dlib's shape predictor was trained on.

    The 5-point model was trained on dlib's own detector boxes, which sit lower and are
    tighter than BlazeFace's; feeding it a box of another convention shifts the landmarks.
    The factors come from ``benchmarks/calibrate_predictor_box.py`` (a least-squares fit of
    dlib HOG boxes against BlazeFace boxes on the shared face set).
    """
    if boxes.shape[0] == 0:
        return boxes
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + PREDICTOR_BOX_FIT[0] * w
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + PREDICTOR_BOX_FIT[1] * h
    half_w = PREDICTOR_BOX_FIT[2] * w / 2
    half_h = PREDICTOR_BOX_FIT[3] * h / 2
    return np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)


class FaceAnalyzer:
    """Finds, aligns, assesses and embeds the faces of images."""

    def __init__(
        self,
        *,
        detector: FaceDetector,
        predictor: ShapePredictor,
        embedder: FaceEmbedder,
        min_face_px: float = 0.0,
        keep_chips: bool = False,
    ) -> None:
        self.detector = detector
        self.predictor = predictor
        self.embedder = embedder
        self.min_face_px = min_face_px
        self.keep_chips = keep_chips

    def analyze(self, image: np.ndarray) -> Faces:
        """Faces of one RGB image (HxW grey and HxWx4 are converted)."""
        return self.analyze_many([image])[0]

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[Faces]:
        """Faces of several images; detection and embedding run batched across them."""
        located = self.locate_many(images, keep_chips=True)
        embedded = self.embed_many(located)
        return embedded if self.keep_chips else [faces.without_chips() for faces in embedded]

    def locate_many(
        self,
        images: Sequence[np.ndarray],
        *,
        keep_chips: bool = True,
        tile_masks: Sequence[np.ndarray | None] | None = None,
        extra_tiles: Sequence[Sequence[Tile]] | None = None,
    ) -> list[Faces]:
        """Detect, place landmarks, cut chips and assess quality: everything but the embedding.

        The live pipeline's detect stage runs this; its embed stage runs ``embed_many`` on the
        chips. Together they are exactly ``analyze_many``. ``tile_masks`` and ``extra_tiles``
        are passed to :meth:`FaceDetector.detect_many` (which of each image's crops to run, all
        if left out; further crops per image).
        """
        rgb = [to_rgb(img, name=f"image[{i}]") for i, img in enumerate(images)]
        if tile_masks is None and extra_tiles is None:
            detections = self.detector.detect_many(rgb)
        else:
            detections = self.detector.detect_many(rgb, tile_masks=tile_masks, extra_tiles=extra_tiles)
        out: list[Faces] = []
        for img, det in zip(rgb, detections):
            boxes = np.asarray(det.boxes, np.float32).reshape(-1, 4)
            scores = np.asarray(det.scores, np.float32).reshape(-1)
            keep = (boxes[:, 2] - boxes[:, 0]) >= self.min_face_px
            boxes, scores = boxes[keep], scores[keep]
            if boxes.shape[0] == 0:
                out.append(Faces.empty())
                continue
            landmarks = self.predictor.predict_many(img, predictor_boxes(boxes)).astype(np.float32)
            # Quality is always judged on dlib's 150x150 chip, whatever the embedder takes, so its
            # figures (and the gates on them) mean the same with every embedder.
            dlib_chips = face_chips(img, landmarks, size=QUALITY_CHIP_SIZE, padding=CHIP_PADDING)
            q = quality.assess(boxes=boxes, scores=scores, landmarks=landmarks, chips=dlib_chips)
            chips = self._embedder_chips(img, landmarks, np.asarray(det.keypoints)[keep], dlib_chips)
            out.append(Faces(boxes=boxes, scores=scores, landmarks=landmarks, quality=q, chips=chips))
        return out if keep_chips else [faces.without_chips() for faces in out]

    def _embedder_chips(
        self, image: np.ndarray, landmarks: np.ndarray, keypoints: np.ndarray, dlib_chips: np.ndarray
    ) -> np.ndarray:
        """The faces cut as the embedder's manifest says (``alignment``)."""
        manifest = self.embedder.manifest
        align = manifest.alignment if manifest is not None else None
        if align is None or (align.kind == "dlib_chip" and align.size == QUALITY_CHIP_SIZE
                             and align.padding == CHIP_PADDING):
            if self.embedder.chip_size != QUALITY_CHIP_SIZE:
                return face_chips(image, landmarks, size=self.embedder.chip_size, padding=CHIP_PADDING)
            return dlib_chips
        if align.kind == "dlib_chip":
            return face_chips(image, landmarks, size=align.size, padding=align.padding)
        points = estimate_points(align.points, landmarks5=landmarks, keypoints6=keypoints)
        target = arcface_template(align.points, size=align.size, margin=align.margin)
        return arcface_chips(image, points, target, size=align.size)

    def embed_many(self, located: Sequence[Faces]) -> list[Faces]:
        """Attach descriptors to faces from ``locate_many`` (which must hold chips), batched."""
        size = self.embedder.chip_size
        chips = [
            f.chips if f.chips is not None else np.zeros((0, size, size, 3), np.uint8)
            for f in located
        ]
        for f, c in zip(located, chips):
            if len(f) and c.shape[0] != len(f):
                raise ValueError("embed_many needs the chips that locate_many keeps")
        embeddings = self.embedder.embed(np.concatenate(chips, axis=0))
        out: list[Faces] = []
        start = 0
        for faces in located:
            n = len(faces)
            out.append(faces.with_embeddings(embeddings[start : start + n]))
            start += n
        return out

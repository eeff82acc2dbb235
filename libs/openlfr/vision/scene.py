"""Scene crops: each face with its surroundings, for the reviewer of an alert.

The aligned chip shows the face alone; a reviewer deciding whether the camera saw the person on
the watchlist also wants the head, hair, clothes and what the person was doing. The detect stage
makes, for each face it publishes, a crop of the frame around the face: the face box enlarged
``scale`` times about its centre (a square of ``scale`` times the box's longer side), clipped to
the frame, downscaled (never up) to at most ``max_px`` on its long side, and encoded as a JPEG
at ``jpeg_quality``. A crop that comes out over ``max_bytes`` is encoded again at lower
qualities; one still over at the lowest is left out (counted), never sent oversized.

Privacy: the crop shows more of a person than the chip, and of anyone standing near them. It
travels only as far as it is needed (docs/messages.md, "Scene crops"): on the faces and
embeddings topics (1 h) with the chip, in the match stage's memory while the face's track is
open, and on into a ``Match`` only for a face that matched; the review store keeps it under the
alert's crop retention and deletes it with the chips. ``OPENLFR_SCENE_CROP=false`` turns it off.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import cv2
import numpy as np
from prometheus_client import CollectorRegistry, Counter
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr.messages.models import MAX_SCENE_JPEG_BYTES
from openlfr.prom import metrics_for

if TYPE_CHECKING:
    from openlfr.messages.models import DetectedFace

logger = logging.getLogger(__name__)

DEFAULT_SCALE = 3.0
DEFAULT_MAX_PX = 320
DEFAULT_JPEG_QUALITY = 75
DEFAULT_MAX_BYTES = 49_152
#: What a faces message must hold for one face without a scene crop (its chip, descriptor and
#: fields, the envelope): the floor of ``OPENLFR_FACES_MESSAGE_MAX_BYTES``. A scene crop's
#: base64 comes on top.
FACE_WITHOUT_SCENE_BYTES = 131_072
#: Qualities tried, after the configured one, for a crop over ``max_bytes``.
_FALLBACK_QUALITIES = (60, 45, 30)
_LOWEST_QUALITY = 30
_MIN_MAX_BYTES = 4096


def scene_box(box: Sequence[float], *, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixel rectangle ``(x1, y1, x2, y2)`` (end exclusive) of a face's scene crop.

    A square of ``scale`` times the face box's longer side, centred on the box, clipped to the
    ``width`` x ``height`` frame; at least one pixel each way.

    Raises:
        ValueError: a box that is not four finite numbers with x2 >= x1 and y2 >= y1, a scale
            below 1, or an empty frame.
    """
    if len(box) != 4 or not all(math.isfinite(float(v)) for v in box):
        raise ValueError(f"scene_box: expected 4 finite numbers, got {list(box)}")
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"scene_box: x2 < x1 or y2 < y1 in {list(box)}")
    if not scale >= 1.0:
        raise ValueError(f"scene_box: scale must be at least 1, got {scale}")
    if width < 1 or height < 1:
        raise ValueError(f"scene_box: empty frame {width}x{height}")
    half = max(x2 - x1, y2 - y1, 1.0) * scale / 2.0
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    left = min(max(int(math.floor(cx - half)), 0), width - 1)
    top = min(max(int(math.floor(cy - half)), 0), height - 1)
    right = max(min(int(math.ceil(cx + half)), width), left + 1)
    bottom = max(min(int(math.ceil(cy + half)), height), top + 1)
    return left, top, right, bottom


def fit_within(width: int, height: int, max_px: int) -> tuple[int, int]:
    """``(width, height)`` scaled down (never up) so the long side is at most ``max_px``."""
    if max(width, height) <= max_px:
        return width, height
    factor = max_px / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


class SceneCropSettings(BaseSettings):
    """Scene crops made by the detect stage (a mix-in of its settings; env ``OPENLFR_SCENE_CROP``,
    ``OPENLFR_SCENE_CROP_SCALE``, ``_MAX_PX``, ``_JPEG_QUALITY``, ``_MAX_BYTES``)."""

    model_config = SettingsConfigDict(env_prefix="OPENLFR_", frozen=True, extra="ignore")

    #: Make a scene crop of each face (false: faces carry only their chip).
    scene_crop: bool = True
    #: The crop's side as a multiple of the face box's longer side.
    scene_crop_scale: float = Field(default=DEFAULT_SCALE, ge=1.0, le=8.0)
    #: The crop's long side at most, in pixels (downscaled, never upscaled).
    scene_crop_max_px: int = Field(default=DEFAULT_MAX_PX, ge=64, le=1024)
    #: JPEG quality of the crop (lower qualities are tried for one over the byte limit).
    scene_crop_jpeg_quality: int = Field(default=DEFAULT_JPEG_QUALITY, ge=_LOWEST_QUALITY, le=95)
    #: Most bytes of one crop; a crop over it at the lowest quality is left out (counted).
    scene_crop_max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=_MIN_MAX_BYTES, le=MAX_SCENE_JPEG_BYTES)

    @model_validator(mode="after")
    def _fits_a_faces_message(self) -> SceneCropSettings:
        budget = getattr(self, "faces_message_max_bytes", None)  # where the stage's message budget is set
        if not self.scene_crop or budget is None:
            return self
        need = FACE_WITHOUT_SCENE_BYTES + 4 * math.ceil(self.scene_crop_max_bytes / 3)
        if need > budget:
            most = (budget - FACE_WITHOUT_SCENE_BYTES) * 3 // 4
            room = f"give at most {most}, " if most >= _MIN_MAX_BYTES else ""
            raise ValueError(
                f"OPENLFR_SCENE_CROP_MAX_BYTES={self.scene_crop_max_bytes} leaves no room for one face with its "
                f"crop under OPENLFR_FACES_MESSAGE_MAX_BYTES={budget} (needs {need}): {room}raise the budget, "
                "or set OPENLFR_SCENE_CROP=false"
            )
        return self

    def scene_cropper(self, *, registry: CollectorRegistry | None = None) -> SceneCropper | None:
        """The cropper these settings describe, or None when scene crops are off."""
        if not self.scene_crop:
            return None
        return SceneCropper(scale=self.scene_crop_scale, max_px=self.scene_crop_max_px,
                            jpeg_quality=self.scene_crop_jpeg_quality, max_bytes=self.scene_crop_max_bytes,
                            registry=registry)


class _SceneMetrics:
    """``openlfr_detect_scene_crops_total{outcome}``, one per registry (``metrics_for``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.crops = Counter(
            "openlfr_detect_scene_crops_total",
            "Scene crops of faces: outcome=made, or too_large (over OPENLFR_SCENE_CROP_MAX_BYTES at the "
            "lowest quality: the face went out without one).",
            ["outcome"],
            registry=registry,
        )


class SceneCropper:
    """Makes the scene crops of a frame's faces.

    Args:
        scale: the crop's side over the face box's longer side (at least 1).
        max_px: the crop's long side at most (16..4096).
        jpeg_quality: the first JPEG quality tried (30..95).
        max_bytes: most bytes of one crop (at most the schema's ``MAX_SCENE_JPEG_BYTES``).
        registry: where ``openlfr_detect_scene_crops_total`` is registered (default registry if None).

    Raises:
        ValueError: an argument out of range, naming it.
    """

    def __init__(
        self,
        *,
        scale: float = DEFAULT_SCALE,
        max_px: int = DEFAULT_MAX_PX,
        jpeg_quality: int = DEFAULT_JPEG_QUALITY,
        max_bytes: int = DEFAULT_MAX_BYTES,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if not (math.isfinite(scale) and scale >= 1.0):
            raise ValueError(f"SceneCropper.scale must be at least 1, got {scale}")
        if not 16 <= max_px <= 4096:
            raise ValueError(f"SceneCropper.max_px must be in 16..4096, got {max_px}")
        if not _LOWEST_QUALITY <= jpeg_quality <= 95:
            raise ValueError(f"SceneCropper.jpeg_quality must be in {_LOWEST_QUALITY}..95, got {jpeg_quality}")
        if not 1024 <= max_bytes <= MAX_SCENE_JPEG_BYTES:
            raise ValueError(f"SceneCropper.max_bytes must be in 1024..{MAX_SCENE_JPEG_BYTES}, got {max_bytes}")
        self.scale = float(scale)
        self.max_px = int(max_px)
        self.jpeg_quality = int(jpeg_quality)
        self.max_bytes = int(max_bytes)
        self._qualities = (self.jpeg_quality, *(q for q in _FALLBACK_QUALITIES if q < self.jpeg_quality))
        self._crops = metrics_for(_SceneMetrics, registry).crops

    def crop(self, image: np.ndarray, box: Sequence[float]) -> bytes | None:
        """The JPEG of ``box``'s scene in ``image`` (RGB uint8, HxWx3), or None when even the
        lowest quality is over ``max_bytes`` (counted ``too_large``).

        Raises:
            ValueError: not an HxWx3 uint8 image, or a bad box.
        """
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"SceneCropper.crop: expected an HxWx3 uint8 image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        x1, y1, x2, y2 = scene_box(box, scale=self.scale, width=width, height=height)
        region = image[y1:y2, x1:x2]
        size = fit_within(x2 - x1, y2 - y1, self.max_px)
        if size != (x2 - x1, y2 - y1):
            region = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        bgr = cv2.cvtColor(region, cv2.COLOR_RGB2BGR)
        for quality in self._qualities:
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise ValueError(f"SceneCropper.crop: JPEG encoding of a {size} crop failed")
            if buf.size <= self.max_bytes:
                self._crops.labels("made").inc()
                return buf.tobytes()
        self._crops.labels("too_large").inc()
        logger.warning('scene crop left out: over max_bytes="%d" at quality %d size="%dx%d"',
                       self.max_bytes, _LOWEST_QUALITY, *size)
        return None

    def attach(self, image: np.ndarray, faces: Sequence[DetectedFace]) -> list[DetectedFace]:
        """``faces`` (found in ``image``), each with its ``scene_jpeg``."""
        return [face.model_copy(update={"scene_jpeg": self.crop(image, face.box)}) for face in faces]

"""The detect stage: frames in, the faces of each frame (with lossless chips) out.

Stale frames are dropped unprocessed, except the backlog an outage left, within a bounded
lateness (``openlfr.pipeline.freshness``); the rest of a batch is decoded and located in one
``FaceAnalyzer.locate_many`` call, so the detector's backend sees the crops of every camera's
frames as one batch. A crowded frame's faces go out in as many messages as keep each under the
byte budget (``openlfr.pipeline.frame_parts``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

import cv2
import numpy as np

from prometheus_client import CollectorRegistry, Counter

from openlfr.inference.exceptions import InferenceError
from openlfr.messages.models import DetectedFace, FaceQualityRecord, Faces, Frame, Message
from openlfr.messages.topics import FACES, FRAMES
from openlfr.pipeline.exceptions import BackendUnavailable
from openlfr.pipeline.frame_parts import (
    BROKER_MESSAGE_MAX_BYTES,
    DEFAULT_MESSAGE_MAX_BYTES,
    EMBEDDINGS_ENVELOPE_BYTES,
    split_faces,
    worst_face_bytes,
)
from openlfr.pipeline.freshness import DEFAULT_CATCHUP_LATENESS_S, Freshness, Taken
from openlfr.pipeline.stage import BatchResult, Incoming, Outgoing, Stage
from openlfr.prom import metrics_for
from openlfr.vision import faces as vision_faces
from openlfr.vision.analyzer import FaceAnalyzer
from openlfr.vision.exceptions import ImageError
from openlfr.vision.detector import Tile
from openlfr.vision.gating import MotionGate
from openlfr.vision.pyramid_gate import PyramidGate
from openlfr.vision.images import decode_image
from openlfr.vision.scene import SceneCropper

logger = logging.getLogger(__name__)

#: Default for ``max_frame_age_s``: a frame captured longer ago than this is not worth a look.
DEFAULT_MAX_FRAME_AGE_S = 5.0

#: Most faces one ``Faces`` message may hold (the message schema's bound).
MAX_FACES_PER_FRAME = 512

M = TypeVar("M", bound=Message)
D = TypeVar("D")


def fresh_and_decoded(
    batch: Sequence[Incoming[M]],
    *,
    now: float,
    freshness: Freshness,
    decode: Callable[[M], D],
    result: BatchResult,
) -> tuple[list[Taken[M]], list[D]]:
    """Drop stale inputs (counted in ``result.dropped``: ``stale``,
    ``catchup_sampled``), decode the rest with ``decode`` and reject those it refuses with an
    ``ImageError``: the inputs kept (with how late each was taken up), and what they decoded
    to, in order."""
    kept: list[Taken[M]] = []
    decoded: list[D] = []
    for taken in freshness.select(batch, now=now, result=result):
        try:
            decoded.append(decode(taken.item.message))
        except ImageError as exc:
            result.rejected.append((taken.item, str(exc)))
            continue
        kept.append(taken)
    return kept, decoded


def check_max_age(max_age_s: float | None) -> float | None:
    """Return ``max_age_s`` if it is ``None`` or positive; raise ``ValueError`` if not."""
    if max_age_s is not None and not max_age_s > 0:
        raise ValueError(f"max_frame_age_s must be positive or None, got {max_age_s}")
    return max_age_s


def encode_chip(chip: np.ndarray, *, compression: int = 1) -> bytes:
    """PNG bytes of an RGB uint8 chip (lossless: decoding gives back the same pixels).

    Raises:
        ImageError: the chip is not HxWx3 uint8, or encoding failed.
    """
    if chip.dtype != np.uint8 or chip.ndim != 3 or chip.shape[2] != 3:
        raise ImageError(f"chip: expected HxWx3 uint8, got {chip.dtype} {chip.shape}")
    ok, buf = cv2.imencode(".png", cv2.cvtColor(chip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ImageError(f"chip: PNG encoding of a {chip.shape} chip failed")
    return buf.tobytes()


class DetectStage(Stage[Frame]):
    """``frames`` -> ``faces``: finds, aligns and assesses the faces of each fresh frame.

    Per input frame: stale -> ``dropped["stale"]`` (or ``catchup_sampled`` in
    catch-up after an outage); JPEG that does not decode, or whose size differs from the
    message's -> ``rejected``; no face -> ``dropped["no_face"]``; faces, but none at
    ``min_quality`` -> ``dropped["low_quality"]``; else ``Faces`` messages keyed by camera id:
    one, or for a crowd as many parts as keep each under ``max_message_bytes``. Face ``index``
    is the face's position among the detector's faces of the frame, so it keeps its meaning
    when the quality gate removes faces and across parts.
    """

    name = "detect"
    input_topic = FRAMES
    output_topics = (FACES,)
    input_model = Frame
    output_topic = FACES

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        *,
        detector_model: str,
        max_frame_age_s: float | None = DEFAULT_MAX_FRAME_AGE_S,
        min_quality: float = 0.0,
        png_compression: int = 1,
        gate: MotionGate | PyramidGate | None = None,
        registry: CollectorRegistry | None = None,
        catchup_lateness_s: float = DEFAULT_CATCHUP_LATENESS_S,
        catchup_keep_every: int = 1,
        max_message_bytes: int = DEFAULT_MESSAGE_MAX_BYTES,
        scene: SceneCropper | None = None,
    ) -> None:
        """Set up the stage.

        Args:
            analyzer: the face analyzer (its detector's backend does the work).
            detector_model: version of the detector model, cited in every message
                (``openlfr.models.build.model_version(model_dir, analyzer.detector.spec.name)``).
            max_frame_age_s: frames captured longer ago are dropped unprocessed; ``None``
                turns the check off (replays, batch runs of files).
            min_quality: faces whose combined quality score is below this are not sent
                (0 sends every face).
            png_compression: zlib level of the chip PNGs, 0..9 (lossless at every level).
            gate: runs the detector's fine tiles only where they are needed on each camera:
                where small faces were found (:class:`~openlfr.vision.pyramid_gate.PyramidGate`, with
                crops of its own around followed faces) or where the frame moved or had faces
                lately (:class:`~openlfr.vision.gating.MotionGate`); ``None`` runs every tile
                of every frame.
            registry: where ``openlfr_detect_crops_total`` is registered (the default registry
                if left out).
            catchup_lateness_s: after an outage, frames up to this old are processed instead of
                shed (``openlfr.pipeline.freshness``); 0 turns catch-up off.
            catchup_keep_every: in catch-up, every this-many-th frame of a camera is processed.
            max_message_bytes: budget of one ``Faces`` message, and of the ``Embeddings``
                message it becomes: a crowd's faces are split into parts under it. At least
                what one face with the embedder's chip can take, at most the broker's limit.
            scene: makes each face's scene crop (``openlfr.vision.scene``); None sends none.

        Raises:
            ValueError: an argument out of range, naming it.
        """
        if not detector_model:
            raise ValueError("detector_model must be given")
        if not 0.0 <= min_quality <= 1.0:
            raise ValueError(f"min_quality must be in [0, 1], got {min_quality}")
        if not 0 <= png_compression <= 9:
            raise ValueError(f"png_compression must be in 0..9, got {png_compression}")
        scene_bytes = scene.max_bytes if scene is not None else 0
        smallest = (worst_face_bytes(analyzer.embedder.chip_size, scene_max_bytes=scene_bytes)
                    + EMBEDDINGS_ENVELOPE_BYTES + 2048)
        if not smallest <= max_message_bytes <= BROKER_MESSAGE_MAX_BYTES:
            raise ValueError(
                f"max_message_bytes must be in {smallest}..{BROKER_MESSAGE_MAX_BYTES} (one face with a "
                f"{analyzer.embedder.chip_size}px chip, up to the broker's limit), got {max_message_bytes}"
            )
        self.analyzer = analyzer
        self.detector_model = detector_model
        self.max_frame_age_s = check_max_age(max_frame_age_s)
        self.freshness = Freshness(max_age_s=max_frame_age_s, lateness_s=catchup_lateness_s,
                                   keep_every=catchup_keep_every)
        self.min_quality = min_quality
        self.png_compression = png_compression
        self.max_message_bytes = max_message_bytes
        self.gate = gate
        self.scene = scene
        self._crops = metrics_for(_CropMetrics, registry).crops

    def ready(self) -> tuple[bool, str]:
        """The detector's models answer on its backend."""
        detector = self.analyzer.detector
        for spec in detector.specs:
            ok, why = detector.backend.ready(spec)
            if not ok:
                return ok, why
        return True, "ok"

    def handle(self, batch: Sequence[Incoming[Frame]], *, now: float) -> BatchResult:
        """Detect the faces of a batch of frames (see the class docstring for each outcome).

        Raises:
            BackendUnavailable: the detector's backend failed; retry the same batch.
        """
        result = BatchResult()
        kept, images = fresh_and_decoded(
            batch, now=now, freshness=self.freshness, decode=self._decode, result=result
        )
        if not kept:
            self.freshness.done()
            return result
        cameras = [taken.item.message.camera_id for taken in kept]
        try:
            if self.gate is None:
                located = self.analyzer.locate_many(images, keep_chips=True)
            else:
                masks, extras = self._gate_plans(cameras, images)
                located = self.analyzer.locate_many(images, keep_chips=True, tile_masks=masks, extra_tiles=extras)
        except InferenceError as exc:
            if self.gate is not None:
                # The gate has already moved on to these frames; the retry starts afresh.
                for camera_id in set(cameras):
                    self.gate.forget(camera_id)
            raise BackendUnavailable(f"detect: detector backend failed: {exc}") from exc
        if self.gate is not None:
            for camera_id, found in zip(cameras, located):
                self.gate.remember(camera_id, found.boxes)
        for taken, found, image in zip(kept, located, images):
            frame = taken.item.message
            if len(found) == 0:
                result.dropped["no_face"] = result.dropped.get("no_face", 0) + 1
                continue
            chosen = self._select(found, frame)
            if chosen.size == 0:
                result.dropped["low_quality"] = result.dropped.get("low_quality", 0) + 1
                continue
            faces = [self._face(found, int(i)) for i in chosen]
            if self.scene is not None:
                faces = self.scene.attach(image, faces)
            for message in self._messages(frame, faces, lateness_s=taken.lateness_s):
                result.outputs.append(Outgoing(topic=FACES, key=frame.camera_id, message=message))
        self.freshness.done()
        return result

    def _messages(self, frame: Frame, faces: Sequence[DetectedFace], *, lateness_s: float | None) -> list[Faces]:
        """The frame's faces in as many ``Faces`` messages as keep each under the budget."""

        def part(group: Sequence[DetectedFace], i: int, n: int) -> Faces:
            return Faces(
                camera_id=frame.camera_id,
                frame_id=frame.frame_id,
                capture_ts=frame.capture_ts,
                trace_id=frame.trace_id,
                width=frame.width,
                height=frame.height,
                faces=tuple(group),
                detector_model=self.detector_model,
                part=i,
                parts=n,
                lateness_s=lateness_s,
            )

        # Measured with the widest part numbers, so any numbering fits.
        groups = split_faces(faces, envelope=part(faces[:1], 511, 512), max_bytes=self.max_message_bytes)
        if len(groups) > 1:
            logger.debug('frame_id="%s" faces="%d" parts="%d" split to fit max_message_bytes="%d"',
                         frame.frame_id, len(faces), len(groups), self.max_message_bytes)
        return [part(group, i, len(groups)) for i, group in enumerate(groups)]

    def _gate_plans(
        self, cameras: Sequence[str], images: Sequence[np.ndarray]
    ) -> tuple[list[np.ndarray], list[tuple[Tile, ...]]]:
        """The gate's choice of detector crops for each frame, in batch (capture) order."""
        if self.gate is None:
            raise ValueError("_gate_plans needs a gate")  # a bug: handle checks first
        detector = self.analyzer.detector
        masks: list[np.ndarray] = []
        extras: list[tuple[Tile, ...]] = []
        for camera_id, image in zip(cameras, images):
            tiles = detector.tiles_for(image.shape[1], image.shape[0])
            if isinstance(self.gate, PyramidGate):
                plan = self.gate.plan(camera_id, image, tiles, input_size=detector.follow_input_size)
                masks.append(plan.mask)
                extras.append(plan.extra)
            else:
                masks.append(self.gate.select(camera_id, image, tiles))
                extras.append(())
        crops = sum(int(m.sum()) + len(e) for m, e in zip(masks, extras))
        self._crops.labels("run").inc(crops)
        self._crops.labels("ungated").inc(sum(m.size for m in masks))
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug('crops="%d" of="%d" frames="%d" gated detect batch', crops,
                         sum(m.size for m in masks), len(masks))
        return masks, extras

    @staticmethod
    def _decode(frame: Frame) -> np.ndarray:
        image = decode_image(frame.jpeg, name=f"frame {frame.frame_id}")
        height, width = image.shape[:2]
        if (width, height) != (frame.width, frame.height):
            raise ImageError(
                f"frame {frame.frame_id}: JPEG is {width}x{height}, the message says {frame.width}x{frame.height}"
            )
        return image

    def _select(self, found: vision_faces.Faces, frame: Frame) -> np.ndarray:
        """Indices of the faces to send: those at ``min_quality``, at most the schema's bound."""
        chosen = np.flatnonzero(found.quality.score >= self.min_quality)
        if chosen.size > MAX_FACES_PER_FRAME:
            logger.warning(
                'frame_id="%s" faces="%d" over the limit; sending the %d most confident',
                frame.frame_id,
                chosen.size,
                MAX_FACES_PER_FRAME,
            )
            best = np.argsort(-found.scores[chosen], kind="stable")[:MAX_FACES_PER_FRAME]
            chosen = np.sort(chosen[best])
        return chosen

    def _face(self, found: vision_faces.Faces, i: int) -> DetectedFace:
        if found.chips is None:
            raise ValueError("locate_many returned no chips")  # a bug: keep_chips=True was asked
        return DetectedFace(
            index=i,
            box=tuple(float(v) for v in found.boxes[i]),
            # Weighted NMS averages in float32 and can land a rounding step past 1.
            score=min(max(float(found.scores[i]), 0.0), 1.0),
            landmarks=tuple((float(x), float(y)) for x, y in found.landmarks[i]),
            quality=FaceQualityRecord(**found.quality.row(i)),
            chip_png=encode_chip(found.chips[i], compression=self.png_compression),
        )


class _CropMetrics:
    """``openlfr_detect_crops_total``, one per registry (``metrics_for``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.crops = Counter(
            "openlfr_detect_crops_total",
            "Detector crops on gated frames: kind=run were run, kind=ungated is what every tile would have been.",
            ["kind"],
            registry=registry,
        )

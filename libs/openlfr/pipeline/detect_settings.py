"""The detect stage's settings and its one builder, shared by the detect service and ``openlfr run``.

Both paths build the stage (its gate, frame-age limit, quality floor, message budget, catch-up,
model and onnxruntime settings) from a :class:`DetectSettings` with :func:`build_detect_stage`,
so the embedded pipeline cannot drift from the service (issue 12: ``openlfr run`` used to run
every tile of every frame while the service gated). Env: ``OPENLFR_*``.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry
from pydantic import Field, model_validator

from openlfr.config import ModelSettings
from openlfr.models.build import model_version
from openlfr.pipeline.detect import DetectStage
from openlfr.pipeline.frame_parts import BROKER_MESSAGE_MAX_BYTES, DEFAULT_MESSAGE_MAX_BYTES
from openlfr.pipeline.freshness import CatchUpSettings
from openlfr.vision.analyzer import FaceAnalyzer
from openlfr.vision.factory import build_analyzer
from openlfr.vision.scene import SceneCropSettings
from openlfr.vision.gating import DEFAULT_KEYFRAME_INTERVAL, MotionGate
from openlfr.vision.pyramid_gate import DEFAULT_STILL_KEYFRAMES, DEFAULT_STILL_REFRESH, PyramidGate

#: The detect stage's default frame-age limit (seconds); see ``DetectSettings.max_frame_age_s``.
DETECT_MAX_FRAME_AGE_S = 1.0

GatingKind = Literal["off", "motion", "pyramid"]


class DetectSettings(ModelSettings, CatchUpSettings, SceneCropSettings):
    """Model settings, catch-up after an outage, scene crops, plus the detect stage's own."""

    #: Frames that waited longer than this for detection are dropped and counted. Shorter than
    #: the later stages' limit (5 s) on purpose: an overloaded detect sheds frames while the
    #: ones it keeps are still fresh, instead of working at the edge of the freshness limit
    #: and handing embed frames that go stale there. Needs the cameras' and services' clocks
    #: in step (NTP) to well under a second. Not applied to files read by ``openlfr run``.
    max_frame_age_s: float = Field(default=DETECT_MAX_FRAME_AGE_S, gt=0, le=3600)
    #: Faces below this quality score are not published (0 publishes every face).
    min_quality: float = Field(default=0.0, ge=0, le=1)
    #: ``pyramid`` runs the detector's fine tiles only where a camera's keyframes found faces
    #: small enough to need them, plus a crop around each small face being followed;
    #: ``motion`` runs them where the frame moved or held a face lately; both run every tile
    #: on keyframes. ``off`` runs every tile of every frame.
    detect_gating: GatingKind = "pyramid"
    #: With gating on, every this-many frames of a camera run every tile.
    detect_keyframe_interval: int = Field(default=DEFAULT_KEYFRAME_INTERVAL, ge=1, le=1000)
    #: ``pyramid`` only: periodic keyframes in a row that run the fine tiles only where the
    #: frame changed since the camera's last keyframe; the next runs every tile, and a face
    #: unchanged since the keyframe before keeps no fine tiles running (0 turns both off: the
    #: keyframes of before the still-scene rules).
    detect_still_keyframes: int = Field(default=DEFAULT_STILL_KEYFRAMES, ge=0, le=100)
    #: ``pyramid`` only: a followed face whose surroundings did not change since the frame before
    #: gets its own crop every this-many frames (1: every frame).
    detect_still_refresh: int = Field(default=DEFAULT_STILL_REFRESH, ge=1, le=100)
    #: Budget of one faces message (and of the embeddings message it becomes): a crowd's faces go
    #: out in as many parts as keep each under it. Below the broker's message limit.
    faces_message_max_bytes: int = Field(default=DEFAULT_MESSAGE_MAX_BYTES, ge=131_072, le=BROKER_MESSAGE_MAX_BYTES)

    @model_validator(mode="after")
    def _faces_fit_the_broker(self) -> DetectSettings:
        limit = getattr(self, "max_message_bytes", None)  # the broker's limit, where one is set (services)
        if limit is not None and self.faces_message_max_bytes > limit - 4096:
            raise ValueError(
                f"OPENLFR_FACES_MESSAGE_MAX_BYTES={self.faces_message_max_bytes} leaves no room for the key "
                f"and headers under OPENLFR_MAX_MESSAGE_BYTES={limit}: at most {limit - 4096}"
            )
        return self

    def detect_fields(self) -> dict[str, object]:
        """The values of :class:`DetectSettings`' own fields (those of a subclass left out):
        what two paths that build the stage must agree on."""
        return {name: getattr(self, name) for name in DetectSettings.model_fields}


def make_gate(
    kind: GatingKind,
    *,
    keyframe_interval: int,
    still_keyframes: int = DEFAULT_STILL_KEYFRAMES,
    still_refresh: int = DEFAULT_STILL_REFRESH,
) -> MotionGate | PyramidGate | None:
    """The detect gate named by ``OPENLFR_DETECT_GATING`` (``off``: None, every tile)."""
    if kind == "motion":
        return MotionGate(keyframe_interval=keyframe_interval)
    if kind == "pyramid":
        return PyramidGate(keyframe_interval=keyframe_interval, still_keyframes=still_keyframes,
                           still_refresh=still_refresh)
    if kind == "off":
        return None
    raise ValueError(f"OPENLFR_DETECT_GATING={kind!r}, expected 'off', 'motion' or 'pyramid'")


def build_detect_stage(
    settings: DetectSettings,
    *,
    analyzer: FaceAnalyzer | None = None,
    live: bool = True,
    registry: CollectorRegistry | None = None,
) -> DetectStage:
    """The detect stage ``settings`` describe.

    Args:
        settings: the stage's settings (a service's settings class, or ``openlfr run``'s).
        analyzer: the face analyzer to use (``openlfr run`` shares one with enrolment); built
            from ``settings`` when left out.
        live: False for files read as fast as they can be processed (``openlfr run --source
            FILE``): their frames are never stale, so the frame-age limit is off.
        registry: where the stage's metrics are registered (the default registry if left out).
    """
    spec = settings.detector_spec()
    return DetectStage(
        analyzer if analyzer is not None else build_analyzer(settings),
        detector_model=model_version(settings.model_dir, spec.name),
        max_frame_age_s=settings.max_frame_age_s if live else None,
        min_quality=settings.min_quality,
        gate=make_gate(settings.detect_gating, keyframe_interval=settings.detect_keyframe_interval,
                       still_keyframes=settings.detect_still_keyframes, still_refresh=settings.detect_still_refresh),
        registry=registry,
        catchup_lateness_s=settings.catchup_lateness_s,
        catchup_keep_every=settings.catchup_keep_every,
        max_message_bytes=settings.faces_message_max_bytes,
        scene=settings.scene_cropper(registry=registry),
    )

"""Settings of the model stack, from the environment (prefix ``OPENLFR_``), validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr import paths

if TYPE_CHECKING:
    from openlfr.inference.session_options import OrtThreading
    from openlfr.models.specs import ModelSpec

#: Most crops per detector call with the local backend (``ModelSettings.detector_batch``).
LOCAL_DETECTOR_BATCH = 4
#: The stages that run models, each with thread settings of its own.
ModelStage = Literal["detect", "embed"]


class ModelSettings(BaseSettings):
    """Which backend serves the models and how faces are found.

    Every field can be set as ``OPENLFR_<NAME>`` (e.g. ``OPENLFR_BACKEND=triton``).
    """

    model_config = SettingsConfigDict(env_prefix="OPENLFR_", frozen=True, extra="ignore")

    backend: Literal["local", "triton"] = "local"
    model_dir: Path = Field(default_factory=paths.model_dir)
    detector: Literal["full", "short"] = "full"
    #: The detector's weights: ``fp32``, or ``int8`` (static QDQ, made by ``openlfr models build``
    #: from the fp32 file; recall on the shared set's boxes within a point of fp32, see
    #: docs/models.md). ``detector_model`` in every message names the one that ran.
    detector_precision: Literal["fp32", "int8"] = "fp32"
    #: The model that re-finds followed faces in the crops the detect gate cuts around them
    #: (the face fills about a quarter of such a crop): ``short`` (the short-range BlazeFace,
    #: 128 px, about a third of the full-range model's CPU per crop; same precision as the
    #: detector) or ``same`` (the detector's own model).
    detector_follow: Literal["short", "same"] = "short"
    #: onnxruntime intra-op threads for the local backend; 0 lets onnxruntime decide. The
    #: default of every stage whose own ``*_INTRA_OP_THREADS`` is not set.
    threads: int = Field(default=0, ge=0, le=256)
    #: onnxruntime intra-op threads of the detector's sessions (unset: ``threads``).
    detect_intra_op_threads: int | None = Field(default=None, ge=0, le=256)
    #: onnxruntime inter-op threads of the detector's sessions; 0 lets onnxruntime decide
    #: (the graph runs one operator at a time unless this is above 1).
    detect_inter_op_threads: int = Field(default=0, ge=0, le=256)
    #: onnxruntime intra-op threads of the embedder's sessions (unset: ``threads``).
    embed_intra_op_threads: int | None = Field(default=None, ge=0, le=256)
    #: onnxruntime inter-op threads of the embedder's sessions (as ``detect_inter_op_threads``).
    embed_inter_op_threads: int = Field(default=0, ge=0, le=256)
    #: Let onnxruntime's idle pool threads spin-wait for the next operator (its own default).
    #: Off: they sleep at once and leave the cores to the other stages (``openlfr run``, or
    #: services sharing a few cores). Turn on only for a service with cores of its own.
    ort_allow_spinning: bool = False
    #: Most crops per detector call. Unset: 4 with the local backend (onnxruntime's CPU time per
    #: crop rises with the batch once a batch's activations outgrow the cache: BlazeFace at 192 px
    #: costs about 4.0 CPU ms a crop in calls of 2-4 and 5.2-5.8 in calls of 32-64, one thread,
    #: docs/benchmarks.md), the model's largest batch (64) with Triton, where a call is a round trip.
    detector_max_batch: int | None = Field(default=None, ge=1, le=64)
    triton_url: str = "localhost:8001"
    triton_protocol: Literal["grpc", "http"] = "grpc"
    triton_timeout_s: float = Field(default=10.0, gt=0, le=600)
    detector_score_threshold: float = Field(default=0.5, gt=0, lt=1)
    #: Look for small faces in overlapping tiles as well as in the whole frame.
    tiling: bool = True
    #: Faces whose box is narrower than this (pixels) are dropped.
    min_face_px: float = Field(default=20.0, ge=0)
    #: The face embedder: a built-in model (``dlib_resnet_v1``, ``faceres_v1``) or the path of an
    #: embedder manifest JSON (``openlfr.models.manifest``). Detect and embed must agree.
    embedder: str = "dlib_resnet_v1"
    #: Embed each face and its mirror image and average the two (``FaceEmbedder.mirror``), as
    #: enrolment does for references: FNIR at FPIR 1e-3 on the shared set's tracks 39.5% ->
    #: 35.5%, for a second embedding per face (docs/accuracy.md, "Mirrored probes"). Detect-side
    #: analysis, the embed stage, enrolment, cohorts and evaluation all follow it; a cohort built
    #: the other way is refused (its analysis differs).
    embed_mirror: bool = True

    @field_validator("embedder")
    @classmethod
    def _embedder(cls, value: str) -> str:
        from openlfr.models.manifest import load_manifest

        load_manifest(value)  # raises with the field at fault
        return value

    def detector_spec(self) -> ModelSpec:
        """The BlazeFace model ``detector`` and ``detector_precision`` select."""
        from openlfr.models.specs import DETECTORS

        return DETECTORS[(self.detector, self.detector_precision)]

    def follow_spec(self) -> ModelSpec:
        """The BlazeFace model of the crops around followed faces (``detector_follow``)."""
        from openlfr.models.specs import DETECTORS

        return DETECTORS[("short" if self.detector_follow == "short" else self.detector, self.detector_precision)]

    def detector_batch(self) -> int:
        """Most crops per detector call (``detector_max_batch``, or the backend's default)."""
        if self.detector_max_batch is not None:
            return self.detector_max_batch
        return LOCAL_DETECTOR_BATCH if self.backend == "local" else self.detector_spec().max_batch_size

    def ort_threading(self, stage: ModelStage) -> OrtThreading:
        """The onnxruntime thread pools of ``stage``'s sessions (local backend)."""
        from openlfr.inference.session_options import OrtThreading

        if stage not in ("detect", "embed"):
            raise ValueError(f"stage={stage!r}, expected 'detect' or 'embed'")
        intra = getattr(self, f"{stage}_intra_op_threads")
        return OrtThreading(intra_op_threads=self.threads if intra is None else intra,
                            inter_op_threads=getattr(self, f"{stage}_inter_op_threads"),
                            allow_spinning=self.ort_allow_spinning)

    def embedder_manifest(self):  # noqa: ANN201 - EmbedderManifest, imported lazily
        """The embedder's manifest (``openlfr.models.manifest.EmbedderManifest``)."""
        from openlfr.models.manifest import load_manifest

        return load_manifest(self.embedder)

    def embedder_version(self) -> str:
        """The embedder's model version (``name@sha12`` of its ONNX file): what vectors cite."""
        return self.embedder_manifest().version(self.model_dir)

"""Settings of the model stack, from the environment (prefix ``OPENLFR_``), validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from openlfr import paths


class ModelSettings(BaseSettings):
    """Which backend serves the models and how faces are found.

    Every field can be set as ``OPENLFR_<NAME>`` (e.g. ``OPENLFR_BACKEND=triton``).
    """

    model_config = SettingsConfigDict(env_prefix="OPENLFR_", frozen=True, extra="ignore")

    backend: Literal["local", "triton"] = "local"
    model_dir: Path = Field(default_factory=paths.model_dir)
    detector: Literal["full", "short"] = "full"
    #: onnxruntime intra-op threads for the local backend; 0 lets onnxruntime decide.
    threads: int = Field(default=0, ge=0, le=256)
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

    @field_validator("embedder")
    @classmethod
    def _embedder(cls, value: str) -> str:
        from openlfr.models.manifest import load_manifest

        load_manifest(value)  # raises with the field at fault
        return value

    def embedder_manifest(self):  # noqa: ANN201 - EmbedderManifest, imported lazily
        """The embedder's manifest (``openlfr.models.manifest.EmbedderManifest``)."""
        from openlfr.models.manifest import load_manifest

        return load_manifest(self.embedder)

    def embedder_version(self) -> str:
        """The embedder's model version (``name@sha12`` of its ONNX file): what vectors cite."""
        return self.embedder_manifest().version(self.model_dir)

"""Settings of the model stack, from the environment (prefix ``OPENLFR_``), validated at start."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
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

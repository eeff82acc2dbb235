"""Faces of evaluation images through the live analyzer, cached by content and model version.

Every image goes through ``FaceAnalyzer.analyze_many`` (detect -> landmarks -> chip -> quality
-> embed), the path enrolment and live queries use; there is no shortcut for aligned crops:
the detector's close-up crop finds faces that fill the image (``openlfr.vision.detector``),
as ``benchmarks/verify_pairs.py`` relies on.

The cache holds, per image, every face the analyzer found (boxes, scores, landmarks, quality
and embeddings; no pixels), in ``<cache>/<analysis key>/<sha[:2]>/<sha256>.npz``. The analysis
key hashes everything that changes the analyzer's output: the detector and embedder model
versions (``openlfr.models.build.model_version``), the landmark model's SHA-256, the detector
settings and the chip geometry. A file that changed content, or a rebuilt model, is a miss.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from openlfr.vision.faces import FaceQuality, Faces

logger = logging.getLogger(__name__)

#: Bump when the cached record's layout changes.
CACHE_FORMAT = "1"

_QUALITY_FIELDS = ("face_px", "inter_eye_px", "blur", "yaw", "roll_deg", "detector_score", "score")


class ImageAnalyzer(Protocol):
    """What the evaluation needs of an analyzer: ``FaceAnalyzer.analyze_many``."""

    def analyze_many(self, images: Sequence[np.ndarray]) -> list[Faces]:
        """Faces, with embeddings, of each image."""
        ...


@dataclass(frozen=True, slots=True)
class AnalysisVersion:
    """What produced a set of faces: its short key (the cache folder) and its parts."""

    key: str
    parts: dict[str, str]

    @classmethod
    def of(cls, parts: dict[str, str]) -> AnalysisVersion:
        """The version of the given parts (their canonical JSON, hashed)."""
        canonical = json.dumps({**parts, "cache_format": CACHE_FORMAT}, sort_keys=True)
        return cls(key=hashlib.sha256(canonical.encode()).hexdigest()[:16], parts=dict(parts))


def analyzer_version(settings: object) -> AnalysisVersion:
    """The analysis version of the analyzer ``build_analyzer(settings)`` makes.

    Args:
        settings: the ``ModelSettings`` the analyzer is built from.
    """
    from openlfr.config import ModelSettings
    from openlfr.models import sources
    from openlfr.models.build import model_version, sha256_file
    from openlfr.vision.analyzer import CHIP_PADDING, PREDICTOR_BOX_FIT

    if not isinstance(settings, ModelSettings):
        raise TypeError(f"analyzer_version: expected ModelSettings, got {type(settings).__name__}")
    detector = settings.detector_spec()
    return AnalysisVersion.of(
        {
            "embedder": settings.embedder_version(),
            **({"embed_mirror": "1"} if settings.embed_mirror else {}),
            **_manifest_part(settings),
            "detector": model_version(settings.model_dir, detector.name),
            "landmarks": "shape_predictor_5@" + sha256_file(sources.dlib_model_path("shape_predictor_5"))[:12],
            "detector_score_threshold": repr(settings.detector_score_threshold),
            "tiling": repr(settings.tiling),
            "min_face_px": repr(settings.min_face_px),
            "chip_padding": repr(CHIP_PADDING),
            "predictor_box_fit": repr(PREDICTOR_BOX_FIT),
        }
    )


def _manifest_part(settings: object) -> dict[str, str]:
    """An operator manifest's own hash (its alignment or scaling may change while the ONNX file
    does not); none for the built-in models, whose version says it all."""
    from openlfr.models.manifest import BUILTIN

    manifest = settings.embedder_manifest()  # type: ignore[attr-defined]
    if manifest.name in BUILTIN:
        return {}
    return {"embedder_manifest": sha256_bytes(manifest.model_dump_json().encode())[:12]}


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def faces_to_npz(faces: Faces) -> bytes:
    """Serialise faces (with embeddings, without chips) to npz bytes."""
    if faces.embeddings is None:
        raise ValueError("faces_to_npz: faces have no embeddings")
    arrays = {
        "boxes": faces.boxes,
        "scores": faces.scores,
        "landmarks": faces.landmarks,
        "embeddings": faces.embeddings,
        **{f"quality_{name}": getattr(faces.quality, name) for name in _QUALITY_FIELDS},
    }
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def faces_from_npz(data: bytes) -> Faces:
    """Faces from ``faces_to_npz`` bytes.

    Raises:
        ValueError: the data is not such a record (shapes are checked by ``Faces``).
    """
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
        quality = FaceQuality(**{name: arrays[f"quality_{name}"] for name in _QUALITY_FIELDS})
        embeddings = arrays["embeddings"]
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings: expected a 2-D array, got shape {embeddings.shape}")
        return Faces(
            boxes=arrays["boxes"], scores=arrays["scores"], landmarks=arrays["landmarks"],
            quality=quality, embeddings=embeddings,
        )
    except (OSError, KeyError, EOFError, ValueError) as exc:
        raise ValueError(f"not a cached faces record ({exc})") from exc


class EmbeddingCache:
    """Analysed faces keyed by image SHA-256, one folder per analysis version.

    Args:
        root: the cache folder (created on first write).
        version: the analysis version the entries belong to.
    """

    def __init__(self, root: Path, version: AnalysisVersion) -> None:
        self.root = Path(root)
        self.version = version
        self.folder = self.root / version.key
        self.hits = 0
        self.misses = 0

    def _path(self, sha256: str) -> Path:
        return self.folder / sha256[:2] / f"{sha256}.npz"

    def get(self, sha256: str) -> Faces | None:
        """The cached faces of an image, or None (counted as a hit or a miss)."""
        path = self._path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            self.misses += 1
            return None
        try:
            faces = faces_from_npz(data)
        except ValueError as exc:
            logger.warning('unusable cache entry path="%s" error="%s"; recomputing', path, exc)
            self.misses += 1
            return None
        self.hits += 1
        return faces

    def put(self, sha256: str, faces: Faces) -> None:
        """Store the faces of an image (atomically: a crash leaves no half-written entry)."""
        path = self._path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not (self.folder / "version.json").is_file():
            (self.folder / "version.json").write_text(json.dumps(self.version.parts, indent=2, sort_keys=True) + "\n")
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(faces_to_npz(faces.without_chips()))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@dataclass(frozen=True, slots=True)
class Analysed:
    """One image's outcome: its faces, or why it has none to offer.

    Attributes:
        sha256: hex SHA-256 of the file ("" when it could not be read).
        faces: every face the analyzer found (empty when none), or None when the file could
            not be read or decoded.
        error: why the file could not be read or decoded ("" otherwise).
        cached: the faces came from the cache.
    """

    sha256: str
    faces: Faces | None
    error: str = ""
    cached: bool = False


def analyse_files(
    paths: Sequence[Path],
    *,
    analyzer: ImageAnalyzer | None,
    cache: EmbeddingCache | None,
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
    max_pixels: int | None = None,
) -> list[Analysed]:
    """Read, decode and analyse files (cached), in order; never raises for a bad file.

    Args:
        paths: the image files.
        analyzer: the live analyzer; may be None only when every image is in the cache.
        cache: where analysed faces are looked up and stored; None to always analyse.
        batch_size: images per ``analyze_many`` call (bounds memory).
        progress: called with the number of files finished since the last call.
        max_pixels: decoding limit (``openlfr.vision.images.DEFAULT_MAX_PIXELS`` when None).

    Raises:
        ValueError: an image is not in the cache and there is no analyzer.
    """
    from openlfr.vision.exceptions import ImageError
    from openlfr.vision.images import DEFAULT_MAX_PIXELS, decode_image

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    results: list[Analysed | None] = [None] * len(paths)
    pending: list[tuple[int, str, np.ndarray]] = []

    def flush() -> None:
        if not pending:
            return
        if analyzer is None:
            raise ValueError(f"{len(pending)} image(s) not in the cache and no analyzer given")
        found = analyzer.analyze_many([image for _, _, image in pending])
        for (index, sha, _), faces in zip(pending, found, strict=True):
            faces = faces.without_chips()
            if faces.embeddings is None:
                raise RuntimeError("the analyzer returned faces without embeddings")
            if cache is not None:
                cache.put(sha, faces)
            results[index] = Analysed(sha256=sha, faces=faces)
        if progress is not None:
            progress(len(pending))
        pending.clear()

    for index, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            results[index] = Analysed(sha256="", faces=None, error=f"cannot read file ({exc.strerror or exc})")
            if progress is not None:
                progress(1)
            continue
        sha = sha256_bytes(data)
        cached = cache.get(sha) if cache is not None else None
        if cached is not None:
            results[index] = Analysed(sha256=sha, faces=cached, cached=True)
            if progress is not None:
                progress(1)
            continue
        try:
            image = decode_image(data, name=str(path), max_pixels=max_pixels or DEFAULT_MAX_PIXELS)
        except ImageError as exc:
            results[index] = Analysed(sha256=sha, faces=None, error=str(exc))
            if progress is not None:
                progress(1)
            continue
        pending.append((index, sha, image))
        if len(pending) >= batch_size:
            flush()
    flush()
    out = [r for r in results if r is not None]
    if len(out) != len(paths):
        raise RuntimeError("analyse_files: a file has no outcome")
    return out

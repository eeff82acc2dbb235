"""``openlfr models build``: every model file, built from the installed packages, idempotently.

A manifest beside the files records each source's and output's SHA-256 and the converter
version, so a rebuild happens only when the source or the converter changed, and the model
version that alerts and reports cite is the hash of the file actually served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from openlfr.models import sources
from openlfr.models.specs import BLAZEFACE_FULL, BLAZEFACE_SHORT, EMBEDDER, ModelSpec

logger = logging.getLogger(__name__)

#: Bump when a converter's output changes for the same source file.
CONVERTER_VERSION = "1"
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class BuildResult:
    """What one model's build did."""

    name: str
    path: Path
    sha256: str
    built: bool
    seconds: float


def _targets() -> list[tuple[ModelSpec, Path, Callable[[Path, Path], None]]]:
    from openlfr.models.blazeface import build_blazeface_onnx
    from openlfr.models.dlib_resnet import build_embedder_onnx

    return [
        (EMBEDDER, sources.dlib_model_path("resnet"), build_embedder_onnx),
        (
            BLAZEFACE_FULL,
            sources.blazeface_tflite_path("full"),
            lambda src, out: build_blazeface_onnx(src, out, BLAZEFACE_FULL),
        ),
        (
            BLAZEFACE_SHORT,
            sources.blazeface_tflite_path("short"),
            lambda src, out: build_blazeface_onnx(src, out, BLAZEFACE_SHORT),
        ),
    ]


def read_manifest(model_dir: Path) -> dict[str, dict[str, str]]:
    """The manifest of a model directory ({} when there is none)."""
    path = model_dir / MANIFEST
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def model_version(model_dir: Path, name: str) -> str:
    """Short version id of a built model: its name and the first 12 hex digits of its SHA-256."""
    entry = read_manifest(model_dir).get(name)
    return f"{name}@{entry['sha256'][:12]}" if entry else f"{name}@unbuilt"


def build_all(model_dir: Path, *, force: bool = False) -> list[BuildResult]:
    """Build every ONNX model into ``model_dir``; skip those already built from the same source."""
    model_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(model_dir)
    results = []
    for spec, source, convert in _targets():
        out = model_dir / spec.onnx_file
        source_sha = sha256_file(source)
        entry = manifest.get(spec.name, {})
        fresh = (
            out.is_file()
            and entry.get("source_sha256") == source_sha
            and entry.get("converter") == CONVERTER_VERSION
            and entry.get("sha256") == sha256_file(out)
        )
        start = time.perf_counter()
        if force or not fresh:
            logger.info('building model="%s" source="%s"', spec.name, source)
            convert(source, out)
        elapsed = time.perf_counter() - start
        manifest[spec.name] = {
            "file": spec.onnx_file,
            "source": str(source),
            "source_sha256": source_sha,
            "converter": CONVERTER_VERSION,
            "sha256": sha256_file(out),
        }
        results.append(BuildResult(spec.name, out, manifest[spec.name]["sha256"], force or not fresh, elapsed))
    tmp = model_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(model_dir / MANIFEST)
    return results

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

from openlfr.inference.exceptions import ModelNotBuiltError
from openlfr.models import sources
from openlfr.models.exceptions import ModelError
from openlfr.models.specs import BLAZEFACE_FULL, BLAZEFACE_SHORT, EMBEDDER, FACERES, ModelSpec, int8_of

logger = logging.getLogger(__name__)

#: Bump when a converter's output changes for the same source file.
CONVERTER_VERSION = "1"
#: The same for the TFJS converter of the optional models (bumped without rebuilding the others).
TFJS_CONVERTER_VERSION = "tfjs-1"
#: The same for the int8 quantisation (openlfr.models.quantize).
INT8_CONVERTER_VERSION = "int8-1"
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


def source_sha256(source: Path, extra: tuple[Path, ...] = ()) -> str:
    """The source's SHA-256; with files beside it (weight shards), the SHA-256 of all their hashes."""
    if not extra:
        return sha256_file(source)
    digest = hashlib.sha256()
    for path in (source, *extra):
        digest.update(f"{path.name}={sha256_file(path)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class _Target:
    spec: ModelSpec
    source: Path
    convert: Callable[[Path, Path], None]
    extra_sources: tuple[Path, ...] = ()
    converter: str = CONVERTER_VERSION


def _optional_targets() -> list[_Target]:
    """Models built only where their source was fetched (opt-in; a log line says when not)."""
    from openlfr.models.human_models import build_faceres_onnx

    try:
        graph = sources.human_models_path("models/faceres.json")
        weights = sources.human_models_path("models/faceres.bin")
    except ModelNotBuiltError as exc:
        logger.info('skipping optional model="%s" reason="%s"', FACERES.name, exc)
        return []
    return [_Target(FACERES, graph, build_faceres_onnx, (weights,), TFJS_CONVERTER_VERSION)]


def _targets() -> list[_Target]:
    from openlfr.models.blazeface import build_blazeface_onnx
    from openlfr.models.dlib_resnet import build_embedder_onnx

    required: list[tuple[ModelSpec, Path, Callable[[Path, Path], None]]] = [
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
    return [_Target(spec, src, convert) for spec, src, convert in required] + _int8_targets() + _optional_targets()


def _int8_targets() -> list[_Target]:
    """The int8 versions of the detectors and the embedder, from the fp32 files built before them.

    Their source is the fp32 file plus the calibration images; without the shared face set
    they are left out with a log line (the fp32 models serve as before).
    """
    from openlfr.models import quantize

    try:
        images = quantize.calibration_images()
    except ModelError as exc:
        logger.info('skipping int8 models reason="%s"', exc)
        return []
    recorded: dict[Path, dict[str, object]] = {}

    def convert(fp32: Path, out: Path, spec: ModelSpec) -> None:
        model_dir = fp32.parent
        if model_dir not in recorded:  # one pass of the fp32 analyzer serves all three models
            recorded[model_dir] = quantize.record_calibration_inputs(model_dir, images)
        quantize.quantize_onnx(fp32, out, spec=int8_of(spec), rows=recorded[model_dir][spec.name])

    return [
        _Target(int8_of(spec), Path(spec.onnx_file), lambda src, out, spec=spec: convert(src, out, spec),
                tuple(images), INT8_CONVERTER_VERSION)
        for spec in (BLAZEFACE_FULL, BLAZEFACE_SHORT, EMBEDDER)
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
    """Build every ONNX model into ``model_dir``; skip those already built from the same source.

    Optional models (the faceres second embedder) are built when their source is there
    and left out, with a log line, when it is not.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(model_dir)
    results = []
    for target in _targets():
        spec = target.spec
        source = target.source if target.source.is_absolute() else model_dir / target.source
        out = model_dir / spec.onnx_file
        source_sha = source_sha256(source, target.extra_sources)
        entry = manifest.get(spec.name, {})
        fresh = (
            out.is_file()
            and entry.get("source_sha256") == source_sha
            and entry.get("converter") == target.converter
            and entry.get("sha256") == sha256_file(out)
        )
        start = time.perf_counter()
        if force or not fresh:
            logger.info('building model="%s" source="%s"', spec.name, source)
            target.convert(source, out)
        elapsed = time.perf_counter() - start
        manifest[spec.name] = {
            "file": spec.onnx_file,
            "source": str(source),
            "source_sha256": source_sha,
            "converter": target.converter,
            "sha256": sha256_file(out),
        }
        results.append(BuildResult(spec.name, out, manifest[spec.name]["sha256"], force or not fresh, elapsed))
    tmp = model_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    tmp.replace(model_dir / MANIFEST)
    return results

